package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/kafkaio"
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
// the topic is on a real Kafka broker. A second webhook refuses everything (400): its
// impressions are dead-lettered, and the last run exits 3 and reports what it
// dead-lettered even where SIGINT ends in a cancel, which leaves no runner metrics.
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
	if mode == "flink" { // where users run it: a real broker too
		testenv.FlinkJobServer(t) // or skip before starting anything
		tp = topicOn(t, testenv.NewKafka(t).Plain, kafkaio.Security{})
	} else {
		tp = newTopic(t)
	}
	s3, bucket, s3Cfg := acmeS3(t)
	// 10 impressions a second: the webhook's copies are in flight long after the
	// objects are stored.
	hook, hookCfg := webhook(t, "acme", destsim.Options{RateLimit: 1, Burst: 1}, ", delivery: {max_batch_events: 10}")
	refuses := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Status: 400})
	cfgPath := writeConfig(t, hookCfg+s3Cfg+
		fmt.Sprintf("  - {id: acme-refused, tenant: acme, type: webhook, window: 2s, webhook: {url: %q, secret: %q}}\n", refuses.URL()+"/h", hookSecret))
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
			w = testenv.FlinkWorkers(t, bin)
		default:
			w = testenv.ExternalWorkers(t, bin)
		}
		// SIGINT drains only readers in the launcher's process (kafkaio.Drain): with
		// the workers elsewhere the launcher cancels the job once --shutdown-timeout
		// has passed, which need not be the default minute here.
		return startConfig(t, tp, cfgPath, append(w.Flags, "--shutdown-timeout", "5s")...), w
	}
	waitStored := func(j *streamJob, want int) { waitCopies(t, j, s3, bucket, "acme/", want, patience) }

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
	tp.produceInvalid(3)
	waitStored(j, 180)
	waitForWithin(t, j, hook, 180, patience)
	time.Sleep(3 * time.Second) // time for a copy to arrive, if one were sent
	if code := j.stop(); code != 3 {
		t.Errorf("exit code %d after SIGINT, want 3 (impressions dead-lettered)\n%s", code, j.stderr.String())
	}
	// The last run read the b lot and whatever the kill left uncommitted: the
	// refusing webhook's dead letters are at least the b lot, whoever counted them.
	data, err := os.ReadFile(filepath.Join(filepath.Dir(cfgPath), "report.json"))
	var rep struct {
		InvalidLines int64  `json:"invalid_lines"`
		Incomplete   string `json:"incomplete"`
		Integrations []struct {
			ID           string `json:"id"`
			DeadLettered int64  `json:"dead_lettered"`
		} `json:"integrations"`
	}
	if err != nil || json.Unmarshal(data, &rep) != nil {
		t.Fatalf("report: %s (%v)", data, err)
	}
	for _, in := range rep.Integrations {
		if in.ID == "acme-refused" && in.DeadLettered < 50 {
			t.Errorf("report: acme-refused dead-lettered %d, want ≥ 50\n%s", in.DeadLettered, data)
		}
	}
	if rep.InvalidLines != 3 {
		t.Errorf("report: %d invalid lines, want 3\n%s", rep.InvalidLines, data)
	}
	t.Logf("counts incomplete: %q", rep.Incomplete)
	onceEach(t, copies(t, s3, bucket, "acme/"), 180)
	st := hook.Status()
	if st.UniqueEvents != 180 {
		t.Errorf("the webhook got %d unique impressions, want 180", st.UniqueEvents)
	}
	if uncommitted := 130 - committed; int64(st.Duplicates) > uncommitted {
		t.Errorf("the webhook was sent %d impressions again; only %d were not committed", st.Duplicates, uncommitted)
	}
}
