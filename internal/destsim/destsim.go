// Package destsim simulates the HTTP destinations outflow delivers impressions to
// (Amplitude's Batch API, Segment's batch endpoint and Standard Webhooks receivers) on
// loopback, with their wire formats, authentication, rate limits and injectable faults,
// and counts what arrives by impression id so tests can check delivery: nothing lost,
// how many duplicates, how fast, and whether Retry-After was honoured.
package destsim

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Kind is the kind of destination a Server simulates.
type Kind string

// The destination kinds.
const (
	Amplitude Kind = "amplitude" // POST /batch
	Segment   Kind = "segment"   // POST /v1/batch
	Webhook   Kind = "webhook"   // POST to any path
)

// Limits of the simulated destinations.
const (
	SegmentMaxEvents     = 2500      // events per batch; the rest are dropped silently
	SegmentMaxBatchBytes = 500 << 10 // request body bytes as sent (gzipped or not); more is a 400
	SegmentMaxEventBytes = 32 << 10  // bytes of one event's JSON; more is a 400
	// WebhookTolerance is how far a webhook-timestamp may be from the receiver's clock.
	WebhookTolerance = 5 * time.Minute
	// AmplitudeEPSThreshold is the eps_threshold reported in partial 429s.
	AmplitudeEPSThreshold = 30
	// MaxRequestBytes bounds any request body, before and after gzip decoding (413).
	MaxRequestBytes = 64 << 20
	// MaxAcceptedAt bounds Status.AcceptedAt: it keeps the latest receive times.
	MaxAcceptedAt = 100_000
)

// Options configure a Server. Rates are probabilities in [0, 1], decided per request
// with a math/rand/v2 generator seeded by Seed.
type Options struct {
	Kind Kind

	// APIKey, if non-empty, is the api_key every Amplitude body must carry.
	APIKey string
	// WriteKey, if non-empty, is the basic-auth user Segment requests must carry (with
	// an empty password).
	WriteKey string
	// Secret, if non-empty, is the webhook's "whsec_" + base64 signing key: webhook
	// requests must then carry a valid Standard Webhooks signature.
	Secret string
	// Tenant is the tenant of webhook records (which carry none), for their ids.
	Tenant string

	// RateLimit is the token-bucket rate of accepted requests per second; 0 is
	// unlimited. Burst is the bucket size, default max(1, ceil(RateLimit)).
	RateLimit float64
	Burst     int
	// RetryAfterDate sends every Retry-After as an HTTP date, not delay-seconds.
	RetryAfterDate bool
	// RetryAfterGrace is how long after announcing a Retry-After a request may still
	// start without counting in IgnoredRetryAfter, one request per announcement: a
	// client with several requests in
	// flight may send one before the answer reaches it (0: none).
	RetryAfterGrace time.Duration

	// FailRate answers a random one of 500, 502 and 504 (no Retry-After).
	FailRate float64
	// Unavailable answers 503 with Retry-After: 1 (or RetryAfter, or none if
	// NoRetryAfter).
	Unavailable float64
	// ResetRate closes the connection after reading the body, with no response.
	ResetRate float64
	// SlowRate sleeps SlowDelay before handling the request further.
	SlowRate  float64
	SlowDelay time.Duration
	// Status, if non-zero, answers every request with this status and a JSON error
	// body (a 429 or 503 with Retry-After: 1, or RetryAfter, or none if
	// NoRetryAfter); nothing is accepted. The answer is counted by its status: 429
	// Throttled, 503 Unavailable, other 5xx Failed, the rest (even a 2xx) Rejected.
	Status int
	// RetryAfter, if > 0, is the Retry-After of the 429s and 503s that Status and
	// Unavailable give, instead of 1 s: with Status 429 and Set, a destination that
	// pauses its clients for a minute, then recovers.
	RetryAfter time.Duration
	// NoRetryAfter sends the 429s and 503s that Status and Unavailable give with no
	// Retry-After at all (RetryAfter is then ignored): a destination that gives its
	// clients no hint when to come back.
	NoRetryAfter bool
	// MaxBodyBytes, if > 0, answers 413 to bodies larger than this after gzip decoding.
	MaxBodyBytes int
	// ThrottleEvents (Amplitude only) is the share of a request's events rejected with
	// a 429 listing them in throttled_events; the request ingests nothing, so the other
	// events must be sent again. The 429
	// carries Retry-After: 1 only if RetryAfterOnPartial.
	ThrottleEvents      float64
	RetryAfterOnPartial bool

	// NoBodies keeps no Event.Body, for long runs with many events.
	NoBodies bool

	Seed uint64
}

// Event is what a Server accepted for one impression id.
type Event struct {
	Count int       // accepted copies
	First time.Time // receive time of the first accepted copy
	// Body is the event (Amplitude), message (Segment) or record (webhook) JSON of the
	// first accepted copy, as received.
	Body json.RawMessage
}

// Status counts what a Server received. Every POST is counted in Requests and in
// exactly one of Accepted, Throttled, Unavailable, Failed, Resets and Rejected.
type Status struct {
	Kind Kind
	// Requests counts POSTs (GET /status is not counted). Accepted counts 2xx answers;
	// Throttled 429s (also Amplitude's partial 429s, which ingest nothing);
	// Unavailable 503s; Failed 500, 502 and 504s; Resets connections closed without an
	// answer; Rejected every other answer (400, 401, 404, 413 and Options.Status).
	Requests, Accepted, Throttled, Unavailable, Failed, Resets, Rejected int
	// UniqueEvents counts accepted impression ids; Duplicates the accepted copies
	// beyond the first of each.
	UniqueEvents, Duplicates int
	// DuplicateBatches counts accepted webhook requests whose webhook-id had been
	// accepted before.
	DuplicateBatches int
	// IgnoredRetryAfter counts requests that arrived before a Retry-After this server
	// announced had passed (not counting one request per announcement that started
	// within Options.RetryAfterGrace of it: its client could not know it yet).
	IgnoredRetryAfter int
	// DroppedOverLimit counts Segment events beyond SegmentMaxEvents in one request,
	// answered 200 but not accepted (as Segment does).
	DroppedOverLimit int
	// FirstAccepted and LastAccepted are receive times of accepted requests.
	FirstAccepted time.Time `json:",omitzero"`
	LastAccepted  time.Time `json:",omitzero"`
	// AcceptedAt is the receive time of each accepted request (the latest
	// MaxAcceptedAt), oldest first.
	AcceptedAt []time.Time `json:"-"`
}

// Server is one simulated destination on a loopback port.
type Server struct {
	kind  Kind
	ln    net.Listener
	srv   *http.Server
	url   string
	done  chan struct{}
	close sync.Once

	mu         sync.Mutex
	opts       Options
	key        []byte // webhook signing key
	limiter    *rate.Limiter
	faults     *rand.Rand
	throttle   *rand.Rand
	st         Status
	acceptedAt []time.Time // ring of MaxAcceptedAt
	atNext     int
	events     map[string]*Event
	hookIDs    map[string]struct{}
	// Retry-After announcements: the latest time announced, and when the run of
	// overlapping announcements that ends then began.
	retryFrom, retryUntil time.Time
	graceLeft             int // requests the grace may still forgive: one per announcement
}

// Start serves a destination on a free 127.0.0.1 port.
func Start(o Options) (*Server, error) { return StartAt("127.0.0.1:0", o) }

// StartAt serves a destination on addr.
func StartAt(addr string, o Options) (*Server, error) {
	key, err := check(o)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		kind:    o.Kind,
		ln:      ln,
		url:     "http://" + ln.Addr().String(),
		done:    make(chan struct{}),
		events:  map[string]*Event{},
		hookIDs: map[string]struct{}{},
	}
	s.st.Kind = o.Kind
	s.apply(o, key, true)
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// check validates options and decodes the webhook signing key.
func check(o Options) ([]byte, error) {
	switch o.Kind {
	case Amplitude, Segment, Webhook:
	default:
		return nil, fmt.Errorf("destsim: unknown kind %q (amplitude, segment or webhook)", o.Kind)
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"FailRate", o.FailRate}, {"Unavailable", o.Unavailable}, {"ResetRate", o.ResetRate},
		{"SlowRate", o.SlowRate}, {"ThrottleEvents", o.ThrottleEvents}} {
		if !(r.v >= 0 && r.v <= 1) {
			return nil, fmt.Errorf("destsim: %s must be in [0, 1]; got %v", r.name, r.v)
		}
	}
	if !(o.RateLimit >= 0) || math.IsInf(o.RateLimit, 0) {
		return nil, fmt.Errorf("destsim: RateLimit must be >= 0; got %v", o.RateLimit)
	}
	if o.Burst < 0 || o.SlowDelay < 0 || o.MaxBodyBytes < 0 || o.RetryAfter < 0 {
		return nil, errors.New("destsim: Burst, SlowDelay, MaxBodyBytes and RetryAfter must be >= 0")
	}
	if o.Status != 0 && (o.Status < 200 || o.Status > 599) {
		return nil, fmt.Errorf("destsim: Status %d is not a final HTTP status (200-599)", o.Status)
	}
	if o.Secret == "" {
		return nil, nil
	}
	b64, ok := strings.CutPrefix(o.Secret, "whsec_")
	key, err := base64.StdEncoding.DecodeString(b64)
	if !ok || err != nil || len(key) == 0 {
		return nil, errors.New(`destsim: Secret must be "whsec_" followed by base64`)
	}
	return key, nil
}

// Set changes the server's behaviour; the counts, the events and the token bucket's
// current tokens are kept. The kind cannot change (o.Kind is ignored). It panics if
// the options are invalid (see Start).
func (s *Server) Set(o Options) {
	o.Kind = s.kind
	key, err := check(o)
	if err != nil {
		panic(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apply(o, key, false)
}

// apply installs options; s.mu is held (or s is not yet shared).
func (s *Server) apply(o Options, key []byte, first bool) {
	if first || o.Seed != s.opts.Seed {
		s.faults = rand.New(rand.NewPCG(o.Seed, 0x9e3779b97f4a7c15))
		s.throttle = rand.New(rand.NewPCG(o.Seed, 0x5851f42d4c957f2d))
	}
	burst := o.Burst
	if burst == 0 {
		burst = max(1, int(math.Ceil(o.RateLimit)))
	}
	switch {
	case o.RateLimit == 0:
		s.limiter = nil
	case s.limiter == nil:
		s.limiter = rate.NewLimiter(rate.Limit(o.RateLimit), burst)
	default:
		now := time.Now()
		s.limiter.SetLimitAt(now, rate.Limit(o.RateLimit))
		s.limiter.SetBurstAt(now, burst)
	}
	s.opts, s.key = o, key
}

// URL is the server's base URL, http://127.0.0.1:PORT.
func (s *Server) URL() string { return s.url }

// Status returns the counts so far.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status(true)
}

// status snapshots the counts; s.mu is held.
func (s *Server) status(withTimes bool) Status {
	st := s.st
	st.UniqueEvents = len(s.events)
	st.AcceptedAt = nil
	if withTimes {
		st.AcceptedAt = make([]time.Time, 0, len(s.acceptedAt))
		if len(s.acceptedAt) == MaxAcceptedAt {
			st.AcceptedAt = append(st.AcceptedAt, s.acceptedAt[s.atNext:]...)
			st.AcceptedAt = append(st.AcceptedAt, s.acceptedAt[:s.atNext]...)
		} else {
			st.AcceptedAt = append(st.AcceptedAt, s.acceptedAt...)
		}
	}
	return st
}

// Events returns the accepted events by impression id (the uuid's string form).
func (s *Server) Events() map[string]Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]Event, len(s.events))
	for id, e := range s.events {
		m[id] = *e
	}
	return m
}

// Close stops the server and closes its connections.
func (s *Server) Close() error {
	s.close.Do(func() { close(s.done) })
	return s.srv.Close()
}

// outcome is the Status counter an answer falls in.
type outcome int

const (
	accepted outcome = iota
	throttled
	unavailable
	failed
	reset
	rejected
)

// outcomeOf classifies an answer by its status.
func outcomeOf(code int) outcome {
	switch {
	case code == http.StatusTooManyRequests:
		return throttled
	case code == http.StatusServiceUnavailable:
		return unavailable
	case code >= 500:
		return failed
	case code >= 200 && code < 300:
		return accepted
	}
	return rejected
}

// reply is an answer to send.
type reply struct {
	code       int
	retryAfter time.Duration // > 0: send Retry-After and remember it
	body       any           // marshalled as JSON; nil is an empty body
	// notAccepted counts a 2xx (from Options.Status) as Rejected: nothing was taken.
	notAccepted bool
}

// faults are one request's random draws, always all of them so that a seed gives the
// same sequence whatever rates are set.
type faults struct {
	reset, slow, fail, unavailable float64
	failCode                       int
}

var failCodes = [...]int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusGatewayTimeout}

// ServeHTTP handles GET /status and the destination's POSTs.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/status" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		s.mu.Lock()
		st := s.status(false)
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, st)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "only POST is served (and GET /status)"})
		return
	}
	start := time.Now() // the headers are in
	raw, readErr := io.ReadAll(io.LimitReader(r.Body, MaxRequestBytes+1))
	received := time.Now()

	s.mu.Lock()
	o, key := s.opts, s.key
	s.st.Requests++
	// Requests already under way when the Retry-After was sent could not know it, nor
	// could those sent while the answer was on its way to the client.
	if start.Before(s.retryUntil) {
		if start.After(s.retryFrom.Add(o.RetryAfterGrace)) || s.graceLeft == 0 {
			s.st.IgnoredRetryAfter++
		} else {
			s.graceLeft--
		}
	}
	f := faults{reset: s.faults.Float64(), slow: s.faults.Float64(), fail: s.faults.Float64(),
		unavailable: s.faults.Float64(), failCode: failCodes[s.faults.IntN(len(failCodes))]}
	s.mu.Unlock()

	rep := s.handle(w, r, o, key, f, raw, readErr, received)
	if rep == nil {
		return // the connection was reset
	}
	var retryAfter string
	s.mu.Lock()
	oc := outcomeOf(rep.code)
	if oc == accepted && rep.notAccepted {
		oc = rejected
	}
	s.count(oc)
	if rep.retryAfter > 0 {
		retryAfter = s.announce(time.Now(), rep.retryAfter, o.RetryAfterDate)
	}
	s.mu.Unlock()
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	if rep.body == nil {
		w.WriteHeader(rep.code)
		return
	}
	writeJSON(w, rep.code, rep.body)
}

// count adds an answered request to its counter; s.mu is held.
func (s *Server) count(o outcome) {
	switch o {
	case accepted:
		s.st.Accepted++
	case throttled:
		s.st.Throttled++
	case unavailable:
		s.st.Unavailable++
	case failed:
		s.st.Failed++
	case reset:
		s.st.Resets++
	default:
		s.st.Rejected++
	}
}

// announce formats a Retry-After of at least d (whole seconds, at least one) and
// remembers until when clients should wait; s.mu is held.
func (s *Server) announce(now time.Time, d time.Duration, date bool) string {
	secs := max(1, int64(math.Ceil(d.Seconds())))
	until := now.Add(time.Duration(secs) * time.Second)
	v := strconv.FormatInt(secs, 10)
	if date {
		// An HTTP date has whole seconds: round up so waiting until it is enough.
		if t := until.Truncate(time.Second); t.Before(until) {
			until = t.Add(time.Second)
		}
		v = until.UTC().Format(http.TimeFormat)
	}
	if !now.Before(s.retryUntil) {
		s.retryFrom, s.graceLeft = now, 0
	}
	s.graceLeft++
	if until.After(s.retryUntil) {
		s.retryUntil = until
	}
	return v
}

// handle decides the answer to a POST, in the documented order; nil means the
// connection was closed without one.
func (s *Server) handle(w http.ResponseWriter, r *http.Request, o Options, key []byte, f faults, raw []byte, readErr error, received time.Time) *reply {
	if readErr != nil {
		return s.errorReply(http.StatusBadRequest, "reading the body: "+readErr.Error(), nil)
	}
	if len(raw) > MaxRequestBytes {
		return s.errorReply(http.StatusRequestEntityTooLarge, fmt.Sprintf("body is larger than %d bytes", MaxRequestBytes), nil)
	}
	switch {
	case s.kind == Amplitude && r.URL.Path != "/batch",
		s.kind == Segment && r.URL.Path != "/v1/batch":
		return s.errorReply(http.StatusNotFound, "no such endpoint: POST "+r.URL.Path, nil)
	}

	// Injected faults.
	if f.reset < o.ResetRate {
		s.resetConn(w)
		return nil
	}
	if o.Status != 0 {
		rep := s.errorReply(o.Status, fmt.Sprintf("this destination answers %d to every request (simulated)", o.Status), nil)
		if o.Status == http.StatusTooManyRequests || o.Status == http.StatusServiceUnavailable {
			rep.retryAfter = retryAfter(o)
		}
		rep.notAccepted = true
		return rep
	}
	if f.slow < o.SlowRate && o.SlowDelay > 0 {
		t := time.NewTimer(o.SlowDelay)
		select {
		case <-t.C:
			// Carry on even if the client gave up: like a real server, the request may
			// still be accepted, and a retry then makes duplicates.
		case <-s.done:
			t.Stop()
			s.resetConn(w)
			return nil
		}
	}
	if f.fail < o.FailRate {
		return s.errorReply(f.failCode, "simulated server error", nil)
	}
	if f.unavailable < o.Unavailable {
		rep := s.errorReply(http.StatusServiceUnavailable, "simulated unavailability", nil)
		rep.retryAfter = retryAfter(o)
		return rep
	}

	body, code, msg := decodeBody(r, raw)
	if code != 0 {
		return s.errorReply(code, msg, nil)
	}
	if rep := s.authenticate(r, o, key, body, received); rep != nil {
		return rep
	}
	if o.MaxBodyBytes > 0 && len(body) > o.MaxBodyBytes {
		return s.errorReply(http.StatusRequestEntityTooLarge,
			fmt.Sprintf("body is %d bytes; this destination accepts at most %d", len(body), o.MaxBodyBytes), nil)
	}
	if d, ok := s.allow(); !ok {
		rep := s.errorReply(http.StatusTooManyRequests, "rate limit exceeded", nil)
		rep.retryAfter = d
		return rep
	}
	var (
		b   *batch
		rep *reply
	)
	switch s.kind {
	case Amplitude:
		b, rep = s.validateAmplitude(r, body)
	case Segment:
		b, rep = s.validateSegment(r, body, len(raw))
	default:
		b, rep = s.validateWebhook(r, body, o.Tenant)
	}
	if rep != nil {
		return rep
	}
	return s.accept(o, b, received, len(body))
}

// retryAfter is the pause that Status's and Unavailable's 429s and 503s ask for; 0
// sends no Retry-After.
func retryAfter(o Options) time.Duration {
	if o.NoRetryAfter {
		return 0
	}
	if o.RetryAfter > 0 {
		return o.RetryAfter
	}
	return time.Second
}

// resetConn closes the request's connection without an answer.
func (s *Server) resetConn(w http.ResponseWriter) {
	s.mu.Lock()
	s.count(reset)
	s.mu.Unlock()
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0) // send a TCP reset, not a polite FIN
	}
	conn.Close()
}

// decodeBody undoes Content-Encoding, or gives the status and reason to refuse it.
func decodeBody(r *http.Request, raw []byte) ([]byte, int, string) {
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		return raw, 0, ""
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, http.StatusBadRequest, "Content-Encoding is gzip but the body is not gzip: " + err.Error()
		}
		body, err := io.ReadAll(io.LimitReader(zr, MaxRequestBytes+1))
		if err != nil {
			return nil, http.StatusBadRequest, "bad gzip body: " + err.Error()
		}
		if len(body) > MaxRequestBytes {
			return nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("decoded body is larger than %d bytes", MaxRequestBytes)
		}
		return body, 0, ""
	default:
		return nil, http.StatusBadRequest, fmt.Sprintf("unsupported Content-Encoding %q (identity or gzip)", enc)
	}
}

// allow takes a token from the bucket, or says how long until one is there.
func (s *Server) allow() (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limiter == nil {
		return 0, true
	}
	now := time.Now()
	if s.limiter.AllowN(now, 1) {
		return 0, true
	}
	missing := 1 - s.limiter.TokensAt(now)
	return time.Duration(missing / float64(s.limiter.Limit()) * float64(time.Second)), false
}

// batch is a validated request: the items to accept, by id.
type batch struct {
	items     []item
	dropped   int    // Segment: beyond SegmentMaxEvents
	webhookID string // webhook: the webhook-id header
}

type item struct {
	id   string
	raw  json.RawMessage
	user string // Amplitude: user_id, or device_id when device is set
	// device says user is a device_id.
	device bool
}

// accept records a valid batch and builds the success answer (or Amplitude's
// partial 429).
func (s *Server) accept(o Options, b *batch, received time.Time, size int) *reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	var held []int
	if s.kind == Amplitude && o.ThrottleEvents > 0 {
		for i := range b.items {
			if s.throttle.Float64() < o.ThrottleEvents {
				held = append(held, i)
			}
		}
	}
	// A 429 ingests nothing: the held events come back after their pause and the
	// others in the next request (CONTRACT §4).
	n := 0
	for _, it := range b.items {
		if len(held) > 0 {
			break
		}
		n++
		if e := s.events[it.id]; e != nil {
			e.Count++
			s.st.Duplicates++
			continue
		}
		e := &Event{Count: 1, First: received}
		if !o.NoBodies {
			e.Body = it.raw
		}
		s.events[it.id] = e
	}
	s.st.DroppedOverLimit += b.dropped
	if s.kind == Webhook && b.webhookID != "" {
		if _, dup := s.hookIDs[b.webhookID]; dup {
			s.st.DuplicateBatches++
		}
		s.hookIDs[b.webhookID] = struct{}{}
	}

	if len(held) > 0 {
		users, devices := map[string]int{}, map[string]int{}
		for _, i := range held {
			if it := b.items[i]; it.device {
				devices[it.user] = AmplitudeEPSThreshold + 1
			} else {
				users[it.user] = AmplitudeEPSThreshold + 1
			}
		}
		rep := &reply{code: http.StatusTooManyRequests, body: map[string]any{
			"code":              http.StatusTooManyRequests,
			"error":             "Too many requests for some devices and users",
			"eps_threshold":     AmplitudeEPSThreshold,
			"throttled_users":   users,
			"throttled_devices": devices,
			"throttled_events":  held,
			"events_ingested":   n, // not in Amplitude's answer; a convenience
		}}
		if o.RetryAfterOnPartial {
			rep.retryAfter = time.Second
		}
		return rep
	}

	if s.st.FirstAccepted.IsZero() {
		s.st.FirstAccepted = received
	}
	if received.After(s.st.LastAccepted) {
		s.st.LastAccepted = received
	}
	if len(s.acceptedAt) < MaxAcceptedAt {
		s.acceptedAt = append(s.acceptedAt, received)
	} else {
		s.acceptedAt[s.atNext] = received
		s.atNext = (s.atNext + 1) % MaxAcceptedAt
	}
	switch s.kind {
	case Amplitude:
		return &reply{code: http.StatusOK, body: map[string]any{
			"code": http.StatusOK, "events_ingested": n, "payload_size_bytes": size,
			"server_upload_time": time.Now().UnixMilli(),
		}}
	case Segment:
		return &reply{code: http.StatusOK, body: map[string]any{"success": true}}
	}
	return &reply{code: http.StatusNoContent}
}

// errorReply builds an error answer in the destination's style, with extra fields.
func (s *Server) errorReply(code int, msg string, extra map[string]any) *reply {
	var body map[string]any
	switch s.kind {
	case Amplitude:
		body = map[string]any{"code": code, "error": msg}
	case Segment:
		body = map[string]any{"success": false, "message": msg, "code": code}
	default:
		body = map[string]any{"error": msg, "code": code}
	}
	for k, v := range extra {
		body[k] = v
	}
	return &reply{code: code, body: body}
}

// writeJSON answers code with v as JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"destsim: encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
