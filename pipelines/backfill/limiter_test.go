package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/internal/testenv"
)

// The jobs of one integration (slices cut by --max-job-impressions) run one at a
// time, every integration's beside the others': all of a destination's requests go
// through one limiter wherever the workers run, so they keep to its rate, and no
// request arrives inside an announced Retry-After (the grace forgives one request per
// announcement).
func TestJobsShareADestinationsLimit(t *testing.T) {
	t.Parallel()
	hooks := map[string]*destsim.Server{}
	var lines []string
	for _, tenant := range []string{"acme", "globex"} {
		sim := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: tenant, RateLimit: 2,
			RetryAfterGrace: 100 * time.Millisecond})
		hooks[tenant+"-hook"] = sim
		lines = append(lines, fmt.Sprintf(`  - {id: %s-hook, tenant: %s, type: webhook, shards: 1, delivery: {requests_per_second: 20, max_batch_events: 5}, webhook: {url: "%s/hook", secret: %q}}`,
			tenant, tenant, sim.URL(), hookSecret))
	}
	cfgPath := writeConfig(t, fmt.Sprintf("dead_letter: %s\nallow_private_destinations: true\nintegrations:\n%s\n", t.TempDir(), strings.Join(lines, "\n")))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	r := runBackfill(t, "--config", cfgPath, "--input", sampleGlob, "--max-job-impressions", "40")
	if r.code != 0 || r.report == nil {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var sameAtOnce, othersAtOnce bool
	for i, a := range r.report.Jobs {
		for _, b := range r.report.Jobs[i+1:] {
			overlap := a.Started.Before(b.Finished) && b.Started.Before(a.Finished)
			if sameIntegration(a, b) {
				sameAtOnce = sameAtOnce || overlap
			} else {
				othersAtOnce = othersAtOnce || overlap
			}
		}
	}
	if sameAtOnce {
		t.Error("two jobs of one integration ran at once")
	}
	if !othersAtOnce || len(r.report.Jobs) < 4 {
		t.Fatalf("%d jobs, none of two integrations at once; the test needs several jobs an integration, and both integrations' side by side", len(r.report.Jobs))
	}
	in := readInput(t, sampleGlob)
	for _, ic := range cfg.Integrations {
		sim := hooks[ic.ID]
		st := sim.Status()
		want := in.want(ic, time.Time{}, time.Time{})
		if len(sim.Events()) != len(want) || st.Duplicates != 0 {
			t.Errorf("%s holds %d impressions (%d duplicates), want %d once each", ic.ID, len(sim.Events()), st.Duplicates, len(want))
		}
		if st.IgnoredRetryAfter != 0 {
			t.Errorf("%s: %d requests arrived inside an announced Retry-After (%d requests, %d throttled)", ic.ID, st.IgnoredRetryAfter, st.Requests, st.Throttled)
		}
		if st.Throttled == 0 {
			t.Errorf("%s was never throttled (%d requests); the test proves nothing", ic.ID, st.Requests)
		}
		t.Logf("%s: %d requests, %d throttled", ic.ID, st.Requests, st.Throttled)
	}
}

func sameIntegration(a, b report.Job) bool {
	return strings.SplitN(a.ID, "@", 2)[0] == strings.SplitN(b.ID, "@", 2)[0]
}
