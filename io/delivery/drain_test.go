package delivery

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/configkit"
	"github.com/outflow/outflow/internal/impression"
)

// The drain, driven by a fake clock: a key's state in memory (reads counted), requests
// answered by a scripted destination, the timer fired when the drain asks.

// memStore is a key's state in memory; it counts reads.
type memStore struct {
	sc                  schedule
	freshB              []Batch
	bags                [2][]Batch // the queue, the parts
	clears              [2]int
	scReads, freshReads int
	bagReads            int
	freshReadsBefore    int // at the start of the drain
}

func (m *memStore) schedule() (schedule, error) {
	m.scReads++
	data, _ := marshalSchedule(m.sc) // as a runner would: through the coder
	return unmarshalSchedule(data)
}
func (m *memStore) setSchedule(sc schedule) error {
	if sc.empty() {
		sc = schedule{} // as beamStore clears it
	}
	m.sc = sc
	return nil
}
func (m *memStore) fresh() ([]Batch, error) {
	// The Go SDK answers a second Bag read after a Clear in one invocation wrongly.
	if m.freshReads++; m.freshReads-m.freshReadsBefore > 1 {
		panic("fresh read twice in one drain")
	}
	return append([]Batch(nil), m.freshB...), nil
}
func (m *memStore) addFresh(b Batch) error { m.freshB = append(m.freshB, b); return nil }
func (m *memStore) clearFresh() error      { m.freshB = nil; return nil }
func (m *memStore) bag(part bool) ([]Batch, error) {
	m.bagReads++
	return append([]Batch(nil), m.bags[bagIndex(part)]...), nil
}
func (m *memStore) add(part bool, b Batch) error {
	m.bags[bagIndex(part)] = append(m.bags[bagIndex(part)], b)
	return nil
}
func (m *memStore) clear(part bool) error {
	m.bags[bagIndex(part)] = nil
	m.clears[bagIndex(part)]++
	return nil
}

// script answers a request sent at now.
type script func(now time.Time, b Batch) (Outcome, time.Duration)

// fakeCalls answers requests latency after they leave, on the fake clock.
type fakeCalls struct {
	clock   *time.Time
	latency time.Duration
	answer  script
	m       map[string]*fakeCall
	sent    []time.Time // when each request left
	events  map[string]int
}

type fakeCall struct {
	*call
	d        *dest
	answerAt time.Time
}

func (f *fakeCalls) get(id string) *call {
	fc := f.m[id]
	if fc == nil {
		return nil
	}
	if !fc.finished() && !f.clock.Before(fc.answerAt) {
		now := *f.clock
		if _, paused := fc.d.lim.pausedAt(fc.at); paused {
			fc.notSent = true
			fc.d.lim.cancel()
		} else {
			fc.d.lim.mu.Lock()
			fc.d.lim.sending++ // as enter does; the fake clock never waits for the wire
			fc.d.lim.mu.Unlock()
			fc.sentAt = fc.at
			f.sent = append(f.sent, fc.at)
			fc.outcome, fc.retryAfter = f.answer(fc.at, fc.batch)
			fc.outcome = settle(fc.outcome, &fc.batch)
			fc.resp = &Response{Status: fc.outcome.Status}
			if fc.outcome.Kind == Delivered {
				for _, imp := range fc.batch.Imps {
					f.events[imp.Key]++
				}
			}
			fc.d.lim.done(now, fc.outcome, fc.retryAfter, f.latency)
		}
		close(fc.done)
	}
	return fc.call
}

func (f *fakeCalls) forget(id string) { delete(f.m, id) }

func (f *fakeCalls) start(d *dest, key string, b Batch, at time.Time) *call {
	c := &call{batch: b, at: at, done: make(chan struct{})}
	f.m[key] = &fakeCall{call: c, d: d, answerAt: at.Add(f.latency)}
	return c
}

// tally counts what the drain reported.
type tally struct {
	delivered, dead map[string]int
	reasons         []string
	requests        int
	sizes           []int
	overflowed      int
	oldest          int64 // as held last said
}

func (t *tally) delivered_(b *Batch) {
	for _, imp := range b.Imps {
		t.delivered[imp.Key]++
	}
}

type tallyFx struct{ *tally }

func (fx tallyFx) delivered(_ *dest, b *Batch, _ time.Time) { fx.delivered_(b) }
func (fx tallyFx) held(_ *dest, oldest int64)               { fx.oldest = oldest }

func (fx tallyFx) deadLetter(_ *dest, b *Batch, _ int, _, reason string) {
	for _, imp := range b.Imps {
		fx.dead[imp.Key]++
	}
	fx.reasons = append(fx.reasons, reason)
}
func (fx tallyFx) overflow(d *dest, b *Batch, reason string) {
	fx.overflowed += len(b.Imps)
	fx.deadLetter(d, b, 0, "overflow", reason)
}
func (fx tallyFx) answered(_ *dest, c *call) {
	fx.requests++
	fx.sizes = append(fx.sizes, len(c.batch.Imps))
}

// stub is a destination whose events are small JSON objects.
type stub struct{}

func (stub) Limits() Limits { return Limits{MaxEvents: 1000, MaxBytes: 1 << 20, MaxItem: 1 << 10} }
func (stub) Item(imp *impression.Impression) ([]byte, error) {
	return json.Marshal(map[string]any{"key": imp.Key, "time": imp.Time})
}
func (stub) Frame() (open, close []byte)                              { return []byte("["), []byte("]") }
func (stub) Request(*Batch, []byte, time.Time) (*http.Request, error) { return nil, nil }
func (stub) Classify(r *Response, _ *Batch) Outcome                   { return DefaultClassify(r) }

// harness is one key of one destination on a fake clock.
type harness struct {
	now        time.Time
	d          *dest
	st         *memStore
	calls      *fakeCalls
	tally      *tally
	wake       time.Time
	fires      int // drains run by the timer
	maxEntries int // the most entries the schedule held
}

func newHarness(p Config, answer script) *harness {
	p = p.WithDefaults(Config{})
	h := &harness{now: time.Unix(1_800_000_000, 0), st: &memStore{},
		tally: &tally{delivered: map[string]int{}, dead: map[string]int{}}}
	t := Target{ID: "dest", Kind: "stub", Policy: p}
	h.d = &dest{Target: t, d: newLimited(stub{}, p), lim: newLimiter(p)}
	h.calls = &fakeCalls{clock: &h.now, latency: 50 * time.Millisecond, answer: answer, m: map[string]*fakeCall{}, events: map[string]int{}}
	return h
}

func (h *harness) drain(in *arrival) {
	h.st.freshReadsBefore = h.st.freshReads
	wake, err := drain(h.now, h.d, h.st, h.calls, tallyFx{h.tally}, in)
	if err != nil {
		panic(err)
	}
	h.wake = wake
	h.maxEntries = max(h.maxEntries, len(h.st.sc.Entries))
}

// arrive brings n impressions whose keys start at first, as one element.
func (h *harness) arrive(first, n int) {
	in := &arrival{}
	for i := range n {
		imp := impression.Impression{Tenant: "acme", Key: fmt.Sprintf("user-%06d", first+i), Time: h.now.UnixMilli() - int64(i)}
		imp.ID = imp.ComputeID()
		in.imps = append(in.imps, imp)
		in.bytes += len(impression.AppendBinary(nil, imp))
	}
	h.drain(in)
}

// runUntil fires the timer whenever the drain asked, until t or until nothing is
// pending.
func (h *harness) runUntil(t time.Time) {
	same := 0
	for !h.wake.IsZero() && !h.wake.After(t) {
		if same++; !h.wake.After(h.now) && same > 100 {
			panic(fmt.Sprintf("the drain keeps asking to wake at %v", h.wake))
		} else if h.wake.After(h.now) {
			same = 0
		}
		h.now = h.wake
		h.fires++
		h.drain(nil)
	}
	if h.now.Before(t) {
		h.now = t
	}
}

func accept(time.Time, Batch) (Outcome, time.Duration) {
	return Outcome{Kind: Delivered, Status: 200}, 0
}

func (h *harness) exactlyOnce(t *testing.T, n int) {
	t.Helper()
	if len(h.calls.events) != n || len(h.tally.delivered) != n {
		t.Fatalf("destination holds %d impressions, %d reported delivered; want %d", len(h.calls.events), len(h.tally.delivered), n)
	}
	for k, c := range h.calls.events {
		if c != 1 || h.tally.delivered[k] != 1 {
			t.Fatalf("%s accepted %d times, reported %d", k, c, h.tally.delivered[k])
		}
	}
	if len(h.tally.dead) != 0 {
		t.Fatalf("%d dead-lettered: %v", len(h.tally.dead), h.tally.reasons)
	}
}

// A backlog of 2,000 batches behind a 60 s Retry-After: the key sleeps through the
// pause (a bounded number of timer firings, no batch read), then delivers everything
// once, reading the queue at most once whatever the backlog.
func TestBacklogSleepsThroughRetryAfter(t *testing.T) {
	var pauseEnds time.Time
	answered := 0
	h := newHarness(Config{RequestsPerSecond: 50, MaxInFlight: 4, MaxBatchEvents: 10}, func(now time.Time, b Batch) (Outcome, time.Duration) {
		answered++
		if answered == 1 {
			pauseEnds = now.Add(60 * time.Second)
			return Outcome{Kind: Throttle, Status: 429}, 60 * time.Second
		}
		if now.Before(pauseEnds) {
			panic(fmt.Sprintf("a request left at %v, inside the Retry-After ending %v", now, pauseEnds))
		}
		return Outcome{Kind: Delivered, Status: 200}, 0
	})
	const batches, per = 2000, 10
	for i := range batches / 100 { // 20 arrivals of 100 batches' worth
		h.arrive(i*100*per, 100*per)
	}
	h.runUntil(h.now.Add(time.Second)) // the first request is refused with Retry-After: 60
	if pauseEnds.IsZero() {
		t.Fatal("no request was answered within a second")
	}
	fires, reads := h.fires, h.st.freshReads+h.st.bagReads
	h.runUntil(pauseEnds.Add(-time.Millisecond))
	if f := h.fires - fires; f > 3 {
		t.Errorf("the timer fired %d times during the 60 s pause; want at most 3", f)
	}
	if r := h.st.freshReads + h.st.bagReads - reads; r != 0 {
		t.Errorf("%d reads of batches during the pause; want none", r)
	}
	h.runUntil(pauseEnds.Add(time.Hour))
	h.exactlyOnce(t, batches*per)
	if h.st.bagReads > 0 {
		t.Errorf("the queue was read %d times to send %d batches; this worker holds it", h.st.bagReads, batches)
	}
	// The schedule every wake reads stays small whatever the backlog: the requests
	// scheduled (a second's worth and those on the wire) and the one to send again.
	if limit := 4 + 50 + 1; h.maxEntries > limit {
		t.Errorf("the schedule held up to %d entries; want at most %d", h.maxEntries, limit)
	}
	if h.fires > batches/10 {
		t.Errorf("%d timer firings to send %d batches; want answers collected together", h.fires, batches)
	}
	for i, n := range h.tally.sizes {
		if n != per {
			t.Fatalf("request %d carried %d events, want %d", i, n, per)
		}
	}
	if len(h.st.bags[0])+len(h.st.bags[1]) != 0 || len(h.st.freshB) != 0 || !h.st.sc.empty() {
		t.Errorf("state left behind: %d queued, %d parts, %d fresh, schedule %+v", len(h.st.bags[0]), len(h.st.bags[1]), len(h.st.freshB), h.st.sc)
	}
	t.Logf("%d requests, %d timer firings, Bags read %d times, fresh read %d times", h.tally.requests, h.fires, h.st.bagReads, h.st.freshReads)
}

// Small windows' impressions that arrive while the destination is busy leave in full
// requests, not one request per window.
func TestFullRequestsAcrossWindows(t *testing.T) {
	// One request every 5 s; a window of 20 impressions every second.
	h := newHarness(Config{RequestsPerSecond: 0.2, MinRequestsPerSecond: 0.2, MaxInFlight: 1, MaxBatchEvents: 100}, accept)
	for i := range 50 {
		h.arrive(i*20, 20)
		h.runUntil(h.now.Add(time.Second))
	}
	h.runUntil(h.now.Add(time.Hour))
	h.exactlyOnce(t, 1000)
	full := 0
	for _, n := range h.tally.sizes {
		if n == 100 {
			full++
		}
	}
	// Whatever waited for the slot went out together, in full requests.
	if len(h.tally.sizes) > 12 || full < 8 {
		t.Errorf("1000 impressions in %d requests of %v; want about 10 full ones", len(h.tally.sizes), h.tally.sizes)
	}
}

// A stream's lone window goes out flushAfter after it arrived, not later; a trickle
// waits at most flushMax.
func TestPartialRequestWaitsOnlyFlushAfter(t *testing.T) {
	h := newHarness(Config{MaxBatchEvents: 100}, accept)
	start := h.now
	h.arrive(0, 7)
	if len(h.calls.m) != 0 {
		t.Fatal("a partial request left at once; it should wait for more")
	}
	if want := start.Add(flushAfter); !h.wake.Equal(want) {
		t.Fatalf("wake at %v, want %v", h.wake, want)
	}
	h.runUntil(start.Add(flushAfter + time.Second))
	h.exactlyOnce(t, 7)
	if h.calls.sent[0].Sub(start) != flushAfter {
		t.Errorf("sent %v after arrival, want %v", h.calls.sent[0].Sub(start), flushAfter)
	}

	h = newHarness(Config{MaxBatchEvents: 100}, accept)
	start = h.now
	for i := range 20 { // 3 impressions every half second
		h.arrive(i*3, 3)
		h.runUntil(h.now.Add(500 * time.Millisecond))
	}
	h.runUntil(h.now.Add(time.Hour))
	h.exactlyOnce(t, 60)
	if got := h.calls.sent[0].Sub(start); got != flushMax {
		t.Errorf("a trickle's first request left %v after it began, want %v", got, flushMax)
	}
}

// 5xx are retried with backoff; 413 splits; other 4xx dead-letter; retries run out.
func TestDrainRetriesSplitsAndGivesUp(t *testing.T) {
	n := 0
	h := newHarness(Config{MaxBatchEvents: 8}, func(_ time.Time, b Batch) (Outcome, time.Duration) {
		n++
		switch {
		case n == 1:
			return Outcome{Kind: Retry, Status: 500, Reason: "HTTP 500"}, 0
		case len(b.Imps) > 4:
			return Outcome{Kind: Split, Status: 413, Reason: "HTTP 413"}, 0
		}
		return Outcome{Kind: Delivered, Status: 200}, 0
	})
	h.arrive(0, 8)
	h.runUntil(h.now.Add(time.Hour))
	h.exactlyOnce(t, 8)
	for _, n := range h.tally.sizes[len(h.tally.sizes)-2:] {
		if n != 4 {
			t.Errorf("sizes %v: want the last two requests halves of 4", h.tally.sizes)
		}
	}

	h = newHarness(Config{MaxRetryDuration: configkit.Duration(time.Minute)}, func(time.Time, Batch) (Outcome, time.Duration) {
		return Outcome{Kind: Retry, Status: 503, Reason: "HTTP 503"}, 0
	})
	h.arrive(0, 3)
	h.runUntil(h.now.Add(time.Hour))
	if len(h.tally.dead) != 3 || !strings.Contains(h.tally.reasons[0], "gave up after") {
		t.Errorf("dead %v, reasons %v: want all 3 given up", h.tally.dead, h.tally.reasons)
	}
}

// Held and resent parts of a partial answer (Amplitude's throttled_events) obey
// max_retry_duration like any retry.
func TestPartialAnswersObeyMaxRetryDuration(t *testing.T) {
	p := Config{MaxRetryDuration: configkit.Duration(time.Minute)}.WithDefaults(Config{})
	now := time.Unix(1_800_000_000, 0)
	b := Batch{ID: "a", Integration: "dest", Imps: make([]impression.Impression, 4), FirstTry: now.Add(-2 * time.Minute).UnixMilli(), Attempts: 5}
	v := decide(now, now, b, Outcome{Kind: Partial, Status: 429, Held: []int{0, 1}, HoldFor: 15 * time.Second, Resend: true}, 0, p)
	if len(v.again) != 0 || len(v.dead) != 2 || v.delivered != nil {
		t.Fatalf("verdict %+v: want the held and resent parts dead-lettered", v)
	}
	for _, d := range v.dead {
		if !strings.Contains(d.reason, "gave up after") {
			t.Errorf("reason %q", d.reason)
		}
	}
	b.FirstTry = now.Add(-time.Second).UnixMilli()
	v = decide(now, now, b, Outcome{Kind: Partial, Status: 429, Held: []int{0, 1}, HoldFor: 15 * time.Second, Resend: true}, 3*time.Second, p)
	if len(v.again) != 2 || v.again[0].NotBefore != now.Add(15*time.Second).UnixMilli() || v.again[1].NotBefore != now.Add(3*time.Second).UnixMilli() {
		t.Fatalf("verdict %+v: want held after 15 s, rest after the Retry-After", v)
	}
}

// A 410 stops the destination: what is pending is dead-lettered without requests.
func TestGoneDeadLettersPending(t *testing.T) {
	h := newHarness(Config{MaxBatchEvents: 5, MaxInFlight: 1}, func(time.Time, Batch) (Outcome, time.Duration) {
		return Outcome{Kind: Gone, Status: 410, Reason: "HTTP 410"}, 0
	})
	h.arrive(0, 20)
	h.runUntil(h.now.Add(time.Hour))
	if len(h.tally.dead) != 20 || h.tally.requests != 1 {
		t.Errorf("%d dead-lettered after %d requests; want 20 after 1", len(h.tally.dead), h.tally.requests)
	}
}

// A request that waited for its slot does not leave once a Retry-After has come in:
// the pause is checked after encoding, immediately before sending.
func TestNoRequestLeavesInsideRetryAfter(t *testing.T) {
	var got atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { got.Add(1) }))
	defer srv.Close()
	p := Config{RequestsPerSecond: 10}.WithDefaults(Config{})
	d := &dest{Target: Target{ID: "dest", Policy: p}, d: newLimited(stub{}, p), lim: newLimiter(p), client: newClient(1, true)}
	at, _, ok := d.lim.acquire(time.Now(), time.Second)
	if !ok {
		t.Fatal("no slot")
	}
	r := &inflight{}
	c := r.start(d, "b", Batch{ID: "b", Integration: "dest", Imps: make([]impression.Impression, 1)}, at.Add(100*time.Millisecond))
	d.lim.done(time.Now(), Outcome{Kind: Throttle, Status: 429}, 10*time.Second, time.Millisecond) // another request's answer
	<-c.done
	if !c.notSent || got.Load() != 0 {
		t.Errorf("notSent=%v, %d requests reached the destination; want none", c.notSent, got.Load())
	}
}

func TestScheduleCoding(t *testing.T) {
	sc := schedule{Gen: 7, Seq: 11, Next: 3, QueueLen: 9, QueuedN: 60, PartsLen: 2, FreshN: 5, FreshBytes: 900, FreshSince: 1234, FreshLast: 1240,
		FreshOldest: 1200, QueueOldest: []int64{1100, 1150},
		Entries: []entry{{ID: "a_1", Tag: 4, where: where{Part: true, Pos: 1}, N: 10, Oldest: 1000, NotBefore: -1, FirstTry: 99, Attempts: 2, Status: 503, Reason: "HTTP 503"}, {ID: "b", where: where{Pos: 2}}}}
	data, _ := marshalSchedule(sc)
	got, err := unmarshalSchedule(data)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(sc) {
		t.Fatalf("round trip = %+v, %v", got, err)
	}
	for i := range data {
		if _, err := unmarshalSchedule(data[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}
}

// While a destination holds impressions back, the drain reports the time of the
// oldest one it holds, wherever it waits (fresh, queued, sent and refused); 0 once
// all are delivered.
func TestOldestPending(t *testing.T) {
	var pauseEnds time.Time
	h := newHarness(Config{RequestsPerSecond: 50, MaxInFlight: 1, MaxBatchEvents: 10}, func(now time.Time, b Batch) (Outcome, time.Duration) {
		if pauseEnds.IsZero() {
			pauseEnds = now.Add(60 * time.Second)
			return Outcome{Kind: Throttle, Status: 429}, 60 * time.Second
		}
		return Outcome{Kind: Delivered, Status: 200}, 0
	})
	first := h.now.UnixMilli() - 49 // arrive times its impressions now, now-1ms, …
	h.arrive(0, 50)
	h.runUntil(h.now.Add(2 * time.Second))
	if h.tally.oldest != first {
		t.Errorf("oldest held %d, want %d (the first arrival's oldest)", h.tally.oldest, first)
	}
	h.arrive(50, 30) // newer
	h.runUntil(h.now.Add(10 * time.Second))
	if h.tally.oldest != first {
		t.Errorf("after newer arrivals, oldest held %d, want still %d", h.tally.oldest, first)
	}
	h.runUntil(pauseEnds.Add(time.Hour))
	h.exactlyOnce(t, 80)
	if h.tally.oldest != 0 {
		t.Errorf("oldest held %d once all were delivered, want 0", h.tally.oldest)
	}
}

// A long queue is compacted while requests are in flight and batches wait to be sent
// again: nothing is lost or sent twice, and the Bags shrink as the queue is worked.
func TestQueueCompactsWhileBusy(t *testing.T) {
	n := 0
	h := newHarness(Config{RequestsPerSecond: 100, MaxInFlight: 4, MaxBatchEvents: 10}, func(_ time.Time, b Batch) (Outcome, time.Duration) {
		if n++; n%7 == 0 {
			return Outcome{Kind: Retry, Status: 500, Reason: "HTTP 500"}, 0
		}
		if n%11 == 0 && len(b.Imps) > 1 {
			return Outcome{Kind: Split, Status: 413, Reason: "HTTP 413"}, 0
		}
		return Outcome{Kind: Delivered, Status: 200}, 0
	})
	h.calls.latency = 20 * time.Millisecond
	h.arrive(0, 20000)
	compactedBusy := false // the queue Bag was rewritten while batches still waited in it
	for h.st.sc.Next < h.st.sc.QueueLen {
		before := h.st.clears[0]
		h.runUntil(h.now.Add(time.Second))
		compactedBusy = compactedBusy || (h.st.clears[0] > before && h.st.sc.Next < h.st.sc.QueueLen)
	}
	if !compactedBusy {
		t.Error("the queue Bag was never compacted while batches waited in it")
	}
	h.runUntil(h.now.Add(time.Hour))
	h.exactlyOnce(t, 20000)
	t.Logf("%d requests; queue Bag rewritten %d times, parts %d", h.tally.requests, h.st.clears[0], h.st.clears[1])
	if h.st.clears[1] == 0 {
		t.Error("the parts Bag was never rewritten or cleared; the test proves nothing of it")
	}
}

// A stream's integration holds at most max_pending_impressions: while its destination
// is paused, what arrives beyond them is dead-lettered for replay, the rest delivered
// once it recovers. Without the bound (batch jobs) everything waits.
func TestMaxPendingOverflowsToDeadLetters(t *testing.T) {
	for _, bound := range []int{100, 0} {
		paused := true
		h := newHarness(Config{MaxBatchEvents: 10}, func(time.Time, Batch) (Outcome, time.Duration) {
			if paused {
				paused = false
				return Outcome{Kind: Throttle, Status: 429}, 10 * time.Minute
			}
			return Outcome{Kind: Delivered, Status: 200}, 0
		})
		h.d.MaxPending = bound
		h.arrive(0, 10) // the first request meets the pause
		h.runUntil(h.now.Add(time.Second))
		for i := 1; i <= 50; i++ { // 250 more arrive during it
			h.arrive(i*10, 5)
			h.runUntil(h.now.Add(time.Second))
		}
		h.runUntil(h.now.Add(time.Hour))
		want := 260
		if bound > 0 {
			want = bound
			if h.tally.overflowed != 160 || len(h.tally.dead) != 160 || !strings.Contains(h.tally.reasons[0], "max_pending_impressions") {
				t.Errorf("bound %d: %d overflowed, %d dead-lettered (%v); want 160", bound, h.tally.overflowed, len(h.tally.dead), h.tally.reasons)
			}
		} else if len(h.tally.dead) != 0 {
			t.Errorf("no bound: %d dead-lettered", len(h.tally.dead))
		}
		if len(h.tally.delivered) != want || len(h.calls.events) != want {
			t.Errorf("bound %d: %d delivered, want %d", bound, len(h.tally.delivered), want)
		}
	}
}

// A destination down for 90 minutes, answering 500 to everything, behind a backlog of
// 200 batches, with a webhook's retry schedule (retries hours apart): after five
// failures in a row only probes go out, one at a time, at most one every 15 s, so the
// destination sees a few a minute rather than the backlog again and again; the
// batches never sent spend none of their retries; once it answers, the batches whose
// retries were hours away are due at once, the rest follows, each impression is
// delivered once and none is dead-lettered, and the limiter starts again carefully
// (one request on the wire at a time) at the rate it had before the outage.
func TestOutageOpensCircuit(t *testing.T) {
	const n = 2000
	var back time.Time
	perMinute := map[int]int{} // requests during the outage, by minute
	h := newHarness(Config{RequestsPerSecond: 50, MaxInFlight: 4, MaxBatchEvents: 10, RetrySchedule: webhookSchedule},
		func(now time.Time, b Batch) (Outcome, time.Duration) {
			if now.Before(back) {
				perMinute[int(now.Sub(back.Add(-90*time.Minute))/time.Minute)]++
				return Outcome{Kind: Retry, Status: 500, Reason: "HTTP 500 Internal Server Error"}, 0
			}
			return Outcome{Kind: Delivered, Status: 200}, 0
		})
	back = h.now.Add(90 * time.Minute)
	h.arrive(0, n)
	h.runUntil(back)
	during := 0
	for m, k := range perMinute {
		during += k
		if m > 0 && k > 5 {
			t.Errorf("minute %d of the outage: %d requests; want at most 5 (probes at least 15 s apart)", m, k)
		}
	}
	if open, _ := h.circuit(); !open {
		t.Error("the circuit is not open after 90 minutes of 500s")
	}
	if r := h.d.lim.current(); r != 50 {
		t.Errorf("rate %v/s during the outage; want the 50/s it had: failures say nothing of the rate", r)
	}
	h.runUntil(back.Add(5 * time.Minute))
	if got := len(h.tally.delivered); got != n || len(h.tally.dead) != 0 {
		t.Errorf("5 minutes after the outage: %d of %d impressions delivered, %d dead-lettered (%v)", got, n, len(h.tally.dead), h.tally.reasons)
	}
	for k, c := range h.calls.events {
		if c != 1 {
			t.Errorf("%s accepted %d times", k, c)
		}
	}
	if open, careful := h.circuit(); open || !careful.After(back) {
		t.Errorf("after the outage: circuit open %v, careful until %v; want closed, and careful after %v", open, careful, back)
	}
	t.Logf("%d requests during the outage", during)
}

// A destination that answers 413 to requests of more than 100 events: the batches
// that drew one are split, and later requests carry at most half of what was refused,
// so only the first batch's requests draw 413s, not every batch's.
func TestTooLargeLearnt(t *testing.T) {
	const n = 20000
	var tooLarge, late int
	var first time.Time
	h := newHarness(Config{RequestsPerSecond: 1000, MaxInFlight: 4}, func(now time.Time, b Batch) (Outcome, time.Duration) {
		if len(b.Imps) > 100 {
			tooLarge++
			if now.Sub(first) > 10*time.Second {
				late++
			}
			return Outcome{Kind: Split, Status: 413, Reason: "HTTP 413"}, 0
		}
		return Outcome{Kind: Delivered, Status: 200}, 0
	})
	first = h.now
	for i := range 20 { // 1,000 impressions every 10 s: a full request each time
		h.arrive(i*n/20, n/20)
		h.runUntil(h.now.Add(10 * time.Second))
	}
	h.runUntil(h.now.Add(time.Minute))
	h.exactlyOnce(t, n)
	if late > 0 || tooLarge > 15 {
		t.Errorf("%d requests answered 413, %d of them after the first batch's; want only the first batch's (≤ 15)", tooLarge, late)
	}
	if c := h.d.lim.maxEvents(1000); c > 100 || c < 50 {
		t.Errorf("learnt %d events a request; want 50–100", c)
	}
}

// One user sends four times what the destination takes per user (Amplitude: a 429
// naming the user, over 60 events a second averaged over 30 s), beside 200 other
// users a second: the user's events are held, then paced at the rate the answer
// names, while the others' flow at the destination's rate, delayed by no hold; the
// destination answers 429 a few times, not at every request that carries the user.
func TestThrottledUserPacedAlone(t *testing.T) {
	const seconds, perSecond = 20, 200
	var hot []time.Time // accepted events of the hot user, for the 30 s average
	arrived, delivered := map[uuid.UUID]time.Time{}, map[uuid.UUID]int{}
	var throttled int
	var worstOther time.Duration
	h := newHarness(Config{RequestsPerSecond: 20, MaxInFlight: 4, MaxBatchEvents: 100}, func(now time.Time, b Batch) (Outcome, time.Duration) {
		var held []int
		recent := 0
		for _, at := range hot {
			if now.Sub(at) < 30*time.Second {
				recent++
			}
		}
		for i := range b.Imps {
			if b.Imps[i].Key == "hot" {
				held = append(held, i)
			}
		}
		if recent+len(held) > 60*30 {
			throttled++
			return Outcome{Kind: Partial, Status: 429, Held: held, HoldFor: 15 * time.Second, Resend: true,
				HeldKeys: map[string]time.Duration{"hot": 15 * time.Second}, KeyRate: 50}, 0
		}
		for i := range b.Imps {
			delivered[b.Imps[i].ID]++
			if b.Imps[i].Key == "hot" {
				hot = append(hot, now)
			} else if d := now.Sub(arrived[b.Imps[i].ID]); d > worstOther {
				worstOther = d
			}
		}
		return Outcome{Kind: Delivered, Status: 200}, 0
	})
	for s := range seconds {
		in := &arrival{}
		for i := range 2 * perSecond {
			key := "hot"
			if i%2 == 1 {
				key = fmt.Sprintf("user-%d-%d", s, i)
			}
			imp := impression.Impression{Tenant: "acme", Key: key, Time: h.now.UnixMilli() + int64(i)}
			imp.ID = imp.ComputeID()
			arrived[imp.ID] = h.now
			in.imps = append(in.imps, imp)
		}
		h.drain(in)
		h.runUntil(h.now.Add(time.Second))
	}
	h.runUntil(h.now.Add(5 * time.Minute))
	if len(delivered) != len(arrived) || len(h.tally.dead) != 0 {
		t.Fatalf("%d of %d impressions delivered, %d dead-lettered", len(delivered), len(arrived), len(h.tally.dead))
	}
	for id, n := range delivered {
		if n != 1 {
			t.Fatalf("%s delivered %d times", id, n)
		}
	}
	if throttled > 5 {
		t.Errorf("%d requests answered 429; want a few: the user's events are held, then paced", throttled)
	}
	if worstOther > 5*time.Second {
		t.Errorf("other users' events waited up to %v; want ≤ 5 s: the user's hold holds only the user", worstOther)
	}
	t.Logf("%d answers 429; other users' longest wait %v; the hot user's last event at +%v", throttled, worstOther, hot[len(hot)-1].Sub(time.Unix(1_800_000_000, 0)).Round(time.Second))
}

// webhookSchedule is Svix's retry schedule.
var webhookSchedule = []configkit.Duration{configkit.Duration(5 * time.Second), configkit.Duration(5 * time.Minute),
	configkit.Duration(30 * time.Minute), configkit.Duration(2 * time.Hour), configkit.Duration(5 * time.Hour),
	configkit.Duration(10 * time.Hour)}

// circuit returns whether the limiter's circuit is open, and until when it sends one
// request at a time.
func (h *harness) circuit() (open bool, careful time.Time) {
	h.d.lim.mu.Lock()
	defer h.d.lim.mu.Unlock()
	return h.d.lim.open, h.d.lim.careful
}
