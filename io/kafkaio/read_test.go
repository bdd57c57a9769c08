package kafkaio

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/rtrackers/offsetrange"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/stats"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { ptest.Main(m) }

// broker starts an in-process Kafka-protocol broker with topic in partitions.
func broker(t *testing.T, topic string, partitions int32) Config {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return Config{Brokers: c.ListenAddrs(), Topic: topic, Group: "outflow-test"}
}

// produce writes n records "topic-i" spread over the partitions, stamped at ts(i).
func produce(t *testing.T, cfg Config, from, n int, ts func(i int) time.Time) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		recs = append(recs, &kgo.Record{Topic: cfg.Topic, Value: fmt.Appendf(nil, "v-%d", i), Timestamp: ts(i)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func values(n int) []any {
	var vs []any
	for i := range n {
		vs = append(vs, fmt.Sprintf("v-%d", i))
	}
	return vs
}

func value(r Record) string { return string(r.Value) }

func init() { register.Function1x1(value) }

// Every record of every partition, once, in bounded mode; a committed offset is where
// the group resumes.
func TestReadBounded(t *testing.T) {
	cfg := broker(t, "impressions", 3)
	cfg.Bounded = true
	produce(t, cfg, 0, 300, func(int) time.Time { return time.Now() })

	p, s := beam.NewPipelineWithRoot()
	passert.EqualsList(s, beam.ParDo(s, value, Read(s, cfg)), values(300))
	ptest.RunAndValidate(t, p)

	// Commit 50 on partition 0: reading resumes there and nothing before it comes back.
	cl, _ := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	defer cl.Close()
	var offs kadm.Offsets
	offs.Add(kadm.Offset{Topic: cfg.Topic, Partition: 0, At: 50, LeaderEpoch: -1})
	if _, err := kadm.NewClient(cl).CommitOffsets(context.Background(), cfg.Group, offs); err != nil {
		t.Fatal(err)
	}
	parts, err := StartOffsets(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 3 {
		t.Fatalf("%d partitions, want 3", len(parts))
	}
	for _, p := range parts {
		want := int64(0)
		if p.Partition == 0 {
			want = 50
		}
		if p.Start != want || p.End != 100 {
			t.Errorf("partition %d: offsets [%d, %d), want [%d, 100)", p.Partition, p.Start, p.End, want)
		}
	}
}

func TestUnknownTopic(t *testing.T) {
	cfg := broker(t, "impressions", 1)
	cfg.Topic = "nope"
	if _, err := StartOffsets(context.Background(), cfg); err == nil {
		t.Error("no error for a topic that does not exist")
	}
}

var (
	windowsMu sync.Mutex
	windows   = map[string]int{} // window start -> records counted, by collect
)

func one(Record) string { return "records" }

func collect(w beam.Window, _ string, n int) {
	windowsMu.Lock()
	defer windowsMu.Unlock()
	windows[w.(window.IntervalWindow).Start.ToTime().UTC().Format(time.TimeOnly)] += n
}

func init() {
	register.Function1x1(one)
	register.Function3x0(collect)
}

// Unbounded, the watermark follows the records and then the clock: windows close
// while the job runs, even when no more records arrive.
func TestReadUnboundedClosesWindows(t *testing.T) {
	cfg := broker(t, "impressions", 2)
	base := time.Now().Add(-time.Minute).Truncate(10 * time.Second)
	produce(t, cfg, 0, 100, func(i int) time.Time { return base.Add(time.Duration(i%2) * 10 * time.Second) })

	p, s := beam.NewPipelineWithRoot()
	recs := beam.WindowInto(s, window.NewFixedWindows(10*time.Second), Read(s, cfg))
	beam.ParDo0(s, collect, stats.Count(s, beam.ParDo(s, one, recs)))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := beam.Run(ctx, ptest.DefaultRunner(), p); done <- err }()
	want := map[string]int{base.UTC().Format(time.TimeOnly): 50, base.Add(10 * time.Second).UTC().Format(time.TimeOnly): 50}
	deadline := time.Now().Add(60 * time.Second)
	for {
		windowsMu.Lock()
		got := fmt.Sprint(windows)
		windowsMu.Unlock()
		if got == fmt.Sprint(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("windows %s, want %v", got, want)
		}
		select {
		case err := <-done:
			t.Fatalf("the unbounded job ended (%v) with windows %s", err, got)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// A record's event time is its timestamp, kept between its partition's watermark and
// a minute ahead of the clock.
func TestRecordTime(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	wm := now.Add(-10 * time.Second).UnixMilli()
	for _, c := range []struct {
		name  string
		ts    time.Time
		want  time.Time
		minWM bool // the partition has no watermark yet
	}{
		{name: "between", ts: now.Add(-5 * time.Second), want: now.Add(-5 * time.Second)},
		{name: "behind the watermark", ts: now.Add(-3 * time.Hour), want: time.UnixMilli(wm)},
		{name: "a backlog before any watermark", ts: now.Add(-3 * time.Hour), want: now.Add(-3 * time.Hour), minWM: true},
		{name: "a little ahead", ts: now.Add(30 * time.Second), want: now.Add(30 * time.Second)},
		{name: "microseconds", ts: time.UnixMilli(now.UnixMicro()), want: now.Add(maxAhead)},
	} {
		w := wm
		if c.minWM {
			w = mtime.MinTimestamp.Milliseconds()
		}
		if got := recordTime(c.ts, w, now); !got.Equal(c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// readDirect runs readFn's ProcessElement on partition 0 of cfg's topic from offset
// start to end, as a runner would until the partition is done, and returns what it
// emitted, or the first error.
func readDirect(t *testing.T, cfg Config, start, end int64) ([]Record, error) {
	t.Helper()
	fn := &readFn{Config: cfg}
	fn.Setup()
	defer fn.Teardown()
	var got []Record
	rest := offsetrange.Restriction{Start: start, End: end}
	for range 20 {
		rt := fn.CreateTracker(rest)
		we := &watermarkEstimator{}
		pc, err := fn.ProcessElement(context.Background(), we, rt, Partition{Partition: 0, Start: start, End: end},
			func(_ beam.EventTime, r Record) { got = append(got, r) })
		if err != nil {
			return got, err
		}
		if !pc.ShouldResume() {
			return got, nil
		}
		if len(got) > 0 { // the runner resumes after the last offset claimed
			rest.Start = got[len(got)-1].Offset + 1
		}
	}
	t.Fatalf("partition 0 not read to %d in 20 resumptions: %d records", end, len(got))
	return nil, nil
}

// checkCovers fails unless recs account for every offset of [start, end) in order:
// each record's From is where the one before it ended.
func checkCovers(t *testing.T, recs []Record, start, end int64) {
	t.Helper()
	next := start
	for _, r := range recs {
		if r.From != next || r.Offset < r.From {
			t.Fatalf("record at offset %d accounts from %d, want %d: offsets %d..%d are never finished", r.Offset, r.From, next, next, r.Offset)
		}
		next = r.Offset + 1
	}
	if next != end {
		t.Fatalf("records account for offsets up to %d, want %d", next, end)
	}
}

// Offsets the log no longer holds (retention, or records deleted) where reading was
// to go on: by default an error naming the partition and what was lost; with
// OffsetOutOfRange "earliest", reading goes on from the earliest offset held, and the
// first record read accounts for the offsets lost, so the group's commits pass them.
func TestReadLostOffsets(t *testing.T) {
	cfg := broker(t, "impressions", 1)
	produce(t, cfg, 0, 20, func(int) time.Time { return time.Now() })
	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var offs kadm.Offsets
	offs.AddOffset(cfg.Topic, 0, 12, -1)
	if _, err := kadm.NewClient(cl).DeleteRecords(context.Background(), offs); err != nil {
		t.Fatal(err)
	}

	_, err = readDirect(t, cfg, 5, 20)
	var lost *LostError
	if !errors.As(err, &lost) || lost.Next != 5 || lost.Earliest != 12 || !strings.Contains(err.Error(), "7 records were lost") {
		t.Fatalf("reading from offset 5, deleted up to 12: %v; want a LostError naming 7 records lost", err)
	}

	cfg.OffsetOutOfRange = SkipLost
	recs, err := readDirect(t, cfg, 5, 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 8 || string(recs[0].Value) != "v-12" {
		t.Fatalf("read %d records from %q; want the 8 from v-12 on", len(recs), recs[0].Value)
	}
	checkCovers(t, recs, 5, 20)
}

// Records of an aborted transaction are never read (read_committed, the default), and
// its markers and those of committed transactions are offsets the group's commits
// pass: empty records account for them. With read_uncommitted, every record is read.
func TestReadCommittedTransactions(t *testing.T) {
	cfg := broker(t, "impressions", 1)
	tx, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.TransactionalID("outflow-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	ctx := context.Background()
	for i, commit := range []bool{true, false, true} {
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		var recs []*kgo.Record
		for j := range 5 {
			recs = append(recs, &kgo.Record{Topic: cfg.Topic, Value: fmt.Appendf(nil, "tx%d-%d", i, j)})
		}
		if err := tx.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := tx.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	ends, err := kadm.NewClient(tx).ListEndOffsets(ctx, cfg.Topic)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup(cfg.Topic, 0)
	if end.Offset != 18 { // 15 records, 3 markers
		t.Fatalf("the log ends at %d; want 18 (15 records and 3 markers)", end.Offset)
	}

	for _, c := range []struct {
		isolation string
		want      int
	}{{"", 10}, {ReadUncommitted, 15}} {
		cfg.Isolation = c.isolation
		recs, err := readDirect(t, cfg, 0, end.Offset)
		if err != nil {
			t.Fatal(err)
		}
		var vals []string
		for _, r := range recs {
			if len(r.Value) > 0 {
				vals = append(vals, string(r.Value))
			}
		}
		if len(vals) != c.want || (c.isolation == "" && slices.ContainsFunc(vals, func(v string) bool { return strings.HasPrefix(v, "tx1-") })) {
			t.Errorf("isolation %q: read %v; want %d records, none of the aborted tx1", c.isolation, vals, c.want)
		}
		checkCovers(t, recs, 0, end.Offset)
	}
}
