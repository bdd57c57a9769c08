package main

import (
	"fmt"
	"testing"
	"time"

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
	t.Parallel()
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

	workers := testenv.ExternalWorkers(t, testenv.Build(t, "./pipelines/backfill"))
	r := runBackfill(t, append([]string{"--config", cfgPath, "--input", sampleGlob}, workers.Flags...)...)
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
