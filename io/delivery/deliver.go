package delivery

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

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
	"github.com/outflow/outflow/transforms/encode"
)

func init() {
	register.DoFn7x1[context.Context, state.Provider, timers.Provider, string, encode.Chunk,
		func(deadletterio.Record), func(int32, []byte), error](&deliverFn{})
	register.Emitter1[deadletterio.Record]()
	register.Emitter2[int32, []byte]()
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
	// MaxPending bounds the impressions held for the integration (a stream's
	// max_pending_impressions); 0 is no bound (batch jobs: their input is bounded).
	MaxPending int `json:"max_pending,omitempty"`
	// Track reports the copies delivered as marks (package ack): a stream's.
	Track bool `json:"track,omitempty"`
}

// destKey names the destination t sends to: every job and bundle of a worker with the
// same key shares its limiter and connections. Only what reaches the destination is
// in it, not which job counts the deliveries.
func (t *Target) destKey() string {
	b, _ := json.Marshal(struct {
		ID, Kind     string
		Policy       Config
		Settings     json.RawMessage
		AllowPrivate bool
	}{t.ID, t.Kind, t.Policy, t.Settings, t.AllowPrivate})
	return string(b)
}

const (
	// Impressions that fill no request go in a smaller one once no more came for
	// flushAfter, or the oldest waited flushMax: in a stream, shortly after their window
	// fired; in a backfill, when the input stops coming, not whenever it slows.
	flushAfter = time.Second
	flushMax   = 5 * time.Second
	// maxSchedule is how far ahead a request may be scheduled; a longer wait parks the
	// batch behind the timer instead.
	maxSchedule = time.Second
	// Answers are looked for soon after a request left, then less and less often.
	minPoll = 20 * time.Millisecond
	maxPoll = time.Second
	// compactAfter is how many dead queue elements may pile up before a rewrite.
	compactAfter = 64
)

// deliverFn sends one integration's impressions, keyed by its id, without ever
// waiting on the network in the bundle: impressions wait in state until the
// destination can take a request, then leave in full requests; requests run in the
// background (at most max_in_flight per destination); the one processing-time timer
// brings the key back for answers, retries, the destination's next slot or the end of
// its Retry-After. A throttled or slow destination therefore holds no bundle, and no
// other key waits for it.
type deliverFn struct {
	Targets []Target `json:"targets"`

	Sched state.Value[schedule]
	Fresh state.Bag[Batch]
	Queue state.Bag[Batch]
	Parts state.Bag[Batch]
	Wake  timers.ProcessingTime

	dests map[string]*dest
}

// dest is what a worker holds for one integration.
type dest struct {
	Target
	d      Destination // with the integration's limits
	lim    *limiter
	client *http.Client

	impressions, duplicates, delivered, deadLettered, overflowed, requests, throttled, retries, bytes metricname.Counter
	pending                                                                                           metricname.Counter // impressions held, up and down
	rate, oldest                                                                                      metricname.Gauge
	delay                                                                                             *delaywatch.Watch
	// What the last drain saw of the limiter, to log each change once.
	down     bool      // the circuit was open
	gone     bool      // the endpoint answered 410
	pausedTo time.Time // the end of the last long pause logged
}

func newDeliverFn(targets []Target) *deliverFn {
	return &deliverFn{Targets: targets,
		Sched: state.MakeValueState[schedule]("schedule"),
		Fresh: state.MakeBagState[Batch]("fresh"),
		Queue: state.MakeBagState[Batch]("queue"),
		Parts: state.MakeBagState[Batch]("parts"),
		Wake:  timers.InProcessingTime("wake"),
	}
}

func (fn *deliverFn) Setup() error {
	fn.dests = map[string]*dest{}
	for _, t := range fn.Targets {
		d, err := newDest(t)
		if err != nil {
			return err
		}
		fn.dests[t.ID] = d
	}
	return nil
}

func newDest(t Target) (*dest, error) {
	d, err := NewDestination(t.Kind, t.Settings)
	if err != nil {
		return nil, fmt.Errorf("delivery: integration %q: %w", t.ID, err)
	}
	key := t.destKey()
	c := func(name string) metricname.Counter { return metricname.NewCounter(t.ID, name) }
	return &dest{Target: t, d: newLimited(d, t.Policy), lim: limiterFor(key, t.Policy), client: clientFor(key, t.Policy, t.AllowPrivate),
		impressions: c(metricname.Impressions), duplicates: c(metricname.Duplicates),
		delivered: c(metricname.Delivered), deadLettered: c(metricname.DeadLettered), overflowed: c(metricname.Overflowed),
		requests: c(metricname.Requests), throttled: c(metricname.Throttled), retries: c(metricname.Retries),
		pending: c(metricname.Pending), bytes: c(metricname.Bytes),
		delay: delaywatch.New(t.ID, t.AlertDelay), rate: metricname.NewGauge(t.ID, metricname.RateLimit),
		oldest: metricname.NewGauge(t.ID, metricname.OldestPending),
	}, nil
}

func (fn *deliverFn) dest(id string) (*dest, error) {
	d := fn.dests[id]
	if d == nil {
		return nil, fmt.Errorf("delivery: no target for integration %q", id)
	}
	return d, nil
}

// ProcessElement takes in a window's impressions for one integration's shard (copies
// of one impression dropped, the first seen kept).
func (fn *deliverFn) ProcessElement(ctx context.Context, sp state.Provider, tp timers.Provider, key string, c encode.Chunk,
	dead func(deadletterio.Record), marks func(int32, []byte)) error {
	d, err := fn.dest(key)
	if err != nil {
		return err
	}
	var in arrival
	dups, err := c.Each(func(rec []byte) error {
		imp, err := impression.Unmarshal(rec)
		in.imps = append(in.imps, imp)
		in.bytes += len(rec)
		return err
	})
	if err != nil {
		return fmt.Errorf("delivery: %s: %w", key, err)
	}
	d.impressions.Inc(ctx, int64(len(in.imps)))
	d.duplicates.Inc(ctx, int64(dups))
	d.pending.Inc(ctx, int64(len(in.imps)))
	fx := beamEffects{ctx: ctx, dead: dead}
	if d.Track {
		fx.finished = new(ack.Tally)
		// The copies the chunk held beside the impressions kept are finished.
		kept := make(map[uint64]int, len(in.imps))
		for i := range in.imps {
			kept[in.imps[i].Origin]++
		}
		for _, o := range c.Origins() {
			if kept[o] > 0 {
				kept[o]--
			} else {
				fx.finished.Done(o)
			}
		}
	}
	return fn.drain(sp, tp, d, &in, fx, marks)
}

func (fn *deliverFn) OnTimer(ctx context.Context, sp state.Provider, tp timers.Provider, key string, _ timers.Context,
	dead func(deadletterio.Record), marks func(int32, []byte)) error {
	d, err := fn.dest(key)
	if err != nil {
		return err
	}
	fx := beamEffects{ctx: ctx, dead: dead}
	if d.Track {
		fx.finished = new(ack.Tally)
	}
	return fn.drain(sp, tp, d, nil, fx, marks)
}

func (fn *deliverFn) drain(sp state.Provider, tp timers.Provider, d *dest, in *arrival, fx beamEffects, marks func(int32, []byte)) error {
	wake, err := drain(time.Now(), d, beamStore{fn, sp}, workerCalls, fx, in)
	if err != nil {
		return err
	}
	if fx.finished != nil {
		fx.finished.Emit(marks)
	}
	d.rate.Set(fx.ctx, int64(d.lim.current()*1000))
	d.logChanges(fx.ctx)
	if !wake.IsZero() {
		fn.Wake.Set(tp, wake)
	}
	return nil
}

// longPause is a Retry-After long enough to be logged: deliveries stop for a while.
const longPause = time.Minute

// logChanges logs, once each, what operators must hear of: the destination down
// (its circuit open) and back, gone (410), or pausing deliveries for longPause or
// more.
func (d *dest) logChanges(ctx context.Context) {
	log := oplog.L()
	if down := d.lim.isDown(); down != d.down {
		d.down = down
		if down {
			log.WarnContext(ctx, "the destination fails every request: only probes go out, further and further apart (at most 30 s), until it answers; what was never sent waits without spending its retries",
				"integration", d.ID)
		} else {
			log.InfoContext(ctx, "the destination answers again: sending, one request at a time at first", "integration", d.ID)
		}
	}
	if reason := d.lim.goneReason(); reason != "" && !d.gone {
		d.gone = true
		log.ErrorContext(ctx, "the endpoint is gone (410): nothing more is sent to it in this run; what it was due is dead-lettered for replay once it is fixed",
			"integration", d.ID, "reason", reason)
	}
	if until := d.lim.retryAfterUntil(); until.After(d.pausedTo) && time.Until(until) >= longPause {
		d.pausedTo = until
		log.WarnContext(ctx, "the destination asked for a long pause (Retry-After): nothing is sent to it until then",
			"integration", d.ID, "until", until.UTC().Format(time.RFC3339), "pause", time.Until(until).Round(time.Second).String())
	}
}

// beamStore is a key's state in Beam.
type beamStore struct {
	fn *deliverFn
	sp state.Provider
}

func (s beamStore) schedule() (schedule, error) {
	sc, _, err := s.fn.Sched.Read(s.sp)
	return sc, err
}

func (s beamStore) setSchedule(sc schedule) error {
	if sc.empty() {
		return s.fn.Sched.Clear(s.sp)
	}
	return s.fn.Sched.Write(s.sp, sc)
}

func (s beamStore) fresh() ([]Batch, error) {
	b, _, err := s.fn.Fresh.Read(s.sp)
	return b, err
}

func (s beamStore) addFresh(b Batch) error { return s.fn.Fresh.Add(s.sp, b) }
func (s beamStore) clearFresh() error      { return s.fn.Fresh.Clear(s.sp) }

func (s beamStore) bagOf(part bool) *state.Bag[Batch] {
	if part {
		return &s.fn.Parts
	}
	return &s.fn.Queue
}

func (s beamStore) bag(part bool) ([]Batch, error) {
	b, _, err := s.bagOf(part).Read(s.sp)
	return b, err
}

func (s beamStore) add(part bool, b Batch) error { return s.bagOf(part).Add(s.sp, b) }
func (s beamStore) clear(part bool) error        { return s.bagOf(part).Clear(s.sp) }

// beamEffects reports into Beam metrics, the dead-letter output and, in a stream,
// marks (package ack). Dead-lettered copies are finished where they are stored.
type beamEffects struct {
	ctx      context.Context
	dead     func(deadletterio.Record)
	finished *ack.Tally // nil: not tracked
}

func (fx beamEffects) delivered(d *dest, b *Batch, now time.Time) {
	if fx.finished != nil {
		for i := range b.Imps {
			fx.finished.Done(b.Imps[i].Origin)
		}
	}
	n := int64(len(b.Imps))
	d.delivered.Inc(fx.ctx, n)
	d.pending.Inc(fx.ctx, -n)
	progress.Add(progress.DoneKey(d.Progress, d.ID), n)
	d.delay.Delivered(fx.ctx, now, b.Imps)
}

func (fx beamEffects) deadLetter(d *dest, b *Batch, status int, class, reason string) {
	n := int64(len(b.Imps))
	d.deadLettered.Inc(fx.ctx, n)
	metricname.NewCounter(d.ID, metricname.DeadLetteredBy+metricname.By+class).Inc(fx.ctx, n)
	d.pending.Inc(fx.ctx, -n)
	progress.Add(progress.DoneKey(d.Progress, d.ID), n)
	for i := range b.Imps {
		fx.dead(deadletterio.Undeliverable(d.ID, &b.Imps[i], status, b.Attempts, reason, b.ID))
	}
}

func (fx beamEffects) overflow(d *dest, b *Batch, reason string) {
	d.overflowed.Inc(fx.ctx, int64(len(b.Imps)))
	fx.deadLetter(d, b, 0, "overflow", reason)
	if !oplog.Due("overflow/"+d.ID, time.Now()) {
		return
	}
	oplog.L().ErrorContext(fx.ctx, "the destination is not keeping up: impressions beyond max_pending_impressions are dead-lettered; replay them once it recovers",
		"integration", d.ID, "max_pending_impressions", d.MaxPending, "dead_lettered_now", len(b.Imps))
}

func (fx beamEffects) held(d *dest, oldest int64) { d.oldest.Set(fx.ctx, oldest) }

func (fx beamEffects) answered(d *dest, c *call) {
	d.requests.Inc(fx.ctx, 1)
	metricname.NewCounter(d.ID, metricname.RequestsByCode+metricname.By+metricname.Code(c.resp.Status)).Inc(fx.ctx, 1)
	d.bytes.Inc(fx.ctx, c.bytes)
	if c.batch.Attempts > 0 {
		d.retries.Inc(fx.ctx, 1)
	}
	if c.resp.Status == http.StatusTooManyRequests || c.resp.Status == http.StatusServiceUnavailable {
		d.throttled.Inc(fx.ctx, 1)
	}
}
