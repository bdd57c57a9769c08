package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/runners"
)

// A backfill whose second job failed is resumed: the job that dead-lettered in the
// first run is skipped, yet the resumed run reports what it did and exits 3, as the
// first run would have; it never reports zeros for work it skipped. Once complete,
// running it again does it all again.
func TestResumeCarriesEarlierRun(t *testing.T) {
	t.Parallel()
	hook := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: "acme", Status: 400})
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	var broken atomic.Bool // uploads answered 503 until the store is "fixed"
	broken.Store(true)
	endpoint := testenv.FaultyS3(t, s3.Endpoint, func(method, _ string, _ int) testenv.Fault {
		if method == http.MethodPut && broken.Load() {
			return testenv.Unavailable
		}
		return testenv.Pass
	})
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
allow_private_destinations: true
integrations:
  - {id: acme-hook, tenant: acme, type: webhook, webhook: {url: "%s/hook", secret: %q}}
  - {id: globex-s3, tenant: globex, type: s3, s3: {bucket: %s, endpoint: %s}}
`, t.TempDir(), hook.URL(), hookSecret, bucket, endpoint))
	cfg, _ := config.Load(cfgPath)
	in := readInput(t, sampleGlob)
	wantHook := int64(len(in.want(cfg.Integrations[0], time.Time{}, time.Time{})))
	args := []string{"--config", cfgPath, "--input", sampleGlob, "--jobs-by", "integration", "--parallel-jobs", "1"}
	jobStatus := func(r result, id string) (status, previous string) {
		for _, j := range r.report.Jobs {
			if j.Integrations[0] == id {
				return j.Status, j.PreviousStatus
			}
		}
		return "", ""
	}

	first := runBackfill(t, args...)
	if first.code != 1 || !strings.Contains(first.stderr, "globex-s3") {
		t.Fatalf("first run: exit %d, want 1 naming the failed job\n%s", first.code, first.stderr)
	}
	if st, _ := jobStatus(first, "acme-hook"); st != "dead_lettered" || first.report.Integrations[0].DeadLettered != wantHook {
		t.Fatalf("first run: acme-hook job %s, %d dead-lettered; want dead_lettered, %d", st, first.report.Integrations[0].DeadLettered, wantHook)
	}
	requests := hook.Status().Requests

	broken.Store(false)
	resumed := runBackfill(t, args...)
	if resumed.code != 3 {
		t.Fatalf("resumed run: exit %d, want 3 (the skipped job dead-lettered)\n%s", resumed.code, resumed.stderr)
	}
	t.Logf("the resumed run prints:\n%s", resumed.stdout)
	if !strings.Contains(resumed.stdout, "1 of 2 jobs were done by an earlier run of this backfill") {
		t.Errorf("the resumed run does not say it skipped a job:\n%s", resumed.stdout)
	}
	if st, prev := jobStatus(resumed, "acme-hook"); st != "skipped" || prev != "dead_lettered" {
		t.Errorf("resumed run: acme-hook job %s (previously %s), want skipped (previously dead_lettered)", st, prev)
	}
	if n := hook.Status().Requests; n != requests {
		t.Errorf("the resumed run sent %d requests for a job done before", n-requests)
	}
	hookRep, s3Rep := resumed.report.Integrations[0], resumed.report.Integrations[1]
	if hookRep.Impressions != wantHook || hookRep.DeadLettered != wantHook {
		t.Errorf("resumed run reports %+v for the skipped job; want its %d impressions dead-lettered", hookRep, wantHook)
	}
	wantS3 := in.want(cfg.Integrations[1], time.Time{}, time.Time{})
	if s3Rep.Delivered != int64(len(wantS3)) || resumed.report.Lines != int64(in.lines) {
		t.Errorf("resumed run: %d delivered to S3, %d lines; want %d, %d", s3Rep.Delivered, resumed.report.Lines, len(wantS3), in.lines)
	}
	got, _ := delivered(t, s3, cfg.Integrations[1])
	checkExactlyOnce(t, "globex-s3", wantS3, got)

	again := runBackfill(t, args...)
	if again.code != 3 || hook.Status().Requests == requests {
		t.Errorf("a rerun of the complete backfill: exit %d, %d new requests; want 3 and the webhook job done again",
			again.code, hook.Status().Requests-requests)
	}
	if st, _ := jobStatus(again, "acme-hook"); st != "dead_lettered" {
		t.Errorf("rerun: acme-hook job %s, want dead_lettered", st)
	}
}

// Reading input fails loudly. A download reset mid-object, or answered 503, is read
// again from where it stopped (everything delivered once, exit 0); one that keeps
// failing fails the run, naming the file and the cause (exit 1), in every job that
// reads it.
func TestInputReadErrors(t *testing.T) {
	t.Parallel()
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	uploadSample(t, s3, bucket)
	in := readInput(t, sampleGlob)
	for _, c := range []struct {
		name  string
		fault func(method, path string, n int) testenv.Fault
		code  int
	}{
		// The planner's sample is download 0; the job's first two attempts break off.
		{"reset twice", func(m, p string, n int) testenv.Fault {
			if m == http.MethodGet && strings.HasSuffix(p, ".gz") && (n == 1 || n == 2) {
				return testenv.Reset
			}
			return testenv.Pass
		}, 0},
		{"reset always", func(m, p string, n int) testenv.Fault {
			if m == http.MethodGet && strings.HasSuffix(p, "part-001.ndjson.gz") && n > 0 {
				return testenv.Reset
			}
			return testenv.Pass
		}, 1},
		// 503s past the S3 client's own three attempts.
		{"503 four times", func(m, p string, n int) testenv.Fault {
			if m == http.MethodGet && strings.HasSuffix(p, "part-001.ndjson.gz") && n > 0 && n <= 4 {
				return testenv.Unavailable
			}
			return testenv.Pass
		}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			endpoint := testenv.FaultyS3(t, s3.Endpoint, c.fault)
			prefix := strings.ReplaceAll(c.name, " ", "-")
			cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %[1]s
files: {s3: {endpoint: %[2]s, region: us-east-1}}
integrations:
  - {id: acme-s3, tenant: acme, type: s3, s3: {bucket: %[3]s, prefix: %[5]s/acme, endpoint: %[4]s}}
  - {id: globex-s3, tenant: globex, type: s3, window: 1h, s3: {bucket: %[3]s, prefix: %[5]s/globex, endpoint: %[4]s}}
`, t.TempDir(), endpoint, bucket, s3.Endpoint, prefix))
			cfg, _ := config.Load(cfgPath)
			r := runBackfill(t, "--config", cfgPath, "--input", "s3://"+bucket+"/in/part-*", "--jobs-by", "integration")
			if r.code != c.code {
				t.Fatalf("exit %d, want %d\n%s", r.code, c.code, r.stderr)
			}
			if c.code != 0 {
				if !strings.Contains(r.stderr, "part-001.ndjson.gz") || !strings.Contains(r.stderr, "5 attempts") {
					t.Errorf("the failure does not name the file and the attempts:\n%s", r.stderr)
				}
				for _, j := range r.report.Jobs {
					if j.Status != "failed" {
						t.Errorf("job %s: %s, want failed: every job reads the file", j.ID, j.Status)
					}
				}
				return
			}
			for _, ic := range cfg.Integrations {
				got, _ := delivered(t, s3, ic)
				checkExactlyOnce(t, ic.ID, in.want(ic, time.Time{}, time.Time{}), got)
			}
		})
	}
}

// The exit code does not rest on the runner's metrics: with none (as the universal
// runner may return), what a job dead-lettered is counted from what it wrote.
func TestOutcomeWithoutMetrics(t *testing.T) {
	beam.Init()
	store := t.TempDir()
	imp := impression.Impression{Tenant: "acme", EnvironmentName: "production", Key: "k", Split: "s", Treatment: "on", Time: 1}
	imp.ID = imp.ComputeID()
	p, s := beam.NewPipelineWithRoot()
	records := beam.Create(s, deadletterio.Undeliverable("acme-hook", &imp, 400, 1, "HTTP 400", "batch-1"),
		deadletterio.Invalid([]byte("not json"), "line is not a JSON object", "f.ndjson:1", 0))
	run := receiptRun("acme-hook@start-end")
	deadletterio.Write(s, store, records, deadletterio.Receipts(run))
	if _, err := runners.Run(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	counts, tally, err := outcome(context.Background(), store, run, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tally.Impressions() != 1 || counts.Get("acme-hook", metricname.DeadLettered) != 1 ||
		counts.Get(metricname.Job, metricname.InvalidLines) != 1 {
		t.Errorf("without metrics: tally %+v, counts %v; want 1 dead-lettered for acme-hook, 1 invalid line", tally, counts)
	}
	if left, _ := filepath.Glob(filepath.Join(store, "_receipts", "*", "*")); len(left) != 0 {
		t.Errorf("receipts left after counting: %v", left)
	}
}

// Jobs read the files their plan matched, as they were then. Here a file is rewritten,
// or removed, while the first of several jobs stores its objects (it read its input
// before): the jobs after it fail naming the file (exit 1), none reports done having
// read less. Run again, the backfill reads the files as they are now, and the prefix
// holds each impression of them once.
func TestInputChangedSincePlan(t *testing.T) {
	t.Parallel()
	for _, change := range []string{"rewritten", "removed"} {
		t.Run(change, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			files, _ := filepath.Glob(sampleGlob)
			for _, f := range files {
				b, _ := os.ReadFile(f)
				os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644)
			}
			victim := filepath.Join(dir, "part-002.ndjson")
			s3 := testenv.NewS3(t)
			bucket := s3.Bucket(t)
			var changed atomic.Bool
			endpoint := testenv.FaultyS3(t, s3.Endpoint, func(method, _ string, _ int) testenv.Fault {
				if method == http.MethodPut && !changed.Swap(true) {
					var err error
					if change == "removed" {
						err = os.Remove(victim)
					} else {
						err = os.WriteFile(victim, []byte(goodLine("rewritten", 1767225600000)+"\n"), 0o644)
					}
					if err != nil {
						t.Error(err)
					}
				}
				return testenv.Pass
			})
			cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, window: 1h, s3: {bucket: %s, prefix: acme, endpoint: %s}}
`, t.TempDir(), bucket, endpoint))
			args := []string{"--config", cfgPath, "--input", filepath.Join(dir, "*"), "--slice", "1h", "--parallel-jobs", "1"}
			r := runBackfill(t, args...)
			if !changed.Load() {
				t.Fatal("no object was stored: the test changed nothing")
			}
			if len(r.report.Jobs) < 2 {
				t.Fatalf("%d jobs; the test needs a job after the first", len(r.report.Jobs))
			}
			if r.code != 1 || !strings.Contains(r.stderr, victim) || !strings.Contains(r.stderr, "since the backfill was planned") {
				t.Fatalf("exit %d, want 1 naming %s as changed since the plan\n%s", r.code, victim, r.stderr)
			}
			for _, line := range strings.Split(r.stderr, "\n") {
				if strings.Contains(line, "since the backfill was planned") {
					t.Logf("%s", line)
					break
				}
			}
			failed := 0
			for i, j := range r.report.Jobs {
				switch {
				case j.Status == "failed":
					failed++
				case j.Status == "done" && i > 0:
					t.Errorf("job %s done, though it ran after its input changed", j.ID)
				}
			}
			if failed == 0 {
				t.Errorf("no job failed: %+v", r.report.Jobs)
			}

			again := runBackfill(t, args...)
			if again.code != 0 {
				t.Fatalf("run again: exit %d\n%s", again.code, again.stderr)
			}
			cfg, _ := config.Load(cfgPath)
			held := prefixHolds(t, s3, bucket, "acme", "acme")
			want := readInput(t, filepath.Join(dir, "*")).want(cfg.Integrations[0], time.Time{}, time.Time{})
			for id := range want {
				if held[id] != 1 {
					t.Errorf("impression %x is in %d objects, want 1", id, held[id])
				}
			}
		})
	}
}
