package delivery

import (
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/outflow/outflow/internal/impression"
)

// limiter paces one destination, process-wide: every bundle and job sending there
// shares it. Like Benthos's rate limits it answers "wait d" rather than sleeping; the
// caller decides whether to schedule a request (up to a second ahead) or park the
// batch behind a timer. Separately, it bounds the requests on the wire: a scheduled
// request waits for one of max_in_flight places (enter), then checks the pause last.
//
// The rate adapts (AIMD): it starts at the ceiling (delivery.requests_per_second), is
// cut on 429/503 and on rising latency, and creeps back up by ~2% a second while the
// destination keeps accepting and the limiter is what holds deliveries back. A cut
// goes to 95% of the rate the destination was seen to accept over the last seconds,
// so the rate settles just under the destination's real limit instead of see-sawing
// between half and all of it. Retry-After, on any answer, pauses the destination.
// Failed answers in a row open a circuit (see circuit): a destination that is down is
// only probed.
type limiter struct {
	mu          sync.Mutex
	wire        *sync.Cond    // signalled when a request leaves the wire
	pace        *rate.Limiter // the actuator
	rate        float64       // current requests per second
	ceiling     float64
	floor       float64
	maxInFlight int
	scheduled   int // requests scheduled and not yet answered or cancelled
	sending     int // requests on the wire

	pausedUntil time.Time
	// careful is when the destination last pushed back (429/503, Retry-After) plus
	// carefulFor, or the first request plus carefulFor: until then one request at a
	// time, so none can leave between a Retry-After being sent and its being read,
	// while the destination's limit is not yet known.
	careful time.Time
	started bool
	gone    string // non-empty once the destination answered 410: why

	accepted  []time.Time // times of recent accepted requests, for the cut
	limited   bool        // a request had to wait for the pace since the last raise
	lastRaise time.Time
	lastCut   time.Time
	// acceptedSinceCut says the destination accepted a request since the last cut.
	acceptedSinceCut bool
	// throttledAt is the rate when the destination last refused for rate (0: never).
	throttledAt float64
	rtt         float64 // EWMA of latency, seconds
	samples     int

	// The circuit: after openAfter failed answers in a row (5xx, timeouts, connection
	// errors, 502/503/504 without Retry-After) the destination counts as down, and only one
	// request at a time goes out, a probe, each after a longer wait (probeWait). What
	// was never sent waits in the queue without spending its retry budget; the first
	// answer that is not a failure closes the circuit.
	failures  int
	streak    float64 // the rate when the failures in a row began
	open      bool
	openUntil time.Time // no probe before
	probing   bool      // a probe is scheduled or on the wire
	opened    int       // probes failed since the circuit opened, plus one
	recovered time.Time // when the circuit last closed

	// keys are the impression keys (users, devices) the destination throttled of late
	// (Outcome.HeldKeys): held, then paced, each on its own.
	keys map[string]*keyPace

	// batchCap is the most events a request may carry, learnt from the destination's
	// 413s (0: the configured limit).
	batchCap int
}

const (
	raiseEvery   = time.Second
	raiseShare   = 0.02
	cutFallback  = 0.5 // without enough history
	cutToShare   = 0.95
	cutMaxShare  = 0.9
	history      = 10 * time.Second
	minHistory   = 3 * time.Second
	slowCutShare = 0.9
	slowCutEvery = 5 * time.Second
	carefulFor   = 30 * time.Second
	belowRefused = 0.97             // of the rate last refused, the highest to go back to
	probeAfter   = 60 * time.Second // without a refusal: try above it again

	openAfter  = 5               // failed answers in a row that open the circuit
	probeFirst = 5 * time.Second // the wait before the first probe, doubled after each failed one
	// probeWaitMax caps the wait between probes: at most one probe every 15–30 s
	// however long the outage, so a destination that comes back is found within 30 s.
	probeWaitMax = 30 * time.Second
)

// probeWait is the wait before probe n (1, 2, …) of an open circuit: exponential,
// capped, with jitter so that destinations down together are not probed together.
func probeWait(n int) time.Duration {
	d := probeWaitMax
	if n < 20 {
		d = min(probeWaitMax, probeFirst<<(n-1))
	}
	return d/2 + rand.N(d/2+1)
}

func newLimiter(p Config) *limiter {
	r := p.RequestsPerSecond
	l := &limiter{rate: r, ceiling: r, floor: min(r, p.MinRequestsPerSecond), maxInFlight: max(1, p.MaxInFlight)}
	l.pace = rate.NewLimiter(rate.Limit(l.rate), burst(l.rate))
	l.wire = sync.NewCond(&l.mu)
	return l
}

// burst lets half a second of requests go at once, e.g. after a pause.
func burst(r float64) int { return max(1, int(math.Ceil(r/2))) }

// acquire asks to schedule one request now or within maxWait. ok means it may go at
// `at` (through enter, and release it with done or cancel); otherwise wait is how long
// until asking again makes sense.
func (l *limiter) acquire(now time.Time, maxWait time.Duration) (at time.Time, wait time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started {
		l.started, l.careful = true, now.Add(carefulFor)
	}
	if wait, held := l.held(now); held {
		return time.Time{}, wait, false
	}
	r := l.pace.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if !r.OK() || d > maxWait {
		r.CancelAt(now)
		l.limited = true
		return time.Time{}, d, false
	}
	if d > 0 {
		l.limited = true
	}
	l.scheduled++
	if l.open {
		l.probing = true
	}
	return now.Add(d), 0, true
}

// maxScheduled bounds the requests scheduled ahead: those on the wire, and about a
// second's worth at the current rate.
func (l *limiter) maxScheduled() int {
	return l.maxInFlight + int(math.Ceil(l.rate*maxSchedule.Seconds()))
}

// answerWait is how long until a request in flight is likely answered, freeing a slot.
func (l *limiter) answerWait() time.Duration {
	return min(maxPoll, max(minPoll, time.Duration(l.rtt*float64(time.Second)/2)))
}

// blocked reports, without taking a slot, whether a request could not be scheduled
// now, and how long until asking again makes sense.
func (l *limiter) blocked(now time.Time) (wait time.Duration, blocked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if wait, held := l.held(now); held {
		return wait, true
	}
	if tokens := l.pace.TokensAt(now); tokens < 1 {
		return time.Duration((1 - tokens) / l.rate * float64(time.Second)), true
	}
	return 0, false
}

// held reports what keeps a request from being scheduled besides the pace (which
// acquire reserves): the destination gone or paused, or a second's worth scheduled.
func (l *limiter) held(now time.Time) (wait time.Duration, held bool) {
	switch {
	case l.gone != "":
		return minPoll, true
	case now.Before(l.pausedUntil):
		return l.pausedUntil.Sub(now), true
	case l.open && now.Before(l.openUntil):
		return l.openUntil.Sub(now), true
	case l.open && (l.probing || l.scheduled > 0):
		return l.answerWait(), true // the probe's answer decides
	case l.scheduled >= l.maxScheduled():
		return l.answerWait(), true
	}
	return 0, false
}

// enter waits for a place on the wire: max_in_flight, or one while the destination's
// limit is not yet known or it pushed back lately (careful), so that none is on its
// way when a Retry-After is announced. It reports whether the request may leave: not
// once the destination is paused or gone (then cancel it).
func (l *limiter) enter() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		now := time.Now()
		if _, paused := l.heldAt(now); paused {
			return false
		}
		limit := l.maxInFlight
		if now.Before(l.careful) {
			limit = 1
		}
		if l.sending < limit {
			l.sending++
			return true
		}
		l.wire.Wait()
	}
}

// pausedAt reports whether a request scheduled at t must not go out, and until when:
// a Retry-After came in, or the circuit opened, while it waited for its slot.
func (l *limiter) pausedAt(t time.Time) (until time.Time, paused bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heldAt(t)
}

// heldAt is pausedAt with l.mu held. The circuit's probe is scheduled at or after
// openUntil; what was scheduled before it does not go out.
func (l *limiter) heldAt(t time.Time) (until time.Time, paused bool) {
	until = l.pausedUntil
	if l.open && l.openUntil.After(until) {
		until = l.openUntil
	}
	return until, t.Before(until) || l.gone != ""
}

// exit releases a request that entered but was not sent.
func (l *limiter) exit() {
	l.mu.Lock()
	l.scheduled--
	l.sending--
	l.probing = false
	l.wire.Broadcast()
	l.mu.Unlock()
}

// cancel releases a scheduled request that was not sent.
func (l *limiter) cancel() {
	l.mu.Lock()
	l.scheduled--
	l.probing = false // a probe not sent: the next request is one
	l.mu.Unlock()
}

// done releases a request that entered, and learns from its answer.
func (l *limiter) done(now time.Time, o Outcome, retryAfter, latency time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.scheduled--
	l.sending--
	l.wire.Broadcast()
	if retryAfter > 0 && now.Add(retryAfter).After(l.pausedUntil) {
		l.pausedUntil = now.Add(retryAfter)
	}
	if retryAfter > 0 || o.Kind == Throttle {
		// One request at a time from the end of the pause on, not from its start, so
		// that what waited for it does not leave all at once.
		l.careful = laterOf(now, l.pausedUntil).Add(carefulFor)
	}
	if o.Kind == Gone && l.gone == "" {
		l.gone = o.Reason
	}
	l.holdKeys(now, o, retryAfter)
	failed := o.Kind == Retry || (o.Kind == Throttle && pushBack(o.Status) && retryAfter == 0)
	if l.circuit(now, failed) {
		return // a destination that is down says nothing of its rate
	}
	slow := l.observe(latency)
	switch {
	case o.Kind == Throttle && retryAfter > 0 && !l.acceptedSinceCut && !l.lastCut.IsZero():
		// Refused again with a Retry-After and nothing accepted since the last cut: a
		// destination that is down, not one sent too much. Its pauses hold the requests
		// back; cutting the rate at each probe would leave it at the floor, and slow
		// for minutes, once it is back.
	case o.Kind == Throttle:
		l.cut(now)
	case o.Kind == Partial && o.Status == http.StatusTooManyRequests:
		// Push-back for the items it held, never a success; one that held every item
		// lowers the rate like any 429 (CONTRACT §4). The keys it named are held and
		// paced on their own (holdKeys).
		if o.heldAll {
			l.cut(now)
		}
	case slow && now.Sub(l.lastCut) >= slowCutEvery:
		l.setRate(now, l.rate*slowCutShare)
		l.lastCut = now
	case o.Kind == Delivered || o.Kind == Partial:
		l.acceptedSinceCut = true
		l.accepted = append(l.accepted, now)
		l.trim(now)
		l.raise(now)
	}
}

// circuit counts an answer, failed or not, opening the circuit after openAfter
// failures in a row and closing it at the first answer that is not one. It reports
// whether the answer came while the circuit was open, or opened it.
func (l *limiter) circuit(now time.Time, failed bool) bool {
	if !failed {
		l.failures = 0
		if !l.open {
			return false
		}
		// Back: one request at a time for a while, then the rate it had.
		l.open, l.probing, l.opened = false, false, 0
		l.careful, l.recovered = laterOf(now, l.pausedUntil).Add(carefulFor), now
		return true
	}
	l.failures++
	if l.failures == 1 {
		l.streak = l.rate
	}
	switch {
	case l.open && l.probing:
		l.probing = false
		l.opened++
		l.openUntil = now.Add(probeWait(l.opened))
	case l.open:
		// A request that left before the circuit opened.
	case l.failures >= openAfter:
		l.open, l.opened = true, 1
		l.openUntil = now.Add(probeWait(1))
		// The 503s that opened it said the destination was down, not that it was sent
		// too much: it comes back at the rate it had.
		l.setRate(now, l.streak)
	default:
		return false
	}
	return true
}

// keyPace is how one throttled key may be sent: not before until, then at its pace.
type keyPace struct {
	until time.Time
	pace  *rate.Limiter
}

// keyMemory is how long a key is remembered once its hold ended and its pace is idle.
const keyMemory = time.Minute

// holdKeys holds the keys o names for their time (at least retryAfter), and paces
// them after at o.KeyRate events a second each.
func (l *limiter) holdKeys(now time.Time, o Outcome, retryAfter time.Duration) {
	if len(o.HeldKeys) == 0 {
		return
	}
	if l.keys == nil {
		l.keys = map[string]*keyPace{}
	}
	r := o.KeyRate
	if r <= 0 {
		r = 1
	}
	for key, hold := range o.HeldKeys {
		k := l.keys[key]
		if k == nil {
			k = &keyPace{pace: rate.NewLimiter(rate.Limit(r), max(1, int(math.Ceil(r))))}
			l.keys[key] = k
		}
		if until := now.Add(max(hold, retryAfter)); until.After(k.until) {
			k.until = until
		}
	}
}

// admit splits imps into those that may be sent now and those whose key the
// destination throttles: held until their hold ends, then paced at the key's rate.
func (l *limiter) admit(now time.Time, imps []impression.Impression) (ok, wait []impression.Impression) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.keys) == 0 {
		return imps, nil
	}
	for i := range imps {
		k := l.keys[imps[i].Key]
		if k != nil && (now.Before(k.until) || !k.pace.AllowN(now, 1)) {
			wait = append(wait, imps[i])
			continue
		}
		ok = append(ok, imps[i])
	}
	for key, k := range l.keys {
		if now.Sub(k.until) > keyMemory && k.pace.TokensAt(now) >= float64(k.pace.Burst()) {
			delete(l.keys, key)
		}
	}
	return ok, wait
}

// retryAfterUntil is the end of the destination's latest Retry-After.
func (l *limiter) retryAfterUntil() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pausedUntil
}

// recoveredAt is when the circuit last closed (zero: never).
func (l *limiter) recoveredAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.recovered
}

// shrink learns from a 413 to a request of n events: no request carries more than
// half of them from now on.
func (l *limiter) shrink(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := max(1, n/2); l.batchCap == 0 || c < l.batchCap {
		l.batchCap = c
	}
}

// maxEvents narrows a request's event limit to what the destination was seen to take.
func (l *limiter) maxEvents(limit int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.batchCap > 0 && (limit == 0 || l.batchCap < limit) {
		return l.batchCap
	}
	return limit
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// isDown reports whether the circuit is open.
func (l *limiter) isDown() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// observe folds a latency into the average and says whether it was unusually slow.
func (l *limiter) observe(latency time.Duration) bool {
	s := latency.Seconds()
	slow := l.samples >= 20 && s > 2*l.rtt && s > l.rtt+0.2
	if l.samples == 0 {
		l.rtt = s
	} else {
		l.rtt += 0.1 * (s - l.rtt)
	}
	l.samples++
	return slow
}

func (l *limiter) cut(now time.Time) {
	if now.Sub(l.lastCut) < time.Second { // one cut per congestion event
		return
	}
	l.lastCut, l.acceptedSinceCut = now, false
	l.throttledAt = l.rate
	target := l.rate * cutFallback
	if seen := l.acceptedRate(now); seen > 0 {
		target = max(target, cutToShare*seen)
	}
	l.setRate(now, min(target, l.rate*cutMaxShare))
}

// acceptedRate is the request rate the destination accepted over the last seconds,
// or 0 without enough history.
func (l *limiter) acceptedRate(now time.Time) float64 {
	l.trim(now)
	if len(l.accepted) < 5 {
		return 0
	}
	span := now.Sub(l.accepted[0])
	if span < minHistory {
		return 0
	}
	return float64(len(l.accepted)) / span.Seconds()
}

// trim forgets accepted requests older than the history the cut looks at.
func (l *limiter) trim(now time.Time) {
	i := 0
	for i < len(l.accepted) && now.Sub(l.accepted[i]) > history {
		i++
	}
	if i > 0 {
		l.accepted = append(l.accepted[:0], l.accepted[i:]...)
	}
}

func (l *limiter) raise(now time.Time) {
	if !l.limited || now.Sub(l.lastRaise) < raiseEvery || now.Sub(l.lastCut) < raiseEvery || l.rate >= l.ceiling {
		return
	}
	l.lastRaise, l.limited = now, false
	r := l.rate + max(0.05, l.rate*raiseShare)
	// Back up to just under the rate that was last refused, and past it only after a
	// quiet spell: a destination held right at its limit refuses every request that
	// arrives a moment early, and each refusal costs a Retry-After.
	if l.throttledAt > 0 && now.Sub(l.lastCut) < probeAfter {
		r = min(r, max(l.rate, l.throttledAt*belowRefused))
	}
	l.setRate(now, r)
}

func (l *limiter) setRate(now time.Time, r float64) {
	l.rate = min(l.ceiling, max(l.floor, r))
	l.pace.SetLimitAt(now, rate.Limit(l.rate))
	l.pace.SetBurstAt(now, burst(l.rate))
}

// current returns the rate now, in requests per second.
func (l *limiter) current() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rate
}

// goneReason is why the destination stopped accepting anything, or "".
func (l *limiter) goneReason() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gone
}

// limiters is the worker's registry: one limiter per destination, shared by every job
// and bundle of the process that sends there (Target.destKey), so a Retry-After or 410
// seen by one pauses or stops all. Two targets with different settings never share one.
var limiters sync.Map // string -> *limiter

func limiterFor(key string, p Config) *limiter {
	if l, ok := limiters.Load(key); ok {
		return l.(*limiter)
	}
	l, _ := limiters.LoadOrStore(key, newLimiter(p))
	return l.(*limiter)
}
