package delivery

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/configkit"
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
		{Response{Status: 504}, Throttle},
		{Response{Status: 502}, Throttle},
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

func (f fixed) Limits() Limits { return Limits{MaxEvents: 3, MaxBytes: 40, MaxItem: 30} }
func (f fixed) Item(imp *impression.Impression) ([]byte, error) {
	return []byte(strings.Repeat("x", int(imp.Time))), nil
}
func (f fixed) Frame() (open, close []byte)                              { return []byte("["), []byte("]") }
func (f fixed) Request(*Batch, []byte, time.Time) (*http.Request, error) { return nil, nil }
func (f fixed) Classify(r *Response, _ *Batch) Outcome                   { return DefaultClassify(r) }

func TestPack(t *testing.T) {
	sizes := []int64{5, 5, 5, 5, 31, 20, 20, 9}
	var imps []impression.Impression
	for _, s := range sizes {
		imps = append(imps, impression.Impression{Time: s})
	}
	batches, tooBig, reason, err := pack(newLimited(fixed{}, Config{}), "hook", imps)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range batches {
		var ss []string
		for _, imp := range b.Imps {
			ss = append(ss, fmt.Sprint(imp.Time))
		}
		if b.ID != batchID("hook", b.Imps) {
			t.Errorf("batch %s is not named by its content", b.ID)
		}
		got = append(got, strings.Join(ss, ","))
	}
	if batches[0].ID == batches[1].ID {
		t.Errorf("two batches share the name %s", batches[0].ID)
	}
	again, _, _, _ := pack(newLimited(fixed{}, Config{}), "hook", imps)
	if again[0].ID != batches[0].ID {
		t.Errorf("the same impressions were named %s, then %s", batches[0].ID, again[0].ID)
	}
	// 3 events at most; 40 bytes with the frame (2) and a comma per event.
	want := "5,5,5 5,20 20,9"
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
	b := Batch{ID: "hook_0123456789abcdef", Integration: "hook", Imps: []impression.Impression{imp, imp},
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
	var exp Config
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second, 12: backoffMax, 40: backoffMax} {
		for range 50 {
			if d := exp.backoff(n); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, d, want/2, want)
			}
		}
	}
	// A schedule: each wait within 10% of its entry, the last repeated.
	svix := Config{RetrySchedule: []configkit.Duration{configkit.Duration(5 * time.Second), configkit.Duration(5 * time.Minute), configkit.Duration(2 * time.Hour)}}
	for n, want := range map[int]time.Duration{1: 5 * time.Second, 2: 5 * time.Minute, 3: 2 * time.Hour, 9: 2 * time.Hour} {
		for range 50 {
			if d := svix.backoff(n); d < want*9/10 || d > want*11/10 {
				t.Fatalf("schedule backoff(%d) = %v, want within 10%% of %v", n, d, want)
			}
		}
	}
}

// A batch that keeps failing is tried on its schedule until max_retry_duration from
// its first send, the last time at that horizon, then dead-lettered.
func TestRetryHorizon(t *testing.T) {
	p := Config{MaxRetryDuration: configkit.Duration(24 * time.Hour),
		RetrySchedule: []configkit.Duration{configkit.Duration(5 * time.Second), configkit.Duration(5 * time.Hour), configkit.Duration(12 * time.Hour)}}
	start := time.Unix(1_000_000, 0)
	now, b := start, Batch{ID: "b", Imps: make([]impression.Impression, 3)}
	var tries []time.Duration
	for range 20 {
		tries = append(tries, now.Sub(start).Round(time.Hour))
		v := decide(now, now, b, Outcome{Kind: Retry, Status: 500, Reason: "500"}, 0, p)
		if len(v.dead) == 1 {
			if got := v.dead[0].reason; !strings.Contains(got, "gave up after") {
				t.Fatalf("reason %q", got)
			}
			break
		}
		if len(v.again) != 1 {
			t.Fatalf("after %d tries: %+v", len(tries), v)
		}
		b = v.again[0]
		now = time.UnixMilli(b.NotBefore)
	}
	// 0, 5 s, ~5 h, ~17 h, then the horizon (24 h) rather than ~29 h; the waits'
	// ±10% jitter cannot add or remove an attempt.
	if len(tries) != 5 || tries[4] != 24*time.Hour || tries[2] < 4*time.Hour || tries[2] > 6*time.Hour ||
		tries[3] < 15*time.Hour || tries[3] > 19*time.Hour {
		t.Fatalf("attempts at %v", tries)
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

// After a long Retry-After, requests go one at a time from the end of the pause on:
// what waited for it does not leave at once.
func TestLimiterCarefulAfterLongPause(t *testing.T) {
	l := newLimiter(Config{RequestsPerSecond: 100, MinRequestsPerSecond: 1, MaxInFlight: 4})
	now := time.Unix(1000, 0)
	l.acquire(now, time.Second)
	l.done(now, Outcome{Kind: Throttle, Status: 429}, 2*time.Minute, time.Millisecond)
	if end := now.Add(2*time.Minute + carefulFor); !l.careful.Equal(end) {
		t.Errorf("careful until %v; want the end of the pause plus %v, %v", l.careful, carefulFor, end)
	}
}

// A destination that is down answers every probe with 503 and a Retry-After: the
// first refusal cuts the rate, the probes after it do not (the pauses hold requests
// back), so the rate is still there when it comes back; a refusal after requests
// were accepted again cuts again.
func TestLimiterOutageCutsOnce(t *testing.T) {
	l := newLimiter(Config{RequestsPerSecond: 100, MinRequestsPerSecond: 0.1, MaxInFlight: 4})
	now := time.Unix(1000, 0)
	refuse := func() {
		l.acquire(now, time.Hour)
		l.done(now, Outcome{Kind: Throttle, Status: 503}, time.Second, time.Millisecond)
		now = now.Add(2 * time.Second)
	}
	refuse()
	cut := l.current()
	if cut >= 100 {
		t.Fatalf("rate %v not lowered by the first 503", cut)
	}
	for range 60 { // a minute of probes, each refused
		refuse()
	}
	if l.current() != cut {
		t.Errorf("rate %v after a minute of refused probes, want %v (the first cut's)", l.current(), cut)
	}
	l.acquire(now, time.Hour)
	l.done(now, Outcome{Kind: Delivered, Status: 200}, 0, time.Millisecond)
	now = now.Add(2 * time.Second)
	before := l.current()
	refuse()
	if l.current() >= before {
		t.Errorf("rate %v after a refusal that followed an accepted request, want below %v", l.current(), before)
	}
}

// Requests on the wire: one at a time while the destination is new (or pushed back
// lately), then up to max_in_flight; a request that waited for its place does not
// leave once a Retry-After has come in.
func TestLimiterWire(t *testing.T) {
	l := newLimiter(Config{RequestsPerSecond: 1000, MinRequestsPerSecond: 1, MaxInFlight: 2})
	for i := range 3 {
		if _, _, ok := l.acquire(time.Now(), time.Second); !ok {
			t.Fatalf("request %d not scheduled", i)
		}
	}
	entered := make(chan bool, 3)
	enter := func() { entered <- l.enter() }
	waiting := func() bool {
		select {
		case <-entered:
			return false
		case <-time.After(100 * time.Millisecond):
			return true
		}
	}
	go enter()
	if waiting() {
		t.Fatal("the first request waited")
	}
	go enter()
	if !waiting() {
		t.Fatal("a second request went on the wire while the destination is new")
	}
	l.done(time.Now(), Outcome{Kind: Delivered}, 0, time.Millisecond)
	if ok := <-entered; !ok {
		t.Fatal("the second request did not leave after the first was answered")
	}
	l.mu.Lock()
	l.careful = time.Time{} // the limit is known: max_in_flight
	l.mu.Unlock()
	go enter()
	if waiting() {
		t.Fatal("a second request waited with max_in_flight 2")
	}
	if _, _, ok := l.acquire(time.Now(), time.Second); !ok {
		t.Fatal("not scheduled")
	}
	go enter()
	if !waiting() {
		t.Fatal("a third request went on the wire with max_in_flight 2")
	}
	l.done(time.Now(), Outcome{Kind: Throttle, Status: 429}, time.Minute, time.Millisecond)
	if ok := <-entered; ok {
		t.Error("a request left after a Retry-After came in while it waited")
	}
}

// The rate settles near what the destination accepts: simulate a destination that
// accepts R requests a second (a token bucket of one second) against a sender that
// always has work, and check the long-run goodput and 429 share.
func TestLimiterLearnsLimit(t *testing.T) {
	// 20 requests/s, and 1: a destination so slow that each refusal's Retry-After
	// costs a whole request, where going back up to the refused rate at once loses a
	// quarter of the limit.
	for _, R := range []float64{20, 1} {
		t.Run(fmt.Sprint(R), func(t *testing.T) { learnsLimit(t, R) })
	}
}

func learnsLimit(t *testing.T, R float64) {
	l := newLimiter(Config{RequestsPerSecond: 10 * R, MinRequestsPerSecond: 0.1, MaxInFlight: 4})
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

// Every job of a backfill that sends to one integration shares its limiter and
// connections: a Retry-After seen by one pauses all. Other settings never share.
func TestOneLimiterPerDestination(t *testing.T) {
	p := Config{RequestsPerSecond: 5}.WithDefaults(Config{})
	a := Target{ID: "hook", Kind: "stub", Policy: p, Settings: []byte(`{"url":"http://x"}`), Progress: "job-1"}
	b := a
	b.Progress, b.AlertDelay = "job-2", time.Minute
	if limiterFor(a.destKey(), a.Policy) != limiterFor(b.destKey(), b.Policy) {
		t.Error("two jobs sending to one integration got two limiters")
	}
	if clientFor(a.destKey(), a.Policy, false) != clientFor(b.destKey(), b.Policy, false) {
		t.Error("two jobs sending to one integration got two HTTP clients")
	}
	c := a
	c.Settings = []byte(`{"url":"http://y"}`)
	if limiterFor(a.destKey(), a.Policy) == limiterFor(c.destKey(), c.Policy) {
		t.Error("two destinations share a limiter")
	}
}

// delivery.workers divides nothing.
func TestLimiterWorkersIgnored(t *testing.T) {
	l := newLimiter(Config{RequestsPerSecond: 30, MinRequestsPerSecond: 3, MaxInFlight: 4, Workers: 3})
	if l.current() != 30 || l.floor != 3 || l.maxInFlight != 4 {
		t.Errorf("rate %v, floor %v, in flight %d; want the config's 30/s, 3/s and 4: one worker at a time sends to a destination", l.current(), l.floor, l.maxInFlight)
	}
}

// The record of accepted requests is trimmed to the history the cut looks at.
func TestLimiterHistoryTrimmed(t *testing.T) {
	l := newLimiter(Config{RequestsPerSecond: 1000, MinRequestsPerSecond: 1, MaxInFlight: 4})
	now := time.Unix(1000, 0)
	for range 10000 {
		if _, _, ok := l.acquire(now, time.Second); ok {
			l.done(now, Outcome{Kind: Delivered}, 0, time.Millisecond)
		}
		now = now.Add(10 * time.Millisecond)
	}
	if n := len(l.accepted); n > int(history/(10*time.Millisecond))+1 {
		t.Errorf("%d accepted requests remembered; want those of the last %v only", n, history)
	}
}

// What opens the circuit: five failed answers in a row, 502/503/504 without
// Retry-After among them; a 503 with Retry-After (a pause, which the destination asked
// for) and a 429 (a rate) are no failures, and any answer that is not one starts the
// count again.
func TestCircuitCountsFailures(t *testing.T) {
	now := time.Unix(1000, 0)
	answer := func(l *limiter, o Outcome, retryAfter time.Duration) {
		l.acquire(now, time.Hour)
		l.done(now, o, retryAfter, time.Millisecond)
		now = now.Add(2 * time.Second)
	}
	for _, c := range []struct {
		name    string
		answers []Outcome
		pauses  []time.Duration
		open    bool
	}{
		{"five 502s", []Outcome{{Kind: Throttle, Status: 502}, {Kind: Throttle, Status: 502}, {Kind: Throttle, Status: 504},
			{Kind: Retry, Status: 500}, {Kind: Retry}}, nil, true},
		{"a 429 between", []Outcome{{Kind: Retry, Status: 500}, {Kind: Retry, Status: 500}, {Kind: Throttle, Status: 429},
			{Kind: Retry, Status: 500}, {Kind: Retry, Status: 500}, {Kind: Retry, Status: 500}}, nil, false},
		{"503s with Retry-After", []Outcome{{Kind: Throttle, Status: 503}, {Kind: Throttle, Status: 503}, {Kind: Throttle, Status: 503},
			{Kind: Throttle, Status: 503}, {Kind: Throttle, Status: 503}}, []time.Duration{time.Second, time.Second, time.Second, time.Second, time.Second}, false},
	} {
		l := newLimiter(Config{RequestsPerSecond: 100, MinRequestsPerSecond: 1, MaxInFlight: 4})
		for i, o := range c.answers {
			var pause time.Duration
			if c.pauses != nil {
				pause = c.pauses[i]
			}
			answer(l, o, pause)
		}
		if l.isDown() != c.open {
			t.Errorf("%s: circuit open %v, want %v", c.name, l.isDown(), c.open)
		}
	}
}

// A 429 that held some events back is push-back, never a success: it does not raise
// the rate; one that held every event of its request cuts it like any 429.
func TestLimiterPartialThrottle(t *testing.T) {
	l := newLimiter(Config{RequestsPerSecond: 100, MinRequestsPerSecond: 1, MaxInFlight: 4})
	now := time.Unix(1000, 0)
	l.setRate(now, 50)
	b := Batch{Imps: make([]impression.Impression, 4)}
	for range 30 { // partial 429s for 30 s, with requests held back by the pace
		l.limited = true
		now = now.Add(time.Second)
		l.done(now, settle(Outcome{Kind: Partial, Status: 429, Held: []int{0}, Resend: true}, &b), 0, time.Millisecond)
	}
	if r := l.current(); r != 50 {
		t.Errorf("rate %v after partial 429s; want 50, neither raised nor cut", r)
	}
	l.done(now.Add(2*time.Second), settle(Outcome{Kind: Partial, Status: 429, Held: []int{0, 1, 2, 3}, Resend: true}, &b), 0, time.Millisecond)
	if r := l.current(); r >= 50 {
		t.Errorf("rate %v after a 429 that held every event; want it cut", r)
	}
}
