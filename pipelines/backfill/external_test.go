package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"
	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/testenv"
)

// The backfill with its SDK workers in another process (prism as a job server, the
// workers in a --worker-pool process of the same binary, as on a cluster): nothing it
// delivers or reports may rest on globals of the launching process. Every impression
// reaches S3 and a webhook exactly once, the report's counts come from the runner,
// and invalid lines are dead-lettered.
func TestBackfillWithWorkersOutOfProcess(t *testing.T) {
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	deadLetter := t.TempDir()
	hook := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: "globex",
		RateLimit: 5, RetryAfterGrace: 100 * time.Millisecond})
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %[1]s
allow_private_destinations: true
integrations:
  - {id: acme-s3, tenant: acme, type: s3, window: 15m, s3: {bucket: %[2]s, prefix: acme, endpoint: %[3]s}}
  - {id: globex-hook, tenant: globex, type: webhook, delivery: {max_batch_events: 20}, webhook: {url: "%[4]s/hook", secret: %[5]q}}
`, deadLetter, bucket, s3.Endpoint, hook.URL(), hookSecret))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	jobPort, poolPort := freePort(t), freePort(t)
	if _, err := prism.CreateJobServer(ctx, prism.Options{Port: jobPort}); err != nil {
		t.Fatal(err)
	}
	pool := exec.Command(testenv.Build(t, "./pipelines/backfill"), "--worker-pool", strconv.Itoa(poolPort))
	var poolOut strings.Builder
	pool.Stderr = &poolOut
	t.Cleanup(func() { t.Logf("worker pool:\n%s", poolOut.String()) })
	if err := pool.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Process.Kill(); pool.Wait() })
	waitListening(t, poolPort)

	r := runBackfill(t, "--config", cfgPath, "--input", sampleGlob, "--runner", "universal",
		"--endpoint", "localhost:"+strconv.Itoa(jobPort), "--environment_type", "EXTERNAL",
		"--environment_config", "localhost:"+strconv.Itoa(poolPort))
	if r.code != 0 || r.report == nil {
		t.Fatalf("exit code %d, want 0\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("backfill:\n%s", r.stderr)
	in := readInput(t, sampleGlob)
	for i, ic := range cfg.Integrations {
		want := in.want(ic, time.Time{}, time.Time{})
		if len(want) == 0 {
			t.Fatalf("%s: the sample routes nothing to it; the test proves nothing", ic.ID)
		}
		if ic.Type == config.S3 {
			got, _ := delivered(t, s3, ic)
			checkExactlyOnce(t, ic.ID, want, got)
		} else {
			events := hook.Events()
			if len(events) != len(want) {
				t.Errorf("%s holds %d impressions, want %d", ic.ID, len(events), len(want))
			}
			for id := range want {
				if e := events[uuid.UUID(id).String()]; e.Count != 1 {
					t.Errorf("%s: impression %x received %d times", ic.ID, id, e.Count)
				}
			}
		}
		if rep := r.report.Integrations[i]; rep.Impressions != int64(len(want)) || rep.Delivered != int64(len(want)) {
			t.Errorf("report for %s = %+v, want %d impressions delivered", ic.ID, rep, len(want))
		}
	}
	if r.report.InvalidLines != int64(len(in.invalid)) {
		t.Errorf("report: %d invalid lines, want %d", r.report.InvalidLines, len(in.invalid))
	}
	checkDeadLetter(t, deadLetter, in.invalid)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitListening(t *testing.T, port int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", "localhost:"+strconv.Itoa(port)); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on port %d", port)
		}
	}
}
