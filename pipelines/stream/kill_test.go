package main

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/kafkaio"
	"github.com/outflow/outflow/transforms/encode"
)

// Killed (SIGKILL) after S3 objects are written, while a slow webhook still holds
// the same impressions, the stream restarts from the offsets its pipeline committed:
// nothing is lost, every impression is in exactly one S3 object, and the webhook is
// sent again only what was not committed. Once with prism in the launcher (the
// launcher is killed), once with the SDK workers in a process of their own (the
// workers are killed, then the launcher): the commits come from the pipeline, not
// from the process that launched it. And once on Beam's portable Flink runner with
// the SDK workers in a worker pool, as on a cluster: the workers are killed, then the
// launcher, which ends the job (its workers gone), and a new job is submitted; there
// the topic is on a real Kafka broker.
func TestStreamKilledMidFlight(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"embedded", "external-workers", "flink"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			testKilledMidFlight(t, mode)
		})
	}
}

func testKilledMidFlight(t *testing.T, mode string) {
	var tp *kafkaTopic
	var flinkEndpoint string
	if mode == "flink" { // where users run it: a real broker too
		flinkEndpoint = testenv.FlinkJobServer(t) // or skip before starting anything
		tp = topicOn(t, testenv.NewKafka(t).Plain, kafkaio.Security{})
	} else {
		tp = newTopic(t)
	}
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	// 10 impressions a second: the webhook's copies are in flight long after the
	// objects are stored.
	hook, hookCfg := webhook(t, "acme", destsim.Options{RateLimit: 1, Burst: 1}, ", delivery: {max_batch_events: 10}")
	cfgPath := writeConfig(t, hookCfg+fmt.Sprintf(
		"  - {id: acme-s3, tenant: acme, type: s3, window: 2s, s3: {bucket: %s, prefix: acme, endpoint: %s}}\n", bucket, s3.Endpoint))
	bin := testenv.Build(t, "./pipelines/stream")
	// How long each step may take: on Flink, with the job submitted again and CI's
	// other tests beside it, longer.
	patience := 90 * time.Second
	if mode == "flink" {
		patience = 5 * time.Minute
	}
	start := func() (*streamJob, *testenv.Workers) {
		var w *testenv.Workers
		switch mode {
		case "embedded":
			return startConfig(t, tp, cfgPath), nil
		case "flink":
			w = testenv.WorkerPool(t, bin)
			w.Flags = append([]string{"--runner=flink", "--endpoint=" + flinkEndpoint}, w.Flags...)
		default:
			w = testenv.ExternalWorkers(t, bin)
		}
		// SIGINT drains only readers in the launcher's process (kafkaio.Drain): with
		// the workers elsewhere the launcher cancels the job once --shutdown-timeout
		// has passed, which need not be the default minute here.
		return startConfig(t, tp, cfgPath, append(w.Flags, "--shutdown-timeout", "5s")...), w
	}
	stored := func() map[string]int { // impression key -> objects holding it
		held := map[string]int{}
		for key, body := range s3.DataObjects(t, bucket, "acme/") {
			recs, err := encode.ReadObject(bytes.NewReader(body), encode.NDJSON)
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			for _, r := range recs {
				held[r.Key]++
			}
		}
		return held
	}
	waitStored := func(j *streamJob, want int) {
		t.Helper()
		for deadline := time.Now().Add(patience); len(stored()) < want; time.Sleep(200 * time.Millisecond) {
			select {
			case <-j.exited:
				t.Fatalf("the job ended (exit code %d) with %d of %d impressions stored\n%s", j.cmd.ProcessState.ExitCode(), len(stored()), want, j.stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d of %d impressions stored\n%s", len(stored()), want, j.stderr.String())
			}
		}
	}

	j, workers := start()
	// The pipeline commits: all of a first lot finished, the group's offsets reach
	// the end.
	tp.produce("acme", keys("a", 0, 30)...)
	waitForWithin(t, j, hook, 30, patience)
	waitCommittedWithin(t, j, tp, patience)
	// Two objects of one window: its on-time pane, and a late one. A restart reads
	// them again together, so they would form one pane, of another name.
	at := time.Now()
	tp.produceAt(at, "acme", keys("a", 30, 80)...)
	waitStored(j, 80)
	tp.produceAt(at, "acme", keys("a", 80, 130)...)
	waitStored(j, 130)
	waitForWithin(t, j, hook, 40, patience)
	if workers != nil {
		workers.Kill()
	}
	j.cmd.Process.Kill()
	<-j.exited
	got := hook.Status().UniqueEvents
	var committed int64
	for _, o := range tp.committed() {
		committed += o
	}
	t.Logf("killed with %d of 130 impressions at the webhook, offsets committed past %d records", got, committed)
	if got >= 130 || committed >= 130 {
		t.Fatal("the webhook had everything before the kill: the test proves nothing")
	}

	j, _ = start()
	tp.produce("acme", keys("b", 0, 50)...)
	waitStored(j, 180)
	waitForWithin(t, j, hook, 180, patience)
	time.Sleep(3 * time.Second) // time for a copy to arrive, if one were sent
	if code := j.stop(); code != 0 {
		t.Errorf("exit code %d after SIGINT\n%s", code, j.stderr.String())
	}
	for k, n := range stored() {
		if n != 1 {
			t.Errorf("impression %s is in %d objects", k, n)
		}
	}
	st := hook.Status()
	if st.UniqueEvents != 180 {
		t.Errorf("the webhook got %d unique impressions, want 180", st.UniqueEvents)
	}
	if uncommitted := 130 - committed; int64(st.Duplicates) > uncommitted {
		t.Errorf("the webhook was sent %d impressions again; only %d were not committed", st.Duplicates, uncommitted)
	}
}
