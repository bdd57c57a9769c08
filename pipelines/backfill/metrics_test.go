package main

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/testenv"
)

// With --metrics-addr a backfill serves its report's counts while its jobs run: a
// finished job's integrations at their final values, equal to the report's at the
// end, and the jobs by status.
func TestBackfillMetrics(t *testing.T) {
	t.Parallel()
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	hook := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: "globex",
		RateLimit: 1, Burst: 1, RetryAfterGrace: 100 * time.Millisecond})
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %[1]s
allow_private_destinations: true
integrations:
  - {id: acme-s3, tenant: acme, type: s3, window: 15m, s3: {bucket: %[2]s, prefix: acme, endpoint: %[3]s}}
  - {id: globex-hook, tenant: globex, type: webhook, delivery: {max_batch_events: 10}, webhook: {url: "%[4]s/hook", secret: %[5]q}}
`, t.TempDir(), bucket, s3.Endpoint, hook.URL(), hookSecret))
	addr := testenv.FreeAddr(t)
	done := make(chan result, 1)
	go func() { done <- runBackfill(t, "--config", cfgPath, "--input", sampleGlob, "--metrics-addr", addr) }()

	type scraped map[string]map[string]float64 // name -> integration or status -> value
	scrape := func() scraped {
		m, err := testenv.Scrape(addr, "integration")
		if err != nil {
			return nil // not serving yet
		}
		jobs, _ := testenv.Scrape(addr, "status")
		m["outflow_backfill_jobs"] = jobs["outflow_backfill_jobs"]
		return m
	}
	var during scraped
	var hookDuring []float64 // the webhook's deliveries, as scraped while its job ran
	var r result
	for r.report == nil {
		select {
		case r = <-done:
		case <-time.After(200 * time.Millisecond):
			if m := scrape(); m["outflow_backfill_jobs"]["done"] == 1 && m["outflow_backfill_jobs"]["running"] == 1 {
				during = m // the S3 job is done, the slow webhook's runs
				hookDuring = append(hookDuring, m["outflow_delivered_impressions_total"]["globex-hook"])
			}
		}
	}
	if r.code != 0 {
		t.Fatalf("exit code %d\n%s", r.code, r.stderr)
	}
	if during == nil {
		t.Fatal("never scraped while one job was done and the other running")
	}
	if during["outflow_backfill_jobs"]["planned"] != 2 {
		t.Errorf("jobs planned: %v, want 2", during["outflow_backfill_jobs"]["planned"])
	}
	in := r.report.Integrations[0] // acme-s3, finished while the scrape was made
	if in.ID != "acme-s3" || in.Delivered == 0 {
		t.Fatalf("report: %+v", in)
	}
	if got := during["outflow_delivered_impressions_total"]["acme-s3"]; got != float64(in.Delivered) {
		t.Errorf("outflow_delivered_impressions_total{acme-s3} = %v while the webhook ran; the report says %d", got, in.Delivered)
	}
	if got := during["outflow_impressions_total"]["acme-s3"]; got != float64(in.Impressions) {
		t.Errorf("outflow_impressions_total{acme-s3} = %v while the webhook ran; the report says %d", got, in.Impressions)
	}
	// The running job's deliveries show as they happen, not only once it ends.
	final := float64(r.report.Integrations[1].Delivered)
	if !slices.ContainsFunc(hookDuring, func(v float64) bool { return v > 0 && v < final }) {
		t.Errorf("the webhook's deliveries as scraped while its job ran: %v; want some between 0 and its final %v", hookDuring, final)
	}
}
