package main

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/gen"
	"github.com/outflow/outflow/internal/testenv"
)

// run is one backfill invocation of a case: its flags beyond --config and --input.
type invocation struct {
	since, until time.Time
	flags        []string
}

func (r invocation) args() []string {
	args := r.flags
	if !r.since.IsZero() {
		args = append(args, "--since", r.since.Format(time.RFC3339))
	}
	if !r.until.IsZero() {
		args = append(args, "--until", r.until.Format(time.RFC3339))
	}
	return args
}

// Property: whatever the windows, --slice, --max-job-impressions and --since/--until of
// one run, or of two runs on either side of a time into the same prefix, every routed
// impression ends up in exactly one data object of an S3 API server, and every object
// holds only impressions of its own window part. Windows that do not divide the slices
// or the automatic hour cuts (7m, 25m, 90m, 2h with odd hours, 48h over 24h slices)
// once lost half their impressions to an object overwritten by the next job.
func TestObjectsNeverCollide(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := gen.WriteFiles(dir, 3, true, gen.Options{N: 3000, Tenants: 2, Seed: 11, Start: start, Span: 6 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	glob := filepath.Join(dir, "*")
	in := readInput(t, glob)
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)

	windows := []string{"7m", "25m", "90m", "2h", "1h", "24h", "48h", "5m"}
	slices := []string{"0", "1h", "90m", "24h"}
	caps := []string{"0", "400", "900"}
	minute := func(r *rand.Rand) time.Time { return start.Add(time.Duration(r.IntN(6*60)) * time.Minute) }
	cases := 24
	if testing.Short() {
		cases = 3
	}
	for c := range cases {
		r := rand.New(rand.NewPCG(uint64(c), 7))
		// The two integrations share a job (object stores read the input once) with
		// windows of their own; shards 0 leaves them to the data.
		window, window2, shards := windows[c%len(windows)], windows[(c+3)%len(windows)], r.IntN(4)
		flags := []string{"--slice", slices[r.IntN(len(slices))], "--max-job-impressions", caps[r.IntN(len(caps))]}
		var runs []invocation
		switch c % 3 {
		case 0: // one run over everything
			runs = []invocation{{flags: flags}}
		case 1: // one run over a range that cuts windows at both ends
			a, b := minute(r), minute(r)
			if b.Before(a) {
				a, b = b, a
			}
			runs = []invocation{{since: a, until: b.Add(time.Minute), flags: flags}}
		case 2: // --until X, then --since X, into the same prefix
			x := minute(r)
			runs = []invocation{{until: x, flags: flags}, {since: x, flags: []string{"--slice", slices[r.IntN(len(slices))]}}}
		}
		name := fmt.Sprintf("case%d-window%s-%s", c, window, window2)
		t.Run(name, func(t *testing.T) {
			cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %[1]s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, window: %[2]s, shards: %[3]d, s3: {bucket: %[4]s, prefix: %[5]s/acme, endpoint: %[6]s}}
  - {id: globex-s3, tenant: globex, type: s3, window: %[7]s, shards: %[3]d, s3: {bucket: %[4]s, prefix: %[5]s/globex, endpoint: %[6]s, format: csv}}
`, t.TempDir(), window, shards, bucket, name, s3.Endpoint, window2))
			cfg, err := config.Load(cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			var since, until time.Time // what the runs covered together
			for i, ru := range runs {
				args := append([]string{"--config", cfgPath, "--input", glob}, ru.args()...)
				t.Logf("run %d: %s", i+1, strings.Join(ru.args(), " "))
				res := runBackfill(t, args...)
				if res.code != 0 {
					t.Fatalf("run %d: exit %d\n%s", i+1, res.code, res.stderr)
				}
				if i == 0 || ru.since.IsZero() {
					since = ru.since
				}
				if i == 0 || ru.until.IsZero() {
					until = ru.until
				}
			}
			for _, ic := range cfg.Integrations {
				got, _ := delivered(t, s3, ic)
				checkExactlyOnce(t, ic.ID, in.want(ic, since, until), got)
			}
		})
	}
}

// A run that would put impressions in two objects beside an earlier run's (here:
// the earlier run's --since cut a window this run writes whole) is refused with exit 2,
// naming the object, before anything is written; with the earlier range it runs.
func TestEarlierObjectsConflict(t *testing.T) {
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, window: 1h, s3: {bucket: %s, prefix: p, endpoint: %s}}
`, t.TempDir(), bucket, s3.Endpoint))
	cfg, _ := config.Load(cfgPath)
	args := []string{"--config", cfgPath, "--input", sampleGlob}
	if r := runBackfill(t, append(args, "--since", "2026-01-01T00:30:00Z")...); r.code != 0 {
		t.Fatalf("first run: exit %d\n%s", r.code, r.stderr)
	}
	before := s3.Objects(t, bucket, "p/")

	r := runBackfill(t, args...)
	if r.code != 2 || !strings.Contains(r.stderr, "acme-s3_20260101T003000Z_20260101T010000Z_") ||
		!strings.Contains(r.stderr, "--since/--until") {
		t.Fatalf("a whole run over a window an earlier run cut: exit %d, want 2 naming the object\n%s", r.code, r.stderr)
	}
	if after := s3.Objects(t, bucket, "p/"); len(after) != len(before) {
		t.Errorf("the refused run wrote objects: %d before, %d after", len(before), len(after))
	}
	// The rest of that window, and again the same range, are fine.
	for _, extra := range [][]string{{"--until", "2026-01-01T00:30:00Z"}, {"--since", "2026-01-01T00:30:00Z"}} {
		if r := runBackfill(t, append(args, extra...)...); r.code != 0 {
			t.Fatalf("%v: exit %d\n%s", extra, r.code, r.stderr)
		}
	}
	got, _ := delivered(t, s3, cfg.Integrations[0])
	checkExactlyOnce(t, "acme-s3", readInput(t, sampleGlob).want(cfg.Integrations[0], time.Time{}, time.Time{}), got)
}

// Objects sized by data: an integration that leaves out shards gets one object a
// window while its windows are below object_bytes, and as many as they need above;
// every impression is in exactly one object either way. A later run whose input sizes
// the windows to more objects than an earlier run wrote into the same prefix is
// refused (its impressions would move to other objects, and an earlier object of a
// sparse window would stay beside them) until shards keeps the earlier layout.
func TestObjectsSizedByData(t *testing.T) {
	dir := t.TempDir()
	// About 3 MB in each of two 1h windows.
	if err := gen.WriteFiles(dir, 2, true, gen.Options{N: 16000, Tenants: 1, Seed: 5, Span: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	glob := filepath.Join(dir, "*")
	in := readInput(t, glob)
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	// writeCfg writes acme-s3's configuration into prefix, with more fields of the
	// integration and of its s3 section.
	writeCfg := func(prefix, fields, s3Fields string) (string, config.Integration) {
		path := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, window: 1h, %s s3: {bucket: %s, prefix: %s, endpoint: %s %s}}
`, t.TempDir(), fields, bucket, prefix, s3.Endpoint, s3Fields))
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		return path, cfg.Integrations[0]
	}
	planned := func(path string) int {
		r := runBackfill(t, "--config", path, "--input", glob, "--plan")
		m := regexp.MustCompile(`objects a window: acme-s3 +(\d+)`).FindStringSubmatch(r.stdout)
		if r.code != 0 || m == nil {
			t.Fatalf("--plan: exit %d, no objects a window\n%s%s", r.code, r.stdout, r.stderr)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	run := func(path string, ic config.Integration, shards int) {
		t.Helper()
		if r := runBackfill(t, "--config", path, "--input", glob); r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		ic.Shards = shards
		got, objects := delivered(t, s3, ic)
		checkExactlyOnce(t, ic.ID, in.want(ic, time.Time{}, time.Time{}), got)
		if len(objects) != 2*shards {
			t.Errorf("%d objects, want %d in each of 2 windows", len(objects), shards)
		}
	}

	whole, ic := writeCfg("whole", "", "")
	if n := planned(whole); n != 1 {
		t.Fatalf("windows of 3 MB at the default object_bytes: %d objects a window, want 1", n)
	}
	run(whole, ic, 1)

	split, ic := writeCfg("split", "", ", object_bytes: 1048576")
	n := planned(split)
	if n < 2 {
		t.Fatalf("windows of 3 MB at object_bytes 1 MiB: %d objects a window, want more", n)
	}
	run(split, ic, n)

	// Into the prefix that holds one object a window: refused, nothing written.
	grown, _ := writeCfg("whole", "", ", object_bytes: 1048576")
	before := s3.Objects(t, bucket, "whole/")
	r := runBackfill(t, "--config", grown, "--input", glob)
	if r.code != 2 || !strings.Contains(r.stderr, "set shards: 1") {
		t.Fatalf("a run sizing more objects into an earlier run's prefix: exit %d, want 2 saying to set shards\n%s", r.code, r.stderr)
	}
	if after := s3.Objects(t, bucket, "whole/"); len(after) != len(before) {
		t.Errorf("the refused run wrote objects: %d before, %d after", len(before), len(after))
	}
	fixed, ic := writeCfg("whole", "shards: 1,", "")
	run(fixed, ic, 1)

	// An upgrade: objects of the fixed 4 a window that shards used to default to,
	// then a run that leaves shards out.
	four, ic := writeCfg("four", "shards: 4,", "")
	run(four, ic, 4)
	sized, _ := writeCfg("four", "", "")
	if r := runBackfill(t, "--config", sized, "--input", glob); r.code != 2 || !strings.Contains(r.stderr, "set shards") {
		t.Fatalf("a run sizing fewer objects into the prefix of a fixed 4 a window: exit %d, want 2 saying to set shards\n%s", r.code, r.stderr)
	}
}
