package main

import (
	"strings"
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

// Flink's restart strategy, set in the job server's configuration (the tests' sets
// fixed-delay), recovers the stream by itself when its SDK workers die: the worker
// pool is killed mid-flight and replaced on the same port, as a lost machine would be,
// and Flink restarts the job, which reads on from the group's commits. Had Flink not
// restarted it, the job would have failed and its launcher exited (waitForWithin
// fails then). Every impression reaches the S3 prefix exactly once and the webhook at
// least once.
func TestStreamRecoversOnFlink(t *testing.T) {
	t.Parallel()
	testenv.FlinkJobServer(t) // or skip before starting anything
	tp := topicOn(t, testenv.NewKafka(t).Plain, kafkaio.Security{})
	s3, bucket, s3Cfg := acmeS3(t)
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	cfgPath := writeConfig(t, hookCfg+s3Cfg)
	workers := testenv.FlinkWorkers(t, testenv.Build(t, "./pipelines/stream"))
	j := startConfig(t, tp, cfgPath, append(workers.Flags, "--shutdown-timeout", "5s")...)
	const patience = 5 * time.Minute
	tp.produce("acme", keys("a", 0, 40)...)
	waitForWithin(t, j, hook, 40, patience)
	waitCommittedWithin(t, j, tp, patience)

	workers.Restart(t)
	tp.produce("acme", keys("b", 0, 40)...)
	waitForWithin(t, j, hook, 80, patience)
	stored := waitCopies(t, j, s3, bucket, "acme/", 80, patience)
	if code := j.stop(); code != 0 {
		t.Errorf("exit %d after SIGINT\n%s", code, j.stderr.String())
	}
	onceEach(t, stored, 80)
	if st := hook.Status(); st.UniqueEvents != 80 {
		t.Errorf("the webhook got %d unique impressions, want 80", st.UniqueEvents)
	}
}

// A partition added while the stream runs on Flink with its workers in a worker pool,
// beyond the reach of a drain: the launcher cancels the pipeline (after
// --shutdown-timeout, here 5 s) and submits a new one, which reads the new partition
// from its start and the others from their commits. Every impression reaches the
// webhook, and the new partition's offsets are committed.
func TestStreamReadsAddedPartitionOnFlink(t *testing.T) {
	t.Parallel()
	testenv.FlinkJobServer(t) // or skip before starting anything
	tp := topicOn(t, testenv.NewKafka(t).Plain, kafkaio.Security{})
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	workers := testenv.FlinkWorkers(t, testenv.Build(t, "./pipelines/stream"))
	j := startConfig(t, tp, writeConfig(t, hookCfg), append(workers.Flags, "--shutdown-timeout", "5s")...)
	const patience = 5 * time.Minute
	tp.produce("acme", keys("a", 0, 30)...)
	waitForWithin(t, j, hook, 30, patience)
	tp.addPartition()
	tp.produceTo(3, "acme", keys("added", 0, 20)...)
	waitForWithin(t, j, hook, 50, patience)
	tp.produce("acme", keys("a", 30, 60)...)
	waitForWithin(t, j, hook, 80, patience)
	for deadline := time.Now().Add(patience); tp.committed()[3] != 20; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the added partition's offsets: committed %v, want 20 for partition 3\n%s", tp.committed(), j.stderr.String())
		}
	}
	if code := j.stop(); code != 0 {
		t.Errorf("exit %d after SIGINT\n%s", code, j.stderr.String())
	}
	if !strings.Contains(j.stderr.String(), "reading a partition added to the topic") {
		t.Errorf("no word of the added partition\n%s", j.stderr.String())
	}
	if st := hook.Status(); st.UniqueEvents != 80 {
		t.Errorf("the webhook got %d unique impressions, want 80", st.UniqueEvents)
	}
}
