package delivery

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/registry"
)

// Destination is the whole surface an HTTP sink implements: its wire format. Batching,
// rate limits, Retry-After, retries, splitting, dead-lettering and metrics are the
// core's.
type Destination interface {
	// Limits bounds one request.
	Limits() Limits
	// Item encodes one impression as the destination's event or record (JSON).
	Item(imp *impression.Impression) ([]byte, error)
	// Frame is what a request body puts around its items, which are joined by commas:
	// "[" and "]" for a JSON array.
	Frame() (open, close []byte)
	// Request builds the request for a batch from its body (the items in their frame,
	// uncompressed). now is this attempt's time (signatures carry it).
	Request(b *Batch, body []byte, now time.Time) (*http.Request, error)
	// Classify decides what a response means; most destinations return
	// DefaultClassify(r) and refine a few answers.
	Classify(r *Response, b *Batch) Outcome
}

// Limits bound one request of a destination.
type Limits struct {
	MaxEvents int // items per request
	MaxBytes  int // body bytes, before compression
	MaxItem   int // bytes of one item; larger ones are dead-lettered
	// Envelope is the bytes a request adds around its items, beyond one comma each;
	// the core sets it from Frame.
	Envelope int
}

// Response is what came back for a request: a status, headers and body, or a
// transport error (timeout, reset, refused) and no status.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	Err    error
}

// Kind of an outcome.
type Kind int

// What a response means for its batch.
const (
	Delivered Kind = iota // accepted
	Retry                 // try again after a backoff: 5xx, 408, timeouts, resets
	Throttle              // 429, 502/503/504: back off and lower the rate
	Split                 // 413: send the halves
	Partial               // some items held back (Hold) and/or rejected (Rejected); the rest delivered or resent
	Reject                // dead-letter the batch: other 4xx
	Gone                  // the endpoint is gone (webhook 410): dead-letter, stop sending, alert
)

func (k Kind) String() string {
	return [...]string{"delivered", "retry", "throttle", "split", "partial", "reject", "gone"}[k]
}

// Outcome is a classified response.
type Outcome struct {
	Kind   Kind
	Status int    // HTTP status, 0 for transport errors
	Reason string // why, for dead-letter records and logs; no secrets, no bodies of requests
	// Partial: indexes of items to hold back for at least HoldFor (Amplitude's
	// throttled_events), and of items the destination refused (dead-lettered).
	Held     []int
	HoldFor  time.Duration
	Rejected []int
	// Resend: for Partial, whether the items neither held nor rejected must be sent
	// again (a 400 that accepted nothing) rather than counted as delivered.
	Resend bool
	// HeldKeys: for Partial, the impression keys (users or devices) the destination
	// throttles, each with the least time to hold them: their held items wait that
	// long, and so do the key's new impressions, which then go at most KeyRate a
	// second, while other keys' impressions flow at the destination's rate.
	HeldKeys map[string]time.Duration
	KeyRate  float64

	heldAll bool // a Partial that held back every item of its request (settle)
}

// settle completes what the destination said of b with what the core derives.
func settle(o Outcome, b *Batch) Outcome {
	o.heldAll = o.Kind == Partial && len(o.Held) > 0 && len(o.Held) >= len(b.Imps)
	return o
}

// DefaultClassify is the meaning of a response for most destinations (CONTRACT §5).
func DefaultClassify(r *Response) Outcome {
	s := r.Status
	switch {
	case errors.Is(r.Err, ErrPrivateAddress):
		return Outcome{Kind: Reject, Reason: r.Err.Error()}
	case r.Err != nil:
		return Outcome{Kind: Retry, Reason: r.Err.Error()}
	case s >= 200 && s < 300:
		return Outcome{Kind: Delivered, Status: s}
	case s == http.StatusTooManyRequests || pushBack(s):
		return Outcome{Kind: Throttle, Status: s, Reason: statusReason(r)}
	case s == http.StatusRequestEntityTooLarge:
		return Outcome{Kind: Split, Status: s, Reason: statusReason(r)}
	case s == http.StatusRequestTimeout || s >= 500:
		return Outcome{Kind: Retry, Status: s, Reason: statusReason(r)}
	}
	return Outcome{Kind: Reject, Status: s, Reason: statusReason(r)}
}

// pushBack reports whether status is a server's push-back (CONTRACT §5): 503, and the
// 502 and 504 of the proxies and gateways in front of an overloaded server. They
// lower the rate as a 429 does; without a Retry-After they count as failures too
// (limiter.circuit).
func pushBack(status int) bool {
	return status == http.StatusServiceUnavailable || status == http.StatusBadGateway || status == http.StatusGatewayTimeout
}

// statusReason describes an answer by its status and the start of its body, which
// destinations fill with the explanation.
func statusReason(r *Response) string {
	body := strings.Join(strings.Fields(string(r.Body)), " ")
	if len(body) > 300 {
		body = body[:300] + "…"
	}
	if body == "" {
		return fmt.Sprintf("HTTP %d %s", r.Status, http.StatusText(r.Status))
	}
	return fmt.Sprintf("HTTP %d %s: %s", r.Status, http.StatusText(r.Status), body)
}

// RetryAfter reads a Retry-After header (RFC 9110 §10.2.3): delay-seconds or an
// HTTP-date. It returns 0 when there is none or it cannot be read.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, maxRetryAfter)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter*time.Second)
	}
	return 0
}

// maxRetryAfter caps a pause a destination may ask for, in seconds (a day), so a
// garbled header cannot park deliveries for years.
const maxRetryAfter = 24 * 3600

// Factory builds a destination from its configuration section, as JSON.
type Factory func(settings json.RawMessage) (Destination, error)

// FromConfig is the usual Factory: it decodes the section into C and builds the
// destination from it.
func FromConfig[C any](build func(C) (Destination, error)) Factory {
	return func(settings json.RawMessage) (Destination, error) {
		var cfg C
		if err := json.Unmarshal(settings, &cfg); err != nil {
			return nil, fmt.Errorf("settings: %w", err)
		}
		return build(cfg)
	}
}

var kinds = registry.New[Factory]("destination")

// Register makes a destination kind available to Write; sinks call it from init.
func Register(kind string, f Factory) { kinds.Register(kind, f) }

// Kinds lists the registered destination kinds.
func Kinds() []string { return kinds.Kinds() }

// NewDestination builds a registered destination from its settings.
func NewDestination(kind string, settings json.RawMessage) (Destination, error) {
	f, err := kinds.Get(kind)
	if err != nil {
		return nil, fmt.Errorf("delivery: %w", err)
	}
	return f(settings)
}
