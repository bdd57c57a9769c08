package kafkaio

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
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

var (
	seenMu sync.Mutex
	seen   = map[string]int{} // record value -> times read, by see
)

func see(r Record) {
	seenMu.Lock()
	defer seenMu.Unlock()
	seen[string(r.Value)]++
}

func init() { register.Function1x0(see) }

// Unbounded, a partition added to the topic while the pipeline runs is read from its
// start, once, by one reader.
func TestReadUnboundedAddedPartition(t *testing.T) {
	cfg := broker(t, "impressions", 2)
	cfg.Start = "latest" // not for a partition added later: it starts at its earliest
	p, s := beam.NewPipelineWithRoot()
	beam.ParDo0(s, see, Read(s, cfg))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := beam.Run(ctx, ptest.DefaultRunner(), p); done <- err }()
	wait := func(want map[string]int) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); ; {
			seenMu.Lock()
			added := maps.Clone(seen)
			seenMu.Unlock()
			maps.DeleteFunc(added, func(v string, _ int) bool { return !strings.HasPrefix(v, "added-") })
			got := fmt.Sprint(added)
			if got == fmt.Sprint(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("read %s, want %v", got, want)
			}
			select {
			case err := <-done:
				t.Fatalf("the unbounded job ended (%v) having read %s", err, got)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	// Until the readers are at the end, "latest" may skip a record: produce until one
	// is read.
	want := map[string]int{}
	for i := 0; ; i++ {
		produce(t, cfg, i, 1, func(int) time.Time { return time.Now() })
		seenMu.Lock()
		n := len(seen)
		seenMu.Unlock()
		if n > 0 {
			break
		}
		if i == 100 {
			t.Fatal("nothing read in 30 s")
		}
		time.Sleep(300 * time.Millisecond)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreatePartitions(ctx, 1, cfg.Topic)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for i := range 20 {
		v := fmt.Sprintf("added-%d", i)
		recs = append(recs, &kgo.Record{Topic: cfg.Topic, Partition: 2, Value: []byte(v)})
		want[v] = 1
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	wait(want)
	time.Sleep(2 * time.Second) // time for a second reader of the partition to show up, if there were one
	wait(want)
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
