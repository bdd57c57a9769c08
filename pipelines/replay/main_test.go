package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/deadletterio"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	sampleGlob = "../../testdata/sample/*"
	secret     = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

func readReport(t *testing.T, path string) report.Report {
	t.Helper()
	var r report.Report
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// A destination that refuses everything: its impressions are dead-lettered with the
// reason and the backfill exits 3; once it is fixed, replay delivers them all, and a
// second replay sends nothing.
func TestDeadLetterThenReplay(t *testing.T) {
	hook := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: secret, Tenant: "acme", Status: 400})
	amp := testenv.Destination(t, destsim.Options{Kind: destsim.Amplitude, APIKey: "amp-key"})
	store := filepath.Join(t.TempDir(), "dead-letter")
	cfgPath := filepath.Join(t.TempDir(), "outflow.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
dead_letter: %s
allow_private_destinations: true
integrations:
  - {id: acme-hook, tenant: acme, type: webhook, webhook: {url: "%s/split", secret: %q, gzip: true}}
  - {id: globex-amp, tenant: globex, type: amplitude, amplitude: {api_key: amp-key, endpoint: %q}}
`, store, hook.URL(), secret, amp.URL())), 0o644)
	dir := t.TempDir()

	backfill := testenv.Run(t, testenv.Build(t, "./pipelines/backfill"),
		"--config", cfgPath, "--input", sampleGlob, "--report", filepath.Join(dir, "backfill.json"))
	if backfill.Code != 3 {
		t.Fatalf("backfill exit code %d, want 3\n%s%s", backfill.Code, backfill.Stdout, backfill.Stderr)
	}
	rep := readReport(t, filepath.Join(dir, "backfill.json"))
	hookRep, ampRep := rep.Integrations[0], rep.Integrations[1]
	if hookRep.DeadLettered == 0 || hookRep.DeadLettered != hookRep.Impressions || hookRep.Delivered != 0 {
		t.Fatalf("report for the refusing webhook: %+v", hookRep)
	}
	if ampRep.Delivered == 0 || ampRep.Delivered != ampRep.Impressions || ampRep.DeadLettered != 0 {
		t.Errorf("report for the healthy destination: %+v", ampRep)
	}
	if got := amp.Status().UniqueEvents; got != int(ampRep.Impressions) {
		t.Errorf("amplitude holds %d events, report says %d", got, ampRep.Impressions)
	}
	dead := readStore(t, store)
	if len(dead) != int(hookRep.DeadLettered) {
		t.Fatalf("store holds %d undeliverable records, report says %d", len(dead), hookRep.DeadLettered)
	}
	for _, r := range dead {
		if r.Integration != "acme-hook" || r.Status != 400 || !strings.Contains(r.Reason, "HTTP 400") || r.Impression == nil {
			t.Fatalf("record %+v", r)
		}
	}

	hook.Set(destsim.Options{Kind: destsim.Webhook, Secret: secret, Tenant: "acme"}) // fixed
	replay := testenv.Build(t, "./pipelines/replay")
	first := testenv.Run(t, replay, "--config", cfgPath, "--dead-letter", store, "--report", filepath.Join(dir, "replay1.json"))
	if first.Code != 0 {
		t.Fatalf("replay exit code %d\n%s%s", first.Code, first.Stdout, first.Stderr)
	}
	events := hook.Events()
	for _, r := range dead {
		imp := toImpression(r)
		if e := events[imp.ID.String()]; e.Count != 1 {
			t.Errorf("impression %s delivered %d times after replay", imp.Key, e.Count)
		}
	}
	if len(events) != len(dead) {
		t.Errorf("webhook holds %d impressions after replay, want %d", len(events), len(dead))
	}
	rep1 := readReport(t, filepath.Join(dir, "replay1.json"))
	if rep1.Replayed != int64(len(dead)) || rep1.Integrations[0].Delivered != int64(len(dead)) {
		t.Errorf("replay report: replayed %d, delivered %d; want %d", rep1.Replayed, rep1.Integrations[0].Delivered, len(dead))
	}
	if amp.Status().Requests != int(ampRepRequests(rep)) {
		t.Errorf("replay sent requests to amplitude, which had nothing dead-lettered")
	}
	if left := readStore(t, store); len(left) != 0 {
		t.Errorf("%d records left in the store after a full replay", len(left))
	}

	before := hook.Status().Requests
	second := testenv.Run(t, replay, "--config", cfgPath, "--dead-letter", store)
	if second.Code != 0 {
		t.Fatalf("second replay exit code %d\n%s", second.Code, second.Stderr)
	}
	if st := hook.Status(); st.Requests != before || st.Duplicates != 0 {
		t.Errorf("second replay: %d more requests, %d duplicates; want none", st.Requests-before, st.Duplicates)
	}
}

func ampRepRequests(r report.Report) int64 { return r.Integrations[1].Requests }

// readStore reads the active records of a store (not those archived by replay).
func readStore(t *testing.T, store string) []deadletterio.Record {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(store, "*", "*.ndjson"))
	var out []deadletterio.Record
	for _, f := range files {
		if strings.Contains(f, "/invalid/") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var r deadletterio.Record
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			out = append(out, r)
		}
	}
	return out
}

func toImpression(r deadletterio.Record) impression.Impression {
	b, _ := json.Marshal(r.Impression)
	imp, _ := impression.Parse(b)
	return imp
}
