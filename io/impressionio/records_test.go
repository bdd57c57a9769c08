package impressionio

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outflow/outflow/internal/ack"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/io/kafkaio"
	"github.com/outflow/outflow/transforms/route"
)

func init() {
	register.Function1x1(deadReason)
	register.Function3x1(markLines)
	register.Function2x1(keyAt)
}

func keyAt(at beam.EventTime, imp impression.Impression) string {
	return fmt.Sprintf("%s@%v", imp.Key, at.ToTime().UTC().Format(time.RFC3339))
}

func deadReason(r deadletterio.Record) string { return r.Source + " | " + r.Reason + " | " + r.Raw }

func markLines(p int32, b []byte, emit func(string)) error {
	ms, err := ack.Decode(b)
	for _, m := range ms {
		emit(fmt.Sprintf("%d %+v", p, m))
	}
	return err
}

// kafkaTopic starts a broker with an "impressions" topic of one partition, and a
// client of it.
func kafkaTopic(t *testing.T) (*kfake.Cluster, *kgo.Client) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "impressions"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return c, cl
}

// Record values hold one line or several; blank lines are skipped and invalid ones
// dead-lettered with the partition and offset they came from. Each record's mark
// counts the copies to finish: one per invalid line, one per target each impression
// is routed to.
func TestFromRecords(t *testing.T) {
	c, cl := kafkaTopic(t)
	values := []string{
		line("u1", 1000),
		line("u2", 2000) + "\n" + line("u3", 3000) + "\r\n\n",
		"not json",
		line("u4", 4000) + "\n",
	}
	for _, v := range values {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "impressions", Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	p, s := beam.NewPipelineWithRoot()
	recs := kafkaio.Read(s, kafkaio.Config{Brokers: c.ListenAddrs(), Topic: "impressions", Group: "g", Bounded: true})
	targets := []route.Target{{ID: "all", Tenant: "acme"}, {ID: "staging", Tenant: "acme", Environments: []string{"staging"}},
		{ID: "split-s", Tenant: "acme", Splits: []string{"s"}}, {ID: "other", Tenant: "globex"}}
	imps, invalid, marks := FromRecords(s, recs, time.Hour, targets)
	passert.EqualsList(s, beam.ParDo(s, markLines, marks), []string{
		"0 {Kind:read Offset:0 From:0 N:2}", "0 {Kind:read Offset:1 From:1 N:4}",
		"0 {Kind:read Offset:2 From:2 N:1}", "0 {Kind:read Offset:3 From:3 N:2}"})
	passert.EqualsList(s, beam.ParDo(s, impKey, imps), []string{"u1", "u2", "u3", "u4"})
	passert.EqualsList(s, beam.ParDo(s, deadReason, invalid), []string{"kafka partition 0 offset 2 | line is not a JSON object | not json"})
	ptest.RunAndValidate(t, p)
}

// Impressions are timestamped with their own time, but within the given bound of
// their record's: one far older or far newer is windowed at the bound, not dropped
// as late nor holding a window open for hours.
func TestFromRecordsBoundsTimestamps(t *testing.T) {
	c, cl := kafkaTopic(t)
	stamp := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for key, at := range map[string]time.Duration{"on-time": 0, "behind": -40 * time.Minute, "buffered": -3 * time.Hour,
		"ahead": 50 * time.Minute, "skewed": 5 * time.Hour} {
		v := line(key, stamp.Add(at).UnixMilli())
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "impressions", Value: []byte(v), Timestamp: stamp}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	p, s := beam.NewPipelineWithRoot()
	recs := kafkaio.Read(s, kafkaio.Config{Brokers: c.ListenAddrs(), Topic: "impressions", Group: "g", Bounded: true})
	imps, _, _ := FromRecords(s, recs, time.Hour, []route.Target{{ID: "all", Tenant: "acme"}})
	passert.EqualsList(s, beam.ParDo(s, keyAt, imps), []string{"on-time@2026-01-01T12:00:00Z", "behind@2026-01-01T11:20:00Z",
		"buffered@2026-01-01T11:00:00Z", "ahead@2026-01-01T12:50:00Z", "skewed@2026-01-01T13:00:00Z"})
	ptest.RunAndValidate(t, p)
}
