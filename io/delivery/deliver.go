package delivery

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/state"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/timers"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/outflow/outflow/internal/ack"
	"github.com/outflow/outflow/internal/delaywatch"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/internal/oplog"
	"github.com/outflow/outflow/internal/progress"
	"github.com/outflow/outflow/io/deadletterio"
)

func init() {
	register.DoFn6x1[context.Context, state.Provider, timers.Provider, string, Batch, func(deadletterio.Record), error](&deliverFn{})
	register.Emitter1[deadletterio.Record]()
}

// Target is one integration as the delivery core sees it.
type Target struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Policy Config `json:"policy"` // the delivery section, defaults filled in
	// Settings is the destination's own configuration section, as JSON.
	Settings     json.RawMessage `json:"settings"`
	AllowPrivate bool            `json:"allow_private"`
	// Progress is the job counting what this integration delivered (package progress).
	Progress string `json:"progress,omitempty"`
	// AlertDelay is the delivery delay above which to alert; 0 never alerts.
	AlertDelay time.Duration `json:"alert_delay,omitempty"`
}

const (
	// pollInterval is how soon a key with requests in flight looks for their answers.
	pollInterval = 25 * time.Millisecond
	// maxSchedule is how far ahead a request may be scheduled; a longer wait parks the
	// batch behind the timer instead.
	maxSchedule = time.Second
	// Exponential backoff with jitter between retries of one batch.
	backoffBase = time.Second
	backoffMax  = 5 * time.Minute
)

// deliverFn sends batches, keyed by integration and shard, without ever waiting on the
// network in the bundle: requests run in the background (at most max_in_flight per
// destination), batches wait in state for their answer, their retry time or the
// destination's Retry-After, and the one processing-time timer brings the key back.
// A throttled or slow destination therefore holds no bundle, and no other key waits
// for it.
type deliverFn struct {
	Targets []Target `json:"targets"`

	Pending state.Map[string, Batch] // by batch id
	Index   state.Value[[]byte]      // encoded []entry: the pending ids and their times
	Wake    timers.ProcessingTime

	dests map[string]*dest
}

// dest is what a worker holds for one integration.
type dest struct {
	Target
	d       Destination
	lim     *limiter
	client  *http.Client
	limiter string // registry key, also of in-flight calls

	delivered, deadLettered, requests, throttled, retries, bytes metricname.Counter
	pending                                                      metricname.Counter // impressions buffered, up and down
	rate                                                         beam.Gauge
	delay                                                        *delaywatch.Watch
}

func newDeliverFn(targets []Target) *deliverFn {
	return &deliverFn{Targets: targets,
		Pending: state.MakeMapState[string, Batch]("pending"),
		Index:   state.MakeValueState[[]byte]("index"),
		Wake:    timers.InProcessingTime("wake"),
	}
}

func (fn *deliverFn) Setup() error {
	fn.dests = map[string]*dest{}
	for _, t := range fn.Targets {
		d, err := NewDestination(t.Kind, t.Settings)
		if err != nil {
			return fmt.Errorf("delivery: integration %q: %w", t.ID, err)
		}
		key := t.ID + "\x00" + string(mustJSON(t))
		fn.dests[t.ID] = &dest{Target: t, d: d, lim: limiterFor(key, t.Policy), limiter: key,
			client:       newClient(t.Policy.MaxInFlight, t.AllowPrivate),
			delivered:    metricname.NewCounter(t.ID, metricname.Delivered),
			deadLettered: metricname.NewCounter(t.ID, metricname.DeadLettered),
			requests:     metricname.NewCounter(t.ID, metricname.Requests),
			throttled:    metricname.NewCounter(t.ID, metricname.Throttled),
			retries:      metricname.NewCounter(t.ID, metricname.Retries),
			pending:      metricname.NewCounter(t.ID, metricname.Pending),
			bytes:        metricname.NewCounter(t.ID, metricname.Bytes),
			delay:        delaywatch.New(t.ID, t.AlertDelay),
			rate:         beam.NewGauge(t.ID, metricname.RateLimit),
		}
	}
	return nil
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func (fn *deliverFn) ProcessElement(ctx context.Context, sp state.Provider, tp timers.Provider, key string, b Batch, dead func(deadletterio.Record)) error {
	idx, err := fn.readIndex(sp)
	if err != nil {
		return err
	}
	if err := fn.Pending.Put(sp, b.ID, b); err != nil {
		return err
	}
	if d := fn.dests[b.Integration]; d != nil {
		d.pending.Inc(ctx, int64(len(b.Imps)))
	}
	idx = append(idx, entry{ID: b.ID, NotBefore: b.NotBefore})
	return fn.drain(ctx, sp, tp, idx, dead)
}

func (fn *deliverFn) OnTimer(ctx context.Context, sp state.Provider, tp timers.Provider, key string, _ timers.Context, dead func(deadletterio.Record)) error {
	idx, err := fn.readIndex(sp)
	if err != nil {
		return err
	}
	return fn.drain(ctx, sp, tp, idx, dead)
}

// drain collects the answers that came in, starts the requests that may go now, and
// sets the timer for whatever is left.
func (fn *deliverFn) drain(ctx context.Context, sp state.Provider, tp timers.Provider, idx []entry, dead func(deadletterio.Record)) error {
	now := time.Now()
	st := &drainState{fn: fn, ctx: ctx, sp: sp, dead: dead, now: now}

	// Answers first: they change what is pending.
	for _, e := range idx {
		c := inFlight(e.ID)
		if c == nil || !c.finished() {
			st.keep(e)
			continue
		}
		forget(e.ID)
		if err := st.apply(e, c); err != nil {
			return err
		}
	}

	// Then new requests, oldest first, while the destinations allow.
	slices.SortFunc(st.idx, func(a, b entry) int {
		return cmp.Or(cmp.Compare(a.NotBefore, b.NotBefore), strings.Compare(a.ID, b.ID))
	})
	next := time.Time{}
	wakeAt := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	blocked := map[string]bool{} // destinations that said "not now" in this pass
	for i := range st.idx {
		e := &st.idx[i]
		if inFlight(e.ID) != nil {
			wakeAt(now.Add(pollInterval))
			continue
		}
		if e.NotBefore > now.UnixMilli() {
			wakeAt(time.UnixMilli(e.NotBefore))
			continue
		}
		b, ok, err := fn.Pending.Get(sp, e.ID)
		if err != nil {
			return err
		}
		if !ok {
			e.ID = "" // lost track of it: drop the entry
			continue
		}
		d := fn.dests[b.Integration]
		if d == nil {
			return fmt.Errorf("delivery: batch %s of unknown integration %q", b.ID, b.Integration)
		}
		if reason := d.lim.goneReason(); reason != "" {
			st.deadLetter(d, &b, b.Status, "the endpoint is gone: "+reason)
			fn.Pending.Remove(sp, e.ID)
			e.ID = ""
			continue
		}
		if blocked[b.Integration] {
			wakeAt(now.Add(pollInterval))
			continue
		}
		at, wait, ok := d.lim.acquire(now, maxSchedule)
		if !ok {
			blocked[b.Integration] = true
			if wait <= 0 {
				wait = pollInterval
			}
			wakeAt(now.Add(wait))
			continue
		}
		start(d, b, at)
		wakeAt(now.Add(pollInterval))
	}
	for _, d := range fn.dests {
		d.rate.Set(ctx, int64(d.lim.current()*1000))
	}

	idx = slices.DeleteFunc(st.idx, func(e entry) bool { return e.ID == "" })
	if err := fn.writeIndex(sp, idx); err != nil {
		return err
	}
	if len(idx) > 0 {
		if next.IsZero() || next.Before(now) {
			next = now
		}
		fn.Wake.Set(tp, next)
	}
	return nil
}

// drainState is one pass of drain over a key.
type drainState struct {
	fn   *deliverFn
	ctx  context.Context
	sp   state.Provider
	dead func(deadletterio.Record)
	now  time.Time
	idx  []entry
}

func (st *drainState) keep(e entry) { st.idx = append(st.idx, e) }

// put stores a batch that stays pending.
func (st *drainState) put(b Batch) error {
	st.keep(entry{ID: b.ID, NotBefore: b.NotBefore})
	return st.fn.Pending.Put(st.sp, b.ID, b)
}

// apply acts on the answer to a batch's request.
func (st *drainState) apply(e entry, c *call) error {
	sp, fn := st.sp, st.fn
	b, ok, err := fn.Pending.Get(sp, e.ID)
	if err != nil || !ok {
		return err
	}
	if err := fn.Pending.Remove(sp, e.ID); err != nil {
		return err
	}
	d := fn.dests[b.Integration]
	if c.notSent { // the destination was paused while the request waited for its slot
		until, _ := d.lim.pausedAt(st.now)
		b.NotBefore = until.UnixMilli()
		return st.put(b)
	}
	d.requests.Inc(st.ctx, 1)
	d.bytes.Inc(st.ctx, c.bytes)
	if b.Attempts > 0 {
		d.retries.Inc(st.ctx, 1)
	}
	if c.resp.Status == http.StatusTooManyRequests || c.resp.Status == http.StatusServiceUnavailable {
		d.throttled.Inc(st.ctx, 1)
	}
	b.Attempts++
	if b.FirstTry == 0 {
		b.FirstTry = c.sentAt.UnixMilli()
	}
	o := c.outcome
	b.Status, b.Reason = o.Status, o.Reason
	pause := c.retryAfter

	switch o.Kind {
	case Delivered:
		st.delivered(d, b.Imps)
		return nil
	case Retry, Throttle:
		return st.retry(d, b, pause)
	case Split:
		if len(b.Imps) == 1 {
			st.deadLetter(d, &b, o.Status, "the destination refuses even a single event as too large: "+o.Reason)
			return nil
		}
		first, second := b.halves()
		first.NotBefore, second.NotBefore = 0, 0
		if err := st.put(first); err != nil {
			return err
		}
		return st.put(second)
	case Partial:
		return st.partial(d, b, o, pause)
	case Gone:
		oplog.L().ErrorContext(st.ctx, "destination is gone (HTTP 410): its impressions are dead-lettered; fix or remove the integration, then replay",
			"integration", d.ID, "reason", o.Reason)
		st.deadLetter(d, &b, o.Status, "the endpoint is gone: "+o.Reason)
		return nil
	}
	st.deadLetter(d, &b, o.Status, o.Reason)
	return nil
}

// retry schedules b again after its backoff, or Retry-After if longer, unless its
// retries have run out.
func (st *drainState) retry(d *dest, b Batch, pause time.Duration) error {
	if limit := d.Policy.MaxRetryDuration.D(); st.now.Sub(time.UnixMilli(b.FirstTry)) >= limit {
		st.deadLetter(d, &b, b.Status, fmt.Sprintf("gave up after %d attempts over %v: %s",
			b.Attempts, st.now.Sub(time.UnixMilli(b.FirstTry)).Round(time.Second), b.Reason))
		return nil
	}
	b.NotBefore = st.now.Add(max(backoff(b.Attempts), pause)).UnixMilli()
	return st.put(b)
}

// backoff is the wait before attempt n+1: exponential, with jitter so that batches
// failed together do not retry together.
func backoff(n int) time.Duration {
	d := backoffMax
	if n < 20 {
		d = min(backoffMax, backoffBase<<(n-1))
	}
	return d/2 + rand.N(d/2+1)
}

// partial handles an answer about some items: held ones wait, rejected ones are
// dead-lettered, the rest are delivered or resent.
func (st *drainState) partial(d *dest, b Batch, o Outcome, pause time.Duration) error {
	var held, rejected, rest []int
	isHeld, isRejected := map[int]bool{}, map[int]bool{}
	for _, i := range o.Held {
		if i >= 0 && i < len(b.Imps) {
			isHeld[i] = true
		}
	}
	for _, i := range o.Rejected {
		if i >= 0 && i < len(b.Imps) && !isHeld[i] {
			isRejected[i] = true
		}
	}
	for i := range b.Imps {
		switch {
		case isHeld[i]:
			held = append(held, i)
		case isRejected[i]:
			rejected = append(rejected, i)
		default:
			rest = append(rest, i)
		}
	}
	if len(rejected) > 0 {
		r := b.part(".x", rejected)
		st.deadLetter(d, &r, o.Status, o.Reason)
	}
	if len(held) > 0 {
		h := b.part(".h", held)
		h.NotBefore = st.now.Add(max(o.HoldFor, pause)).UnixMilli()
		if err := st.put(h); err != nil {
			return err
		}
	}
	if len(rest) > 0 {
		r := b.part(".r", rest)
		if !o.Resend {
			st.delivered(d, r.Imps)
			return nil
		}
		r.NotBefore = st.now.Add(pause).UnixMilli()
		return st.put(r)
	}
	return nil
}

func (st *drainState) delivered(d *dest, imps []impression.Impression) {
	for i := range imps {
		ack.Done(imps[i].Origin)
	}
	d.delivered.Inc(st.ctx, int64(len(imps)))
	d.pending.Inc(st.ctx, -int64(len(imps)))
	progress.Add(progress.DoneKey(d.Progress, d.ID), int64(len(imps)))
	d.delay.Delivered(st.ctx, st.now, imps)
}

func (st *drainState) deadLetter(d *dest, b *Batch, status int, reason string) {
	d.deadLettered.Inc(st.ctx, int64(len(b.Imps)))
	d.pending.Inc(st.ctx, -int64(len(b.Imps)))
	progress.Add(progress.DoneKey(d.Progress, d.ID), int64(len(b.Imps)))
	for i := range b.Imps {
		st.dead(deadletterio.Undeliverable(d.ID, &b.Imps[i], status, b.Attempts, reason, b.ID))
	}
}

// call is one request in flight, owned by the inflight registry until drain collects it.
type call struct {
	done       chan struct{}
	notSent    bool
	resp       *Response
	outcome    Outcome
	retryAfter time.Duration
	sentAt     time.Time
	bytes      int64 // request body, as sent
}

func (c *call) finished() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

var inflight sync.Map // batch id -> *call

func inFlight(id string) *call {
	if c, ok := inflight.Load(id); ok {
		return c.(*call)
	}
	return nil
}

func forget(id string) { inflight.Delete(id) }

// start sends b in the background at time at (within maxSchedule). The call ends
// within the request timeout; drain collects its answer from the registry.
func start(d *dest, b Batch, at time.Time) {
	c := &call{done: make(chan struct{})}
	inflight.Store(b.ID, c)
	go func() {
		defer close(c.done)
		time.Sleep(time.Until(at))
		if _, paused := d.lim.pausedAt(time.Now()); paused {
			c.notSent = true
			d.lim.cancel()
			return
		}
		c.sentAt = time.Now()
		c.resp, c.bytes = d.request(b, c.sentAt)
		c.outcome = d.d.Classify(c.resp, &b)
		if c.resp.Header != nil {
			c.retryAfter = RetryAfter(c.resp.Header, time.Now())
		}
		d.lim.done(time.Now(), c.outcome, c.retryAfter, time.Since(c.sentAt))
	}()
}

// request encodes and sends one batch, and says how many body bytes it sent.
func (d *dest) request(b Batch, now time.Time) (*Response, int64) {
	items := make([][]byte, len(b.Imps))
	for i := range b.Imps {
		item, err := d.d.Item(&b.Imps[i])
		if err != nil {
			return &Response{Err: fmt.Errorf("encode: %w", err)}, 0
		}
		items[i] = item
	}
	req, err := d.d.Request(&b, items, now)
	if err != nil {
		return &Response{Err: fmt.Errorf("build request: %w", err)}, 0
	}
	return send(context.Background(), d.client, req, d.Policy.Timeout.D()), req.ContentLength
}

// entry is one pending batch in the index.
type entry struct {
	ID        string
	NotBefore int64 // Unix ms
}

var errCorruptIndex = errors.New("delivery: corrupt index")

func (fn *deliverFn) readIndex(sp state.Provider) ([]entry, error) {
	b, _, err := fn.Index.Read(sp)
	if err != nil {
		return nil, err
	}
	n, k := binary.Uvarint(b)
	if k < 0 || (k == 0 && len(b) > 0) {
		return nil, errCorruptIndex
	}
	b = b[max(k, 0):]
	idx := make([]entry, 0, n)
	for range n {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, errCorruptIndex
		}
		id := string(b[k : k+int(l)])
		b = b[k+int(l):]
		t, k := binary.Varint(b)
		if k <= 0 {
			return nil, errCorruptIndex
		}
		b = b[k:]
		idx = append(idx, entry{ID: id, NotBefore: t})
	}
	return idx, nil
}

func (fn *deliverFn) writeIndex(sp state.Provider, idx []entry) error {
	if len(idx) == 0 {
		return fn.Index.Clear(sp)
	}
	b := binary.AppendUvarint(nil, uint64(len(idx)))
	for _, e := range idx {
		b = binary.AppendUvarint(b, uint64(len(e.ID)))
		b = append(b, e.ID...)
		b = binary.AppendVarint(b, e.NotBefore)
	}
	return fn.Index.Write(sp, b)
}
