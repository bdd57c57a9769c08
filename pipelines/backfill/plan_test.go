package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/internal/testenv"
)

// slowFastConfig has two S3 integrations and a webhook limited to one request a
// second, each its own job.
func slowFastConfig(t *testing.T) (cfgPath string, s3 *testenv.S3, bucket string, slow *destsim.Server) {
	t.Helper()
	s3 = testenv.NewS3(t)
	bucket = s3.Bucket(t)
	slow = testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: "initech", RateLimit: 1,
		RetryAfterGrace: 100 * time.Millisecond})
	cfgPath = writeConfig(t, fmt.Sprintf(`
dead_letter: %s
allow_private_destinations: true
integrations:
  - {id: initech-hook, tenant: initech, type: webhook, window: 1h, shards: 1, delivery: {max_batch_events: 25}, webhook: {url: "%s/hook", secret: %q}}
  - {id: acme-s3, tenant: acme, type: s3, s3: {bucket: %s, prefix: acme, endpoint: %s}}
  - {id: globex-s3, tenant: globex, type: s3, s3: {bucket: %s, prefix: globex, endpoint: %s}}
`, t.TempDir(), slow.URL(), hookSecret, bucket, s3.Endpoint, bucket, s3.Endpoint))
	return cfgPath, s3, bucket, slow
}

// The plan runs jobs largest first, and the fast jobs finish while the slow one is
// still running.
func TestPlanLargestFirstSlowJobHoldsNobody(t *testing.T) {
	cfgPath, _, _, _ := slowFastConfig(t)
	plan := runBackfill(t, "--config", cfgPath, "--input", sampleGlob, "--jobs-by", "integration", "--plan")
	if plan.code != 0 || !strings.Contains(plan.stdout, "plan: 3 jobs") {
		t.Fatalf("--plan: exit %d\n%s%s", plan.code, plan.stdout, plan.stderr)
	}
	r := runBackfill(t, "--config", cfgPath, "--input", sampleGlob, "--jobs-by", "integration", "--parallel-jobs", "2")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	jobs := r.report.Jobs
	if len(jobs) != 3 {
		t.Fatalf("%d jobs in the report", len(jobs))
	}
	for i := 1; i < len(jobs); i++ {
		if jobs[i].Estimate > jobs[i-1].Estimate {
			t.Errorf("job %s (~%d) planned after the smaller %s (~%d)", jobs[i].ID, jobs[i].Estimate, jobs[i-1].ID, jobs[i-1].Estimate)
		}
		if jobs[i].Started.Before(jobs[i-1].Started) {
			t.Errorf("job %s started before %s, which the plan puts first", jobs[i].ID, jobs[i-1].ID)
		}
	}
	var slowJob report.Job
	for _, j := range jobs {
		if j.Status != "done" {
			t.Errorf("job %s: %s %s", j.ID, j.Status, j.Error)
		}
		if strings.HasPrefix(j.ID, "initech-hook") {
			slowJob = j
		}
	}
	for _, j := range jobs {
		if j.ID == slowJob.ID {
			continue
		}
		t.Logf("%s: %v to %v; slow job %v to %v", j.ID, j.Started.Format("15:04:05.000"), j.Finished.Format("15:04:05.000"),
			slowJob.Started.Format("15:04:05.000"), slowJob.Finished.Format("15:04:05.000"))
		if !j.Finished.Before(slowJob.Finished) {
			t.Errorf("fast job %s finished at %v, after the slow one (%v)", j.ID, j.Finished, slowJob.Finished)
		}
	}
}

// Killed mid-run and run again, the backfill skips the jobs it finished and redoes
// the rest: every impression ends in exactly one object.
func TestKilledBackfillResumes(t *testing.T) {
	t.Parallel()
	cfgPath, s3, _, slow := slowFastConfig(t)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	bin := testenv.Build(t, "./pipelines/backfill")
	args := []string{"--config", cfgPath, "--input", sampleGlob, "--jobs-by", "integration", "--parallel-jobs", "1"}
	cmd := exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The slow webhook's job is the largest, so it runs first; kill the backfill
	// once it has started delivering, before it finishes.
	deadline := time.Now().Add(60 * time.Second)
	for slow.Status().Accepted < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if slow.Status().Accepted < 2 {
		t.Fatal("the slow job never started delivering")
	}
	// Let it finish one job, then kill it again with a state to resume from.
	cmd = exec.Command(bin, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	statePattern := filepath.Join(cfg.DeadLetter, "_state", "*.json")
	for time.Now().Before(deadline.Add(60*time.Second)) && doneJobs(t, statePattern) == 0 {
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	finished := doneJobs(t, statePattern)
	if finished == 0 || finished == 3 {
		t.Fatalf("%d jobs finished before the kill; want some but not all", finished)
	}

	r := runBackfill(t, args...)
	if r.code != 0 {
		t.Fatalf("rerun: exit %d\n%s", r.code, r.stderr)
	}
	skipped := 0
	for _, j := range r.report.Jobs {
		if j.Status == "skipped" {
			skipped++
		}
	}
	if skipped != finished {
		t.Errorf("rerun skipped %d jobs; %d were finished", skipped, finished)
	}
	in := readInput(t, sampleGlob)
	for i, ic := range cfg.Integrations {
		// Skipped jobs report what they did in the earlier run, not zeros.
		if want, rep := int64(len(in.want(ic, time.Time{}, time.Time{}))), r.report.Integrations[i]; rep.Delivered != want {
			t.Errorf("rerun reports %d delivered for %s, want %d (its job's counts carried over if skipped)", rep.Delivered, ic.ID, want)
		}
		switch ic.Type {
		case config.S3:
			got, _ := delivered(t, s3, ic)
			checkExactlyOnce(t, ic.ID, in.want(ic, time.Time{}, time.Time{}), got)
		case config.Webhook:
			if n, want := len(slow.Events()), len(in.want(ic, time.Time{}, time.Time{})); n != want {
				t.Errorf("webhook holds %d impressions, want %d", n, want)
			}
		}
	}
}

func doneJobs(t *testing.T, pattern string) int {
	files, _ := filepath.Glob(pattern)
	n := 0
	for _, f := range files {
		var st struct {
			Done map[string]any `json:"done"`
		}
		if b, err := os.ReadFile(f); err == nil && json.Unmarshal(b, &st) == nil {
			n += len(st.Done)
		}
	}
	return n
}
