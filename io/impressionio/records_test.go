package impressionio

import (
	"context"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/io/kafkaio"
)

func init() { register.Function1x1(deadReason) }

func deadReason(r deadletterio.Record) string { return r.Source + " | " + r.Reason + " | " + r.Raw }

// Record values hold one line or several; blank lines are skipped and invalid ones
// dead-lettered with the partition and offset they came from.
func TestFromRecords(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "impressions"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
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
	imps, invalid := FromRecords(s, recs, time.Hour)
	passert.EqualsList(s, beam.ParDo(s, impKey, imps), []string{"u1", "u2", "u3", "u4"})
	passert.EqualsList(s, beam.ParDo(s, deadReason, invalid), []string{"kafka partition 0 offset 2 | line is not a JSON object | not json"})
	ptest.RunAndValidate(t, p)
}
