package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/transforms/encode"
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
func TestDeadLetterThenReplay(t *testing.T) { testDeadLetterThenReplay(t) }

// The same on Beam's portable Flink runner, the backfill and the replays alike.
func TestDeadLetterThenReplayOnFlink(t *testing.T) {
	t.Parallel()
	testDeadLetterThenReplay(t, testenv.FlinkFlags(t)...)
}

// testDeadLetterThenReplay runs TestDeadLetterThenReplay's backfill and replays with
// runner flags.
func testDeadLetterThenReplay(t *testing.T, runner ...string) {
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

	backfill := testenv.Run(t, testenv.Build(t, "./pipelines/backfill"), append([]string{
		"--config", cfgPath, "--input", sampleGlob, "--report", filepath.Join(dir, "backfill.json")}, runner...)...)
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
	first := testenv.Run(t, replay, append([]string{"--config", cfgPath, "--dead-letter", store, "--report", filepath.Join(dir, "replay1.json")}, runner...)...)
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
	second := testenv.Run(t, replay, append([]string{"--config", cfgPath, "--dead-letter", store}, runner...)...)
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

// A store whose records name acme's webhook for impressions it must not take (globex's,
// and one outside its environments filter), as after a reused id or an edited store:
// replay sends neither anywhere, keeps both in the store with the reason (the original
// kept after it), counts them as kept and exits 3, since they are not delivered. The
// record it does take is delivered. A second replay keeps them again, reasons unchanged.
//
// The same holds for an object store's records: acme's impression is stored, in an
// object of its window, and globex's is kept.
func TestReplayNeverCrossesTenants(t *testing.T) {
	hook := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: secret, Tenant: "acme"})
	globex := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: secret, Tenant: "globex"})
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	store := filepath.Join(t.TempDir(), "dead-letter")
	cfgPath := filepath.Join(t.TempDir(), "outflow.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
dead_letter: %s
allow_private_destinations: true
integrations:
  - {id: acme-hook, tenant: acme, type: webhook, environments: [production], webhook: {url: "%s/split", secret: %q}}
  - {id: globex-hook, tenant: globex, type: webhook, webhook: {url: "%s/split", secret: %q}}
  - {id: acme-s3, tenant: acme, type: s3, s3: {bucket: %s, endpoint: %s}}
`, store, hook.URL(), secret, globex.URL(), secret, bucket, s3.Endpoint)), 0o644)

	mk := func(tenant, env, key string) *impression.Impression {
		i := impression.Impression{Tenant: tenant, EnvironmentName: env, Key: key, Split: "s", Treatment: "on", Time: 1767225600123}
		i.ID = i.ComputeID()
		return &i
	}
	other, staging, ok := mk("globex", "production", "g-1"), mk("acme", "staging", "a-1"), mk("acme", "production", "a-2")
	var body []byte
	for _, imp := range []*impression.Impression{other, staging, ok} {
		b, err := json.Marshal(deadletterio.Undeliverable("acme-hook", imp, 400, 1, "HTTP 400: refused", "batch-1"))
		if err != nil {
			t.Fatal(err)
		}
		body = append(append(body, b...), '\n')
	}
	os.MkdirAll(filepath.Join(store, "acme-hook"), 0o755)
	os.WriteFile(filepath.Join(store, "acme-hook", "batch-1.ndjson"), body, 0o644)
	var toObjects []byte
	for _, r := range []deadletterio.Record{
		deadletterio.Undeliverable("acme-s3", mk("acme", "production", "a-3"), 0, 0, "late: …", "late"),
		deadletterio.Undeliverable("acme-s3", mk("globex", "production", "g-2"), 0, 1, "edited", "batch-2"),
	} {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		toObjects = append(append(toObjects, b...), '\n')
	}
	os.MkdirAll(filepath.Join(store, "acme-s3"), 0o755)
	os.WriteFile(filepath.Join(store, "acme-s3", "batch-2.ndjson"), toObjects, 0o644)

	replay := testenv.Build(t, "./pipelines/replay")
	dir := t.TempDir()
	res := testenv.Run(t, replay, "--config", cfgPath, "--dead-letter", store, "--report", filepath.Join(dir, "replay.json"))
	if res.Code != 3 {
		t.Fatalf("replay exit code %d, want 3\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	events := hook.Events()
	if len(events) != 1 || events[ok.ID.String()].Count != 1 {
		t.Errorf("acme's webhook holds %v, want only %s", events, ok.ID)
	}
	if n := globex.Status().Requests; n != 0 {
		t.Errorf("globex's webhook got %d requests; replay must not re-route", n)
	}
	rep := readReport(t, filepath.Join(dir, "replay.json"))
	objects := s3.Objects(t, bucket, "")
	checkObjects := func() {
		t.Helper()
		var held []string
		for key, body := range objects {
			name, ok := encode.ParseKey(key)
			recs, err := encode.ReadObject(bytes.NewReader(body), encode.NDJSON)
			if !ok || err != nil {
				t.Fatalf("%s: not a data object (%v)", key, err)
			}
			for _, r := range recs {
				held = append(held, r.Key)
				if at := time.UnixMilli(r.Time); at.Before(name.Start) || !at.Before(name.End) {
					t.Errorf("%s at %v is stored in %s, a window not its own", r.Key, at.UTC(), key)
				}
			}
		}
		if !slices.Equal(held, []string{"a-3"}) {
			t.Errorf("the objects hold %v, want a-3 once", held)
		}
	}
	checkObjects()
	if rep.Replayed != 2 || rep.Kept != 3 || rep.Integrations[0].Delivered != 1 || rep.ExitCode != 3 {
		t.Errorf("report: replayed %d, kept %d, delivered %d, exit %d; want 2, 3, 1, 3",
			rep.Replayed, rep.Kept, rep.Integrations[0].Delivered, rep.ExitCode)
	}

	check := func(left []deadletterio.Record) {
		t.Helper()
		if len(left) != 3 {
			t.Fatalf("%d records left in the store, want 3: %+v", len(left), left)
		}
		byKey := map[string]string{}
		for _, r := range left {
			if r.Impression == nil || r.Integration == "acme-hook" && r.Status != 400 {
				t.Errorf("record kept changed: %+v", r)
			}
			byKey[r.Impression.Key] = r.Reason
		}
		for key, want := range map[string]string{
			"g-2": `not replayed: integration acme-s3 does not take this impression of tenant "globex": tenant "globex" is not "acme"; was: edited`,
			"g-1": `not replayed: integration acme-hook does not take this impression of tenant "globex": tenant "globex" is not "acme"; was: HTTP 400: refused`,
			"a-1": `not replayed: integration acme-hook does not take this impression of tenant "acme": environment "staging" is not in ["production"]; was: HTTP 400: refused`,
		} {
			if byKey[key] != want {
				t.Errorf("reason of %s:\n got %q\nwant %q", key, byKey[key], want)
			}
		}
	}
	check(readStore(t, store))
	if _, err := os.Stat(filepath.Join(store, "_receipts")); !os.IsNotExist(err) {
		t.Errorf("receipts left in the store: %v", err)
	}

	before := hook.Status().Requests
	again := testenv.Run(t, replay, "--config", cfgPath, "--dead-letter", store)
	if again.Code != 3 {
		t.Fatalf("second replay exit code %d, want 3\n%s", again.Code, again.Stderr)
	}
	if n := hook.Status().Requests - before; n != 0 || globex.Status().Requests != 0 {
		t.Errorf("second replay sent %d requests to acme, %d to globex; want none", n, globex.Status().Requests)
	}
	check(readStore(t, store))
	objects = s3.Objects(t, bucket, "")
	checkObjects()
}

// Without the runner's metrics, the report's counts come from the run's receipts.
func TestCountFromTally(t *testing.T) {
	rep := &report.Report{Integrations: []report.Integration{{ID: "acme-hook"}, {ID: "globex-amp"}}}
	countFromTally(rep, deadletterio.Tally{Files: 4, InvalidLines: 3, FileErrors: 1,
		DeadLettered: map[string]int64{"acme-hook": 5, "gone": 2}})
	if rep.Integrations[0].DeadLettered != 5 || rep.Integrations[1].DeadLettered != 0 || rep.Kept != 6 {
		t.Errorf("dead-lettered %d, %d; kept %d; want 5, 0, 6",
			rep.Integrations[0].DeadLettered, rep.Integrations[1].DeadLettered, rep.Kept)
	}
}
