package main

import (
	"testing"
	"time"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/kafkaio"
)

// The stream on Beam's portable Flink runner (streaming mode, the workers in the
// launcher), reading a real Kafka broker: impressions reach the webhook once, the
// group commits every partition to its end, and SIGINT drains the job to exit 0. Then
// the job is started again: it resumes from the commits, delivers what was produced
// while it was down, and sends nothing a second time. How long each step takes is
// logged.
func TestStreamToHTTPOnFlink(t *testing.T) {
	t.Parallel()
	flink := testenv.FlinkFlags(t)
	tp := topicOn(t, testenv.NewKafka(t).Plain, kafkaio.Security{})
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	cfgPath := writeConfig(t, hookCfg)
	j := startConfig(t, tp, cfgPath, flink...)
	start := time.Now()
	tp.produce("acme", keys("a", 0, 30)...)
	waitFor(t, j, hook, 30)
	t.Logf("first 30 after %v", time.Since(start))
	tp.produce("acme", keys("b", 0, 30)...)
	waitFor(t, j, hook, 60)
	waitCommitted(t, j, tp)
	t.Logf("committed after %v", time.Since(start))
	if code := j.stop(); code != 0 {
		t.Errorf("exit %d after SIGINT\n%s", code, j.stderr.String())
	}
	t.Logf("stopped after %v", time.Since(start))

	tp.produce("acme", keys("down", 0, 30)...) // while it is stopped
	j = startConfig(t, tp, cfgPath, flink...)
	waitFor(t, j, hook, 90)
	waitCommitted(t, j, tp)
	t.Logf("restarted and caught up after %v", time.Since(start))
	stopDelivered(t, j, hook, 90)
}
