package delivery

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/impression"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 10, 21, 7, 28, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"120":                           120 * time.Second,
		"0":                             0,
		"-5":                            0,
		"soon":                          0,
		"Wed, 21 Oct 2026 07:28:30 GMT": 30 * time.Second,
		"Wed, 21 Oct 2026 07:27:00 GMT": 0, // in the past
		"99999999999":                   maxRetryAfter * time.Second,
	} {
		h := http.Header{}
		if v != "" {
			h.Set("Retry-After", v)
		}
		if got := RetryAfter(h, now); got != want {
			t.Errorf("Retry-After %q = %v, want %v", v, got, want)
		}
	}
}

func TestDefaultClassify(t *testing.T) {
	for _, c := range []struct {
		r    Response
		want Kind
	}{
		{Response{Status: 200}, Delivered},
		{Response{Status: 204}, Delivered},
		{Response{Status: 429}, Throttle},
		{Response{Status: 503}, Throttle},
		{Response{Status: 413}, Split},
		{Response{Status: 408}, Retry},
		{Response{Status: 500}, Retry},
		{Response{Status: 504}, Retry},
		{Response{Status: 400, Body: []byte(`{"error":"bad"}`)}, Reject},
		{Response{Status: 401}, Reject},
		{Response{Status: 410}, Reject},
		{Response{Err: errors.New("connection reset by peer")}, Retry},
		{Response{Err: fmt.Errorf("dial: %w", ErrPrivateAddress)}, Reject},
	} {
		if got := DefaultClassify(&c.r); got.Kind != c.want {
			t.Errorf("%+v -> %v, want %v", c.r, got.Kind, c.want)
		}
	}
	o := DefaultClassify(&Response{Status: 400, Body: []byte("{\n \"error\": \"missing api_key\"\n}")})
	if o.Reason != `HTTP 400 Bad Request: { "error": "missing api_key" }` {
		t.Errorf("reason = %q", o.Reason)
	}
}

// fixed is a destination whose items are a given size.
type fixed struct{ size int }

func (f fixed) Limits() Limits { return Limits{MaxEvents: 3, MaxBytes: 40, MaxItem: 30, Envelope: 2} }
func (f fixed) Item(imp *impression.Impression) ([]byte, error) {
	return []byte(strings.Repeat("x", int(imp.Time))), nil
}
func (f fixed) Request(*Batch, [][]byte, time.Time) (*http.Request, error) { return nil, nil }
func (f fixed) Classify(r *Response, _ *Batch) Outcome                     { return DefaultClassify(r) }

func TestPack(t *testing.T) {
	sizes := []int64{5, 5, 5, 5, 31, 20, 20, 9}
	var imps []impression.Impression
	for _, s := range sizes {
		imps = append(imps, impression.Impression{Time: s})
	}
	batches, tooBig, reason, err := pack(fixed{}, "hook", 1000, 2, imps)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range batches {
		var ss []string
		for _, imp := range b.Imps {
			ss = append(ss, fmt.Sprint(imp.Time))
		}
		name := b.ID[:strings.LastIndexByte(b.ID, '_')] // without the digest, checked below
		got = append(got, name+":"+strings.Join(ss, ","))
	}
	// A later pane of the same window (late data) numbers its batches from 0 again;
	// its names must differ, or one batch would replace the other while pending.
	later, _, _, err := pack(fixed{}, "hook", 1000, 2, imps[3:])
	if err != nil {
		t.Fatal(err)
	}
	if later[0].ID == batches[0].ID {
		t.Errorf("two panes' first batches share the name %s", later[0].ID)
	}
	again, _, _, _ := pack(fixed{}, "hook", 1000, 2, imps)
	if again[0].ID != batches[0].ID {
		t.Errorf("the same impressions were named %s, then %s", batches[0].ID, again[0].ID)
	}
	// 3 events at most; 40 bytes with the envelope (2) and a comma per event.
	want := "hook_1000_002_00000:5,5,5 hook_1000_002_00001:5,20 hook_1000_002_00002:20,9"
	if strings.Join(got, " ") != want {
		t.Errorf("batches = %s\nwant      %s", strings.Join(got, " "), want)
	}
	if len(tooBig) != 1 || tooBig[0].Time != 31 || !strings.Contains(reason, "31 bytes") {
		t.Errorf("too big = %v (%s)", tooBig, reason)
	}
}

func TestBatchCoding(t *testing.T) {
	imp := impression.Impression{Tenant: "acme", Key: "k", Time: 5, Properties: "{}"}
	imp.ID = imp.ComputeID()
	b := Batch{ID: "hook_1_000_00001.0", Integration: "hook", Window: 1, Imps: []impression.Impression{imp, imp},
		Attempts: 3, FirstTry: 99, NotBefore: -1, Status: 503, Reason: "HTTP 503"}
	data, _ := marshalBatch(b)
	got, err := unmarshalBatch(data)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(b) {
		t.Fatalf("round trip = %+v, %v", got, err)
	}
	for i := range data {
		if _, err := unmarshalBatch(data[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second, 12: backoffMax, 40: backoffMax} {
		for range 50 {
			if d := backoff(n); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
}

func TestLimiterRetryAfterPausesDestination(t *testing.T) {
	l := newLimiter(Config{RequestsPerSecond: 100, MinRequestsPerSecond: 1, MaxInFlight: 4})
	now := time.Unix(1000, 0)
	if _, _, ok := l.acquire(now, time.Second); !ok {
		t.Fatal("a fresh limiter refused")
	}
	l.done(now, Outcome{Kind: Throttle, Status: 429}, 7*time.Second, time.Millisecond)
	if _, wait, ok := l.acquire(now.Add(time.Second), time.Second); ok || wait != 6*time.Second {
		t.Errorf("during Retry-After: ok=%v wait=%v, want a 6s wait", ok, wait)
	}
	if _, paused := l.pausedAt(now.Add(6999 * time.Millisecond)); !paused {
		t.Error("not paused before Retry-After elapsed")
	}
	if _, _, ok := l.acquire(now.Add(7*time.Second), time.Second); !ok {
		t.Error("refused after Retry-After elapsed")
	}
	if l.current() >= 100 {
		t.Errorf("rate %v not lowered by a 429", l.current())
	}
}

func TestLimiterInFlightCap(t *testing.T) {
	l := newLimiter(Config{RequestsPerSecond: 1000, MinRequestsPerSecond: 1, MaxInFlight: 2})
	now := time.Unix(1000, 0)
	for i := range 2 {
		if _, _, ok := l.acquire(now, time.Second); !ok {
			t.Fatalf("request %d refused", i)
		}
	}
	if _, _, ok := l.acquire(now, time.Second); ok {
		t.Fatal("a third request in flight was allowed")
	}
	l.done(now, Outcome{Kind: Delivered}, 0, time.Millisecond)
	if _, _, ok := l.acquire(now, time.Second); !ok {
		t.Fatal("refused after one finished")
	}
}

// The rate settles near what the destination accepts: simulate a destination that
// accepts R requests a second (a token bucket of one second) against a sender that
// always has work, and check the long-run goodput and 429 share.
func TestLimiterLearnsLimit(t *testing.T) {
	const R = 20.0
	l := newLimiter(Config{RequestsPerSecond: 200, MinRequestsPerSecond: 0.1, MaxInFlight: 4})
	now := time.Unix(0, 0)
	tokens, last := R, now
	var accepted, throttled int
	end := now.Add(300 * time.Second)
	for now.Before(end) {
		at, wait, ok := l.acquire(now, time.Second)
		if !ok {
			now = now.Add(max(wait, time.Millisecond))
			continue
		}
		now = at
		tokens = min(R, tokens+now.Sub(last).Seconds()*R)
		last = now
		if tokens >= 1 {
			tokens--
			accepted++
			l.done(now, Outcome{Kind: Delivered}, 0, 5*time.Millisecond)
		} else {
			throttled++
			l.done(now, Outcome{Kind: Throttle, Status: 429}, time.Second, 5*time.Millisecond)
		}
	}
	// Skip judging the first 30 s of learning by measuring over the whole run: strict.
	goodput := float64(accepted) / 300 / R
	share := float64(throttled) / float64(accepted+throttled)
	t.Logf("goodput %.3f of the limit, 429 share %.3f, final rate %.1f", goodput, share, l.current())
	if goodput < 0.9 || share > 0.05 {
		t.Errorf("goodput %.3f (want >= 0.9), 429 share %.3f (want <= 0.05)", goodput, share)
	}
}
