package kafkaio

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window/trigger"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/state"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outflow/outflow/internal/ack"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/internal/oplog"
)

func init() {
	register.Function2x0(startMarks)
	register.DoFn4x1[context.Context, state.Provider, int32, func(*[]byte) bool, error](&commitFn{})
	register.Emitter2[int32, []byte]()
	register.Iter1[[]byte]()
}

// commitEvery is how often the marks of a partition are folded in and its offset
// committed.
const commitEvery = 5 * time.Second

// Commit commits the group's offsets from inside the pipeline: marks (package ack)
// come from every stage that finishes the impressions read, and the group's offset of
// a partition moves as far as every record before it is finished. Whatever runs the
// workers, their own output drives the commits, and a bundle the runner retries
// counts once.
//
// The marks are gathered for commitEvery of processing time, and at the end when the
// reading stops, then folded into the partition's ledger and committed when its
// position moved.
//
// The ledger holds every record not yet finished: with a destination down, every
// record it holds back, up to its max_pending_impressions. So its state is a log (a
// Bag): a snapshot of the ledger, then each firing's new marks, appended; once the
// marks appended since the snapshot outweigh it, the log is replaced by a new
// snapshot. A firing writes its new marks, and a snapshot's cost is spread over the
// marks that came before it: O(new marks) a firing, amortized, whatever the ledger
// holds.
//
// In: parts from Partitions, the starts; marks, PCollection<KV<int32, []byte>>.
func Commit(s beam.Scope, cfg Config, parts beam.PCollection, marks ...beam.PCollection) {
	s = s.Scope("kafkaio.Commit")
	var all []beam.PCollection
	for _, m := range append([]beam.PCollection{beam.ParDo(s, startMarks, parts)}, marks...) {
		all = append(all, beam.WindowInto(s, window.NewGlobalWindows(), m,
			beam.Trigger(trigger.Repeat(trigger.AfterProcessingTime().PlusDelay(commitEvery))), beam.PanesDiscard()))
	}
	grouped := beam.GroupByKey(s, beam.Flatten(s, all...))
	g := newLedgerLog()
	beam.ParDo0(s, &commitFn{Config: cfg, Log: g.Log, Meta: g.Meta}, grouped)
}

// startMarks marks where a partition is read from.
func startMarks(p Partition, emit func(int32, []byte)) {
	var t ack.Tally
	t.Start(p.Partition, p.Start)
	t.Emit(emit)
}

// commitFn keeps a partition's ledger and commits its position.
type commitFn struct {
	Config Config `json:"config"`
	// The ledger's log (ledgerLog): Beam finds state only in a DoFn's own fields.
	Log  state.Bag[[]byte]
	Meta state.Value[[]byte]

	committer      *Committer
	bytes, firings metricname.Counter
}

func (fn *commitFn) Setup() error {
	fn.bytes = metricname.NewCounter(metricname.Job, metricname.LedgerBytes)
	fn.firings = metricname.NewCounter(metricname.Job, metricname.LedgerFirings)
	c, err := NewCommitter(fn.Config)
	fn.committer = c
	return err
}

func (fn *commitFn) Teardown() {
	if fn.committer != nil {
		fn.committer.Close()
	}
}

func (fn *commitFn) ProcessElement(ctx context.Context, sp state.Provider, partition int32, marks func(*[]byte) bool) error {
	g := ledgerLog{Log: fn.Log, Meta: fn.Meta}
	l, meta, err := g.load(sp)
	if err != nil {
		return fmt.Errorf("kafkaio: partition %d: %w", partition, err)
	}
	moved := false
	added := []byte{logMarks}
	var m []byte
	for marks(&m) {
		mv, err := l.Add(m)
		if err != nil {
			return fmt.Errorf("kafkaio: partition %d: %w", partition, err)
		}
		moved = moved || mv
		added = append(added, m...)
	}
	if moved {
		// Committed before the ledger is written: if this bundle fails, its marks come
		// again and the same or a later offset is committed. An offset committed is
		// only ever one whose records were finished.
		if err := fn.committer.Commit(ctx, map[int32]int64{partition: l.Next}); err != nil {
			return err
		}
		oplog.L().DebugContext(ctx, "offset committed", "topic", fn.Config.Topic, "partition", partition,
			"next", l.Next, "pending", l.Pending())
	}
	written, err := g.save(sp, l, meta, added)
	if err != nil {
		return fmt.Errorf("kafkaio: partition %d: write the ledger: %w", partition, err)
	}
	fn.bytes.Inc(ctx, int64(written))
	fn.firings.Inc(ctx, 1)
	return nil
}

// Committer commits a consumer group's offsets.
type Committer struct {
	cfg Config
	cl  *kgo.Client
	adm *kadm.Client
}

// NewCommitter returns a committer for cfg's group and topic.
func NewCommitter(cfg Config) (*Committer, error) {
	cl, err := newClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("kafka %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	return &Committer{cfg: cfg, cl: cl, adm: kadm.NewClient(cl)}, nil
}

// Commit records next, by partition, as the group's progress: the next record to
// read.
func (c *Committer) Commit(ctx context.Context, next map[int32]int64) error {
	if len(next) == 0 {
		return nil
	}
	offsets := kadm.Offsets{}
	for p, o := range next {
		offsets.Add(kadm.Offset{Topic: c.cfg.Topic, Partition: p, At: o, LeaderEpoch: -1})
	}
	resp, err := c.adm.CommitOffsets(ctx, c.cfg.Group, offsets)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return fmt.Errorf("kafka group %q: commit offsets: %w", c.cfg.Group, err)
	}
	return nil
}

// CommitStarts commits, for each partition of the topic the group has no offset
// committed for, the offset a reader starts it at: the earliest, or the end if start
// is "latest"; and, for each whose committed offset the log no longer holds, either
// the earliest it does or, as Config.OffsetOutOfRange says, a *LostError. It returns
// the partitions that had no offset, and how many the topic has. A job that
// does this before it runs (and sets Config.StartsCommitted) resumes every partition
// where it first started it, even one it read nothing from.
func (c *Committer) CommitStarts(ctx context.Context, start string) (committed []Partition, partitions int, err error) {
	ls, err := listPartitions(ctx, c.adm, c.cfg, start)
	if err != nil {
		return nil, 0, err
	}
	next := map[int32]int64{}
	for _, l := range ls {
		if l.lost != nil {
			// Moved past the records lost (or failing, per the config), so that readers
			// start where the log does and say nothing more of it.
			if err := lost(ctx, c.cfg, l.lost); err != nil {
				return nil, 0, err
			}
			next[l.p.Partition] = l.p.Start
		}
		if !l.committed {
			next[l.p.Partition] = l.p.Start
			committed = append(committed, l.p)
		}
	}
	if err := c.Commit(ctx, next); err != nil {
		return nil, 0, err
	}
	return committed, len(ls), nil
}

// Partitions returns how many partitions the topic has.
func (c *Committer) Partitions(ctx context.Context) (int, error) {
	return partitionCount(ctx, c.adm, c.cfg.Topic)
}

// Close closes the committer's connections.
func (c *Committer) Close() { c.cl.Close() }

// Committed returns the group's committed offsets, by partition.
func (c *Committer) Committed(ctx context.Context) (map[int32]int64, error) {
	resp, err := c.adm.FetchOffsetsForTopics(ctx, c.cfg.Group, c.cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("kafka group %q: fetch committed offsets: %w", c.cfg.Group, err)
	}
	out := map[int32]int64{}
	resp.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out, nil
}

// Lag returns, by partition, how many records the group has yet to commit: the end
// offset minus the committed one (or the earliest offset, where none is).
func (c *Committer) Lag(ctx context.Context) (map[int32]int64, error) {
	ls, err := listPartitions(ctx, c.adm, Config{Topic: c.cfg.Topic, Group: c.cfg.Group, Start: "earliest",
		Bounded: true, Isolation: c.cfg.Isolation}, "earliest")
	if err != nil {
		return nil, err
	}
	out := map[int32]int64{}
	for _, l := range ls {
		out[l.p.Partition] = max(0, l.p.End-l.p.Start)
	}
	return out, nil
}
