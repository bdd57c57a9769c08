package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jobpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/jobmanagement_v1"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/internal/testenv"
)

// The backfill's exit codes on Flink are those on prism, each shown by a prism test's
// backfill with the runner flags: 2 for bad flags or configuration, refused before
// anything is written (every case of TestUsageErrors); 3 when some impressions or
// files were dead-lettered (TestHostileInput: damaged files, a 2 MiB line); 1 when a
// job failed (TestUploadRefused: the cause in one line), submitted with
// --runner=universal, Beam's other name for a job server's runner.
func TestExitCodesOnFlink(t *testing.T) {
	t.Parallel()
	flink := testenv.FlinkFlags(t)
	universal := append([]string{"--runner=universal"}, flink[1:]...)
	t.Run("2", func(t *testing.T) { t.Parallel(); testUsageErrors(t, flink...) })
	t.Run("3", func(t *testing.T) { t.Parallel(); testHostileInput(t, flink...) })
	t.Run("1", func(t *testing.T) { t.Parallel(); testUploadRefused(t, universal...) })
}

// Ctrl-C on a backfill submitted to Flink cancels its job on the job server. Left
// running there, the job would go on delivering after the launcher has said it
// stopped, beside the rerun that resumes it. The launcher exits 1 (the work was not
// done) once the job server has the job CANCELLED. The workers run in a worker pool
// of their own, as on a cluster, so that nothing in the launcher's process ends the
// job with it.
func TestInterruptCancelsJobOnFlink(t *testing.T) {
	t.Parallel()
	endpoint := testenv.FlinkJobServer(t)
	// One impression a request, one request a second: minutes of work.
	hook := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: "acme",
		RateLimit: 1, Burst: 1, RetryAfterGrace: 100 * time.Millisecond})
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
allow_private_destinations: true
integrations:
  - {id: acme-hook, tenant: acme, type: webhook, delivery: {max_batch_events: 1, requests_per_second: 1}, webhook: {url: %q, secret: %q}}
`, t.TempDir(), hook.URL()+"/h", hookSecret))
	bin := testenv.Build(t, "./pipelines/backfill")
	pool := testenv.WorkerPool(t, bin)
	// The job among the job server's others; Flink's keeps letters and digits of a name.
	name := fmt.Sprintf("outflowinterrupt%d", time.Now().UnixNano())
	reportPath := filepath.Join(t.TempDir(), "report.json")
	cmd := exec.Command(bin, append([]string{"--config", cfgPath, "--input", sampleGlob, "--report", reportPath,
		"--runner=flink", "--endpoint=" + endpoint, "--job_name=" + name}, pool.Flags...)...)
	var stderr testenv.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })

	// Interrupt once the job delivers.
	for deadline := time.Now().Add(3 * time.Minute); hook.Status().Accepted == 0; time.Sleep(100 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("the backfill exited (code %d) before it delivered anything\n%s", cmd.ProcessState.ExitCode(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing delivered within 3 minutes\n%s", stderr.String())
		}
	}
	jobs := testenv.PortableJobs(t, endpoint, name)
	if len(jobs) != 1 || jobs[0].State != jobpb.JobState_RUNNING {
		t.Fatalf("the job server has %+v named %s; want one job, RUNNING", jobs, name)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	<-exited
	t.Logf("backfill:\n%s", stderr.String())
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit code %d after SIGINT, want 1: the work was not done", code)
	}
	if jobs := testenv.PortableJobs(t, endpoint, name); len(jobs) != 1 || jobs[0].State != jobpb.JobState_CANCELLED {
		t.Errorf("after the launcher exited the job server has %+v; want the job CANCELLED", jobs)
	}
	var rep report.Report
	if b, err := os.ReadFile(reportPath); err != nil {
		t.Error(err)
	} else if err := json.Unmarshal(b, &rep); err != nil || rep.ExitCode != 1 || !strings.Contains(rep.Error, "interrupted") {
		t.Errorf("report: exit code %d, error %q (%v); want 1, interrupted", rep.ExitCode, rep.Error, err)
	}
	cfg, _ := config.Load(cfgPath)
	if n := len(readInput(t, sampleGlob).want(cfg.Integrations[0], time.Time{}, time.Time{})); hook.Status().UniqueEvents >= n {
		t.Errorf("the webhook holds all %d impressions: the interrupt came too late to prove anything", n)
	}
}
