// Package kafkaio reads Kafka records natively in Go: one splittable DoFn element
// per partition, its restriction the partition's offsets, so no Java expansion
// service is needed and any runner (prism, Flink, Dataflow) can run it.
//
// Each record is emitted at its Kafka timestamp, kept between its partition's
// watermark and a minute ahead of the clock (recordTime). The watermark of a partition
// follows the newest time emitted; when the partition is idle (read to its end) it
// follows the clock, so windows close on an idle topic instead of staying open.
//
// The partitions are listed once, when the pipeline starts. A pipeline does not see
// partitions added to the topic after that: a job that must read them starts a new
// pipeline (the stream command does, when the topic grows). An unbounded splittable
// DoFn that kept listing the topic upstream of the readers held every reader's resumption
// on Beam's portable Flink runner (2.62) to one every 15 s, whatever the delays asked.
package kafkaio

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/sdf"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/rtrackers/offsetrange"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outflow/outflow/internal/oplog"
)

func init() {
	register.DoFn3x1[context.Context, []byte, func(Partition), error](&partitionsFn{})
	register.Emitter1[Partition]()
	register.DoFn5x2[context.Context, *watermarkEstimator, *sdf.LockRTracker, Partition,
		func(beam.EventTime, Record), sdf.ProcessContinuation, error](&readFn{})
	register.Emitter2[beam.EventTime, Record]()
	beam.RegisterType(reflect.TypeOf((*Record)(nil)).Elem())
	beam.RegisterType(reflect.TypeOf((*Partition)(nil)).Elem())
}

// Config says what to read.
type Config struct {
	Brokers []string `json:"brokers"`
	Topic   string   `json:"topic"`
	// Group is the consumer group whose committed offsets say where to start.
	Group string `json:"group"`
	// Start is where a partition without a committed offset starts: "earliest"
	// (default) or "latest". It applies to the partitions listed when reading starts;
	// a partition added to the topic later is read from its earliest offset.
	Start string `json:"start"`
	// StartsCommitted says that the group's offsets were committed for every
	// partition before the pipeline ran (Committer.CommitStarts): a partition without
	// one was added since, and is read from its earliest offset whatever Start says.
	StartsCommitted bool `json:"starts_committed"`
	// Bounded stops each partition at its end offset as listed at launch, so the
	// pipeline finishes (catch-up runs, tests). Otherwise reading never ends. Either
	// way only the partitions listed at launch are read.
	Bounded bool `json:"bounded"`
	// Isolation is which records are read: "read_committed" (default: records of
	// aborted or still open transactions never are) or "read_uncommitted".
	Isolation string `json:"isolation"`
	// OffsetOutOfRange is what happens when the offset to read next is no longer in
	// the log (retention or a deletion passed it, and its records are lost): "fail"
	// (default: the job fails, naming the partition and the offsets lost) or
	// "earliest" (reading goes on from the earliest offset the log holds, after an
	// ERROR line naming the records skipped).
	OffsetOutOfRange string `json:"offset_out_of_range"`
	// Security is how the brokers are reached: TLS, SASL.
	Security Security `json:"security"`
}

// Isolation levels and out-of-range policies Config takes.
const (
	ReadCommitted   = "read_committed"
	ReadUncommitted = "read_uncommitted"
	FailLost        = "fail"
	SkipLost        = "earliest"
)

// Validate names the first problem with c.
func (c Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("no brokers")
	case c.Topic == "":
		return errors.New("no topic")
	case c.Group == "":
		return errors.New("no consumer group")
	case c.Start != "" && c.Start != "earliest" && c.Start != "latest":
		return fmt.Errorf("start %q: want earliest or latest", c.Start)
	case c.Isolation != "" && c.Isolation != ReadCommitted && c.Isolation != ReadUncommitted:
		return fmt.Errorf("isolation %q: want %s or %s", c.Isolation, ReadCommitted, ReadUncommitted)
	case c.OffsetOutOfRange != "" && c.OffsetOutOfRange != FailLost && c.OffsetOutOfRange != SkipLost:
		return fmt.Errorf("offset out of range %q: want %s or %s", c.OffsetOutOfRange, FailLost, SkipLost)
	}
	return c.Security.Validate()
}

// Record is one Kafka record of the topic.
type Record struct {
	Partition int32
	Offset    int64
	// From is the first offset the record accounts for: the reader's position before
	// it. Offsets have gaps (transaction markers, compaction), and progress must pass
	// them too (package ack).
	From  int64
	Value []byte
}

// Partition is one partition to read, from offset Start up to End (exclusive;
// math.MaxInt64 when unbounded).
type Partition struct {
	Partition  int32
	Start, End int64
}

const (
	// pollWait is how long one poll waits for records before the partition counts as
	// idle; readBudget is how long ProcessElement reads before handing the rest of the
	// partition back to the runner, so the bundle commits and downstream moves on.
	pollWait   = 250 * time.Millisecond
	readBudget = time.Second
	// idleDelay is how soon an idle partition is polled again.
	idleDelay = 500 * time.Millisecond
	// idleLag holds an idle partition's watermark this far behind the clock: a record
	// being produced now may carry a timestamp slightly in the past.
	idleLag = time.Second
	maxPoll = 5000
	// maxEmpty is how many empty polls in a row, with records waiting, make the reader
	// replace its consumer.
	maxEmpty = 3
)

// Read returns the topic's records, timestamped with their Kafka timestamps.
//
// Out: PCollection<Record>.
func Read(s beam.Scope, cfg Config) beam.PCollection {
	return ReadPartitions(s, cfg, Partitions(s, cfg))
}

// Partitions lists the partitions to read and where each starts (see Read).
//
// Out: PCollection<Partition>.
func Partitions(s beam.Scope, cfg Config) beam.PCollection {
	s = s.Scope("kafkaio.Partitions")
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("kafkaio.Partitions: %v", err)) // callers validate their configuration first
	}
	return beam.ParDo(s, &partitionsFn{Config: cfg}, beam.Impulse(s))
}

// ReadPartitions reads the partitions Partitions listed.
//
// In: PCollection<Partition>. Out: PCollection<Record>.
func ReadPartitions(s beam.Scope, cfg Config, parts beam.PCollection) beam.PCollection {
	s = s.Scope("kafkaio.Read")
	return beam.ParDo(s, &readFn{Config: cfg}, parts)
}

func newClient(cfg Config, opts ...kgo.Opt) (*kgo.Client, error) {
	base := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.Security.ClientOpts()...)
	if cfg.Isolation != ReadUncommitted {
		base = append(base, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	return kgo.NewClient(append(base, opts...)...)
}

// endOffsets lists, by partition, the offset after the last record a reader of cfg can
// read: the last stable offset when reading committed records only (a record of an
// open transaction waits there), the high watermark otherwise.
func endOffsets(ctx context.Context, adm *kadm.Client, cfg Config) (kadm.ListedOffsets, error) {
	if cfg.Isolation == ReadUncommitted {
		return adm.ListEndOffsets(ctx, cfg.Topic)
	}
	return adm.ListCommittedOffsets(ctx, cfg.Topic)
}

// LostError says that the offset a partition was to be read from next is no longer in
// the log: retention or a deletion passed it, and the records between are lost.
type LostError struct {
	Topic     string
	Partition int32
	Next      int64 // where reading was to go on
	Earliest  int64 // the earliest offset the log still holds
}

func (e *LostError) Error() string {
	return fmt.Sprintf("kafka topic %q partition %d: offset %d, where reading was to go on, is no longer in the log, "+
		"which now starts at %d: %d records were lost to retention or deletion before they were read "+
		"(to go on from the earliest offset, set the offset-out-of-range policy to %q)",
		e.Topic, e.Partition, e.Next, e.Earliest, e.Earliest-e.Next, SkipLost)
}

// lost applies cfg's policy to an offset no longer in the log: an error to fail with,
// or nil after an ERROR line.
func lost(ctx context.Context, cfg Config, e *LostError) error {
	if cfg.OffsetOutOfRange != SkipLost {
		return e
	}
	oplog.L().ErrorContext(ctx, "kafka: records lost before they were read; going on from the earliest offset the log holds",
		"topic", e.Topic, "partition", e.Partition, "next", e.Next, "earliest", e.Earliest, "lost", e.Earliest-e.Next)
	return nil
}

// partitionsFn lists the topic's partitions and where the group left each one (or
// where Config.Start says, for one it left nothing of).
type partitionsFn struct {
	Config Config `json:"config"`
}

func (fn *partitionsFn) ProcessElement(ctx context.Context, _ []byte, emit func(Partition)) error {
	if draining.Load() {
		return nil // stopped before it started: nothing to read
	}
	parts, err := StartOffsets(ctx, fn.Config)
	if err != nil {
		return err
	}
	for _, p := range parts {
		emit(p)
	}
	return nil
}

// StartOffsets returns the topic's partitions, each starting at the group's committed
// offset (or cfg.Start where none is; the earliest, when cfg.StartsCommitted) and,
// when cfg.Bounded, ending at its current end.
func StartOffsets(ctx context.Context, cfg Config) ([]Partition, error) {
	cl, err := newClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("kafka %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	defer cl.Close()
	start := cfg.Start
	if cfg.StartsCommitted {
		start = "earliest"
	}
	ls, err := listPartitions(ctx, kadm.NewClient(cl), cfg, start)
	if err != nil {
		return nil, err
	}
	parts := make([]Partition, len(ls))
	for i, l := range ls {
		if l.lost != nil {
			if err := lost(ctx, cfg, l.lost); err != nil {
				return nil, err
			}
		}
		parts[i] = l.p
	}
	return parts, nil
}

// listed is a partition, whether the group has an offset committed for it, and
// whether that offset is no longer in the log (then p starts at the earliest that is).
type listed struct {
	p         Partition
	committed bool
	lost      *LostError
}

// partitionCount returns how many partitions topic has (one metadata request).
func partitionCount(ctx context.Context, adm *kadm.Client, topic string) (int, error) {
	topics, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("kafka topic %q: list partitions: %w", topic, err)
	}
	td, ok := topics[topic]
	switch {
	case !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition):
		return 0, fmt.Errorf("kafka topic %q: no such topic", topic)
	case td.Err != nil:
		return 0, fmt.Errorf("kafka topic %q: list partitions: %w", topic, td.Err)
	}
	return len(td.Partitions), nil
}

// listPartitions returns the topic's partitions in order, each starting at the group's
// committed offset, or where start ("earliest" or "latest") says when none is, and,
// when cfg.Bounded, ending at its current end.
func listPartitions(ctx context.Context, adm *kadm.Client, cfg Config, start string) ([]listed, error) {
	ends, err := endOffsets(ctx, adm, cfg)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafka topic %q: list offsets: %w", cfg.Topic, err)
	}
	if len(ends[cfg.Topic]) == 0 {
		return nil, fmt.Errorf("kafka topic %q: no such topic, or it has no partitions", cfg.Topic)
	}
	starts, err := adm.ListStartOffsets(ctx, cfg.Topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("kafka topic %q: list offsets: %w", cfg.Topic, err)
	}
	committed, err := adm.FetchOffsetsForTopics(ctx, cfg.Group, cfg.Topic)
	if errors.Is(err, kerr.GroupIDNotFound) {
		err = nil // a new group: nothing committed yet
	}
	if err != nil {
		return nil, fmt.Errorf("kafka group %q: fetch committed offsets: %w", cfg.Group, err)
	}
	var parts []listed
	for p, end := range ends[cfg.Topic] {
		first, _ := starts.Lookup(cfg.Topic, p)
		part := listed{p: Partition{Partition: p, Start: first.Offset, End: math.MaxInt64}}
		if start == "latest" {
			part.p.Start = end.Offset
		}
		// A committed offset is the next record to read. One the log no longer holds
		// (retention passed it) starts at the earliest that remains, if the caller's
		// policy allows (lost).
		if c, ok := committed.Lookup(cfg.Topic, p); ok && c.Err == nil && c.At >= 0 {
			part.p.Start, part.committed = max(c.At, first.Offset), true
			if c.At < first.Offset {
				part.lost = &LostError{Topic: cfg.Topic, Partition: p, Next: c.At, Earliest: first.Offset}
			}
		}
		if cfg.Bounded {
			part.p.End = end.Offset
		}
		parts = append(parts, part)
	}
	slices.SortFunc(parts, func(a, b listed) int { return cmp.Compare(a.p.Partition, b.p.Partition) })
	return parts, nil
}

// readFn reads one partition; the runner checkpoints it every readBudget.
type readFn struct {
	Config Config `json:"config"`

	consumers map[int32]*consumer
}

// consumer is a client positioned on one partition, kept across checkpoints so its
// prefetched records are not thrown away.
type consumer struct {
	cl   *kgo.Client
	next int64
	// from is the first offset the next record emitted accounts for: next, unless
	// records were lost before next (Config.OffsetOutOfRange).
	from  int64
	empty int // polls in a row that returned nothing while records waited
}

func (fn *readFn) Setup() { fn.consumers = map[int32]*consumer{} }

func (fn *readFn) Teardown() {
	for _, c := range fn.consumers {
		c.cl.Close()
	}
}

func (fn *readFn) CreateInitialRestriction(p Partition) offsetrange.Restriction {
	return offsetrange.Restriction{Start: p.Start, End: p.End}
}

func (fn *readFn) SplitRestriction(_ Partition, rest offsetrange.Restriction) []offsetrange.Restriction {
	return []offsetrange.Restriction{rest}
}

func (fn *readFn) RestrictionSize(_ Partition, rest offsetrange.Restriction) float64 {
	if rest.End == math.MaxInt64 {
		return 1 // unknown and unbounded
	}
	return float64(max(0, rest.End-rest.Start))
}

func (fn *readFn) CreateTracker(rest offsetrange.Restriction) *sdf.LockRTracker {
	return sdf.NewLockRTracker(partitionTracker{offsetrange.NewTracker(rest)})
}

// partitionTracker claims a partition's offsets. An unbounded one may be checkpointed
// (split at fraction 0) but not split further on: halfway to math.MaxInt64 is no
// offset the log will reach.
type partitionTracker struct{ *offsetrange.Tracker }

func (t partitionTracker) TrySplit(fraction float64) (primary, residual any, err error) {
	if fraction > 0 && t.GetRestriction().(offsetrange.Restriction).End == math.MaxInt64 {
		return t.GetRestriction(), nil, nil
	}
	return t.Tracker.TrySplit(fraction)
}

func (fn *readFn) InitialWatermarkEstimatorState(et beam.EventTime, _ offsetrange.Restriction, _ Partition) int64 {
	return et.Milliseconds()
}

func (fn *readFn) CreateWatermarkEstimator(ms int64) *watermarkEstimator {
	return &watermarkEstimator{ms: ms}
}

func (fn *readFn) WatermarkEstimatorState(we *watermarkEstimator) int64 { return we.ms }

func (fn *readFn) ProcessElement(ctx context.Context, we *watermarkEstimator, rt *sdf.LockRTracker, p Partition,
	emit func(beam.EventTime, Record)) (sdf.ProcessContinuation, error) {
	rest := rt.GetRestriction().(offsetrange.Restriction)
	if rest.Start >= rest.End {
		return sdf.StopProcessing(), nil
	}
	if draining.Load() {
		rt.TryClaim(rest.End) // the partition ends here
		return sdf.StopProcessing(), nil
	}
	c, err := fn.consumer(p.Partition, rest.Start)
	if err != nil {
		return sdf.StopProcessing(), err
	}
	for deadline := time.Now().Add(readBudget); time.Now().Before(deadline); {
		pollCtx, cancel := context.WithTimeout(ctx, pollWait)
		fetches := c.cl.PollRecords(pollCtx, maxPoll)
		cancel()
		if err := fetchError(ctx, fetches); err != nil {
			fn.drop(p.Partition)
			if errors.Is(err, kerr.OffsetOutOfRange) {
				if c, err = fn.skipLost(ctx, p.Partition, c); err == nil {
					continue
				}
			}
			return sdf.StopProcessing(), fmt.Errorf("kafka topic %q partition %d: %w", fn.Config.Topic, p.Partition, err)
		}
		n := 0
		for it := fetches.RecordIter(); !it.Done(); {
			r := it.Next()
			if !rt.TryClaim(r.Offset) {
				// The runner took the rest of the partition (a checkpoint): this client
				// has already handed out records the next reader must see again.
				fn.drop(p.Partition)
				return sdf.StopProcessing(), rt.GetError()
			}
			rec := Record{Partition: r.Partition, Offset: r.Offset, From: c.from, Value: r.Value}
			if r.Attrs.IsControl() {
				// A transaction's commit or abort marker: no impression, but an offset
				// the group's commits must pass (an empty record accounts for it).
				rec.Value = nil
			}
			c.next, c.from = r.Offset+1, r.Offset+1
			at := recordTime(r.Timestamp, we.ms, time.Now())
			emit(mtime.FromTime(at), rec)
			we.observe(at)
			n++
		}
		if c.next >= rest.End { // bounded and done
			rt.TryClaim(rest.End)
			return sdf.StopProcessing(), nil
		}
		if n == 0 {
			fn.idle(ctx, we, c, p.Partition)
			return sdf.ResumeProcessingIn(idleDelay), nil
		}
		c.empty = 0
	}
	return sdf.ResumeProcessingIn(0), nil
}

// idle handles a poll that returned nothing. Only a partition whose consumer is at
// the log's end is idle, and only then may its watermark follow the clock: a
// consumer that is behind (a slow broker) still has older records to emit. One that
// stays behind without receiving anything for maxEmpty polls is replaced, since a
// fresh client at the same offset is cheap and a wedged fetch would stall the
// partition for good.
func (fn *readFn) idle(ctx context.Context, we *watermarkEstimator, c *consumer, partition int32) {
	end, err := endOffset(ctx, c.cl, fn.Config, partition)
	switch {
	case err != nil:
		// Not knowing the end, hold the watermark; the next poll asks again.
	case end <= c.next:
		c.empty = 0
		we.observe(time.Now().Add(-idleLag))
	default:
		if c.empty++; c.empty >= maxEmpty {
			oplog.L().WarnContext(ctx, "kafka consumer received nothing while records wait: reconnecting",
				"topic", fn.Config.Topic, "partition", partition, "next", c.next, "end", end)
			fn.drop(partition)
		}
	}
}

// endOffset returns the offset after the last record of partition a reader of cfg can
// read now (endOffsets).
func endOffset(ctx context.Context, cl *kgo.Client, cfg Config, partition int32) (int64, error) {
	ends, err := endOffsets(ctx, kadm.NewClient(cl), cfg)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, err
	}
	o, ok := ends.Lookup(cfg.Topic, partition)
	if !ok {
		return 0, fmt.Errorf("partition %d not listed", partition)
	}
	return o.Offset, nil
}

// draining says that readers in this process stop: see Drain.
var draining atomic.Bool

// Drain ends reading in this process: each partition stops at the next record it
// would read, so the pipeline delivers what it read and then finishes, as a bounded
// one does. Readers in other processes (remote workers) are not reached; a pipeline
// running there has to be cancelled.
func Drain() { draining.Store(true) }

// Resume lets readers in this process read again, for a pipeline started after a
// drained one ended.
func Resume() { draining.Store(false) }

// consumer returns a client that reads partition from offset next.
func (fn *readFn) consumer(partition int32, next int64) (*consumer, error) {
	if c := fn.consumers[partition]; c != nil && c.next == next {
		return c, nil
	}
	fn.drop(partition)
	cl, err := newClient(fn.Config,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{fn.Config.Topic: {partition: kgo.NewOffset().At(next)}}),
		// An offset the log no longer holds is an error here, not a silent jump
		// (skipLost), and transaction markers come back to be accounted for.
		kgo.ConsumeResetOffset(kgo.NoResetOffset()), kgo.KeepControlRecords())
	if err != nil {
		return nil, fmt.Errorf("kafka %s: %w", strings.Join(fn.Config.Brokers, ","), err)
	}
	c := &consumer{cl: cl, next: next, from: next}
	fn.consumers[partition] = c
	return c, nil
}

// skipLost handles a partition whose next offset (c's) the log no longer holds: per
// the config, an error, or a consumer at the earliest offset the log holds whose next
// record accounts for the offsets lost.
func (fn *readFn) skipLost(ctx context.Context, partition int32, c *consumer) (*consumer, error) {
	cl, err := newClient(fn.Config)
	if err != nil {
		return nil, fmt.Errorf("kafka %s: %w", strings.Join(fn.Config.Brokers, ","), err)
	}
	starts, err := kadm.NewClient(cl).ListStartOffsets(ctx, fn.Config.Topic)
	cl.Close()
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("the offset to read next, %d, is out of range; listing the earliest: %w", c.next, err)
	}
	first, _ := starts.Lookup(fn.Config.Topic, partition)
	if first.Offset <= c.next {
		return nil, fmt.Errorf("the offset to read next, %d, is out of range, yet the log starts at %d", c.next, first.Offset)
	}
	if err := lost(ctx, fn.Config, &LostError{Topic: fn.Config.Topic, Partition: partition, Next: c.next, Earliest: first.Offset}); err != nil {
		return nil, err
	}
	next, err := fn.consumer(partition, first.Offset)
	if err != nil {
		return nil, err
	}
	next.from = c.from
	return next, nil
}

func (fn *readFn) drop(partition int32) {
	if c := fn.consumers[partition]; c != nil {
		c.cl.Close()
		delete(fn.consumers, partition)
	}
}

// fetchError returns the first error of a poll that matters: not the poll's own
// timeout, which only means no record arrived.
func fetchError(ctx context.Context, f kgo.Fetches) error {
	for _, e := range f.Errors() {
		if errors.Is(e.Err, context.DeadlineExceeded) && ctx.Err() == nil {
			continue
		}
		return e.Err
	}
	return nil
}

// maxAhead is how far ahead of the clock a record's timestamp is believed.
const maxAhead = time.Minute

// recordTime is the event time a record is emitted at: its Kafka timestamp, but not
// before its partition's watermark (Unix ms), nor more than maxAhead after now. A
// record stamped behind the watermark (producers' clocks apart, a record stamped by
// hand) could be later than windows allow and be dropped by the runner, its offset
// never finished and the partition's commits stuck behind it for good; one stamped far
// ahead (microseconds taken for milliseconds) would carry the watermark years ahead
// and close every window at once.
func recordTime(ts time.Time, watermarkMs int64, now time.Time) time.Time {
	if wm := time.UnixMilli(watermarkMs); ts.Before(wm) {
		ts = wm
	}
	if latest := now.Add(maxAhead); ts.After(latest) {
		ts = latest
	}
	return ts
}

// watermarkEstimator holds a partition's watermark, in Unix milliseconds; it never
// goes back.
type watermarkEstimator struct{ ms int64 }

func (e *watermarkEstimator) CurrentWatermark() time.Time { return time.UnixMilli(e.ms) }

func (e *watermarkEstimator) observe(t time.Time) { e.ms = max(e.ms, t.UnixMilli()) }
