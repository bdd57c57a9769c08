package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/gen"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/objectio"
	"github.com/outflow/outflow/io/s3io"
	"github.com/outflow/outflow/transforms/encode"
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

// Sequences of backfills into one prefix: runs over subsets of the files (one of
// them repeats part of another, as a repaired file does), over ranges that cut
// windows, with other shard counts, windows and formats, under a renamed id, and
// reruns, and pairs of backfills over other files started at once. After each run the
// prefix holds every impression any successful run read exactly once, in objects of
// valid names; or the run was refused (exit 2) before writing anything, and only when
// the prefix held an object of another format or one across its windows, or (one of a
// pair) while the other held the prefix's lease. A rerun of the same input writes no
// object.
func TestRunSequencesHoldEachImpressionOnce(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var files []string
	for i := range 4 {
		sub := filepath.Join(t.TempDir(), "gen")
		if err := gen.WriteFiles(sub, 1, i%2 == 0, gen.Options{N: 300, Tenants: 1, Seed: uint64(20 + i), Start: start, Span: 3 * time.Hour, Dups: 0.05}); err != nil {
			t.Fatal(err)
		}
		src, _ := filepath.Glob(filepath.Join(sub, "part-*"))
		name := fmt.Sprintf("f%d%s", i, strings.TrimPrefix(filepath.Base(src[0]), "part-000"))
		if err := os.Rename(src[0], filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.Join(dir, name))
	}
	// f4 repeats the first 100 lines of f1 (uncompressed) beside lines of its own.
	f1, _ := os.ReadFile(files[1])
	head := strings.Join(strings.SplitN(string(f1), "\n", 101)[:100], "\n") + "\n"
	extra := filepath.Join(t.TempDir(), "gen")
	if err := gen.WriteFiles(extra, 1, false, gen.Options{N: 100, Tenants: 1, Seed: 30, Start: start, Span: 3 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	own, _ := os.ReadFile(filepath.Join(extra, "part-000.ndjson"))
	files = append(files, filepath.Join(dir, "f4.ndjson"))
	if err := os.WriteFile(files[4], []byte(head+string(own)), 0o644); err != nil {
		t.Fatal(err)
	}

	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	windows := []string{"5m", "10m", "30m", "1h", "2h"}
	minute := func(r *rand.Rand) time.Time { return start.Add(time.Duration(r.IntN(3*60)) * time.Minute) }
	var pairs struct{ refused, after int } // how the pairs went
	defer func() { t.Logf("pairs: %d with one refused, %d one after the other", pairs.refused, pairs.after) }()
	for c := range 6 {
		r := rand.New(rand.NewPCG(uint64(c), 25))
		prefix := fmt.Sprintf("seq%d", c)
		held := map[[16]byte]bool{} // what the successful runs read, in their ranges
		type run struct {
			args          []string
			cfgPath, glob string
			rng           invocation
		}
		var last *run // the previous successful run, for a rerun
		for step := range 5 {
			id, window, format, shards := "acme-s3", windows[r.IntN(len(windows))], "ndjson", r.IntN(4)
			if r.IntN(4) == 0 {
				id = "acme-renamed"
			}
			if r.IntN(8) == 0 {
				format = "csv"
			}
			var input []string
			for _, f := range files {
				if r.IntN(2) == 0 {
					input = append(input, f)
				}
			}
			if len(input) == 0 {
				input = files[:1]
			}
			var rng invocation
			if r.IntN(3) == 0 {
				a, b := minute(r), minute(r)
				if b.Before(a) {
					a, b = b, a
				}
				rng = invocation{since: a, until: b.Add(time.Minute)}
			}
			inDir := t.TempDir()
			for _, f := range input {
				b, _ := os.ReadFile(f)
				os.WriteFile(filepath.Join(inDir, filepath.Base(f)), b, 0o644)
			}
			cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: %s, tenant: acme, type: s3, window: %s, shards: %d, s3: {bucket: %s, prefix: %s, endpoint: %s, format: %s}}
`, t.TempDir(), id, window, shards, bucket, prefix, s3.Endpoint, format))
			this := &run{append([]string{"--config", cfgPath, "--input", filepath.Join(inDir, "*")}, rng.args()...),
				cfgPath, filepath.Join(inDir, "*"), rng}
			rerun := last != nil && r.IntN(4) == 0
			if rerun {
				this = last
			}
			// A pair: another backfill, over the files this one leaves out, at once.
			var pair *run
			if !rerun && r.IntN(3) == 0 {
				pairDir := t.TempDir()
				for _, f := range files {
					if !slices.Contains(input, f) || len(input) == len(files) {
						b, _ := os.ReadFile(f)
						os.WriteFile(filepath.Join(pairDir, filepath.Base(f)), b, 0o644)
					}
				}
				pair = &run{append([]string{"--config", cfgPath, "--input", filepath.Join(pairDir, "*")}, rng.args()...),
					cfgPath, filepath.Join(pairDir, "*"), rng}
			}
			before := s3.DataObjects(t, bucket, prefix+"/")
			refuse := cannotWriteBeside(before, window, format, rng)
			desc := fmt.Sprintf("case %d step %d: %s window %s shards %d format %s, %d files, %s", c, step+1, id, window, shards, format, len(input), strings.Join(rng.args(), " "))
			if rerun {
				desc = fmt.Sprintf("case %d step %d: the previous run again", c, step+1)
				refuse = ""
			}
			var res, pairRes result
			if pair == nil {
				res = runBackfill(t, this.args...)
			} else {
				desc += ", with another backfill at once"
				var wg sync.WaitGroup
				wg.Go(func() { pairRes = runBackfill(t, pair.args...) })
				res = runBackfill(t, this.args...)
				wg.Wait()
				t.Logf("%s: exit %d and %d", desc, res.code, pairRes.code)
				// One holds the prefix while the other runs; the other is refused, or
				// comes after it: never both at once.
				lease := "_outflow.lease: the prefix is held by backfill on "
				refused := func(x result) bool { return x.code == 2 && strings.Contains(x.stderr, lease) }
				switch {
				case refuse != "":
				case res.code == 0 && refused(pairRes):
					pairs.refused++
				case refused(res) && pairRes.code == 0:
					pairs.refused++
					res, this = pairRes, pair
				case res.code == 0 && pairRes.code == 0:
					pairs.after++
					for wid := range readInput(t, pair.glob).want(cfgOf(t, pair.cfgPath).Integrations[0], rng.since, rng.until) {
						held[wid] = true
					}
				default:
					t.Fatalf("%s: exit %d and %d, want one 0 and the other 0 or 2 naming the lease\n%s\n%s",
						desc, res.code, pairRes.code, res.stderr, pairRes.stderr)
				}
			}
			t.Logf("%s: exit %d", desc, res.code)
			switch {
			case refuse != "" && res.code != 2:
				t.Fatalf("%s: exit %d, want 2: the prefix holds %s\n%s", desc, res.code, refuse, res.stderr)
			case refuse == "" && res.code != 0:
				t.Fatalf("%s: exit %d\n%s", desc, res.code, res.stderr)
			case res.code == 2:
				if after := s3.DataObjects(t, bucket, prefix+"/"); len(after) != len(before) {
					t.Fatalf("%s: refused, yet it wrote: %d objects before, %d after", desc, len(before), len(after))
				}
				continue
			}
			for wid := range readInput(t, this.glob).want(cfgOf(t, this.cfgPath).Integrations[0], this.rng.since, this.rng.until) {
				held[wid] = true
			}
			after := prefixHolds(t, s3, bucket, prefix, "acme")
			for wid := range held {
				if after[wid] != 1 {
					t.Errorf("%s: impression %x is in %d objects, want 1", desc, wid, after[wid])
				}
			}
			for gid := range after {
				if !held[gid] {
					t.Errorf("%s: the prefix holds impression %x that no run read", desc, gid)
				}
			}
			if rerun {
				if rep := res.report.Integrations[0]; rep.Objects != 0 || rep.StoredBefore != rep.Delivered {
					t.Errorf("%s: a rerun wrote %d objects; %d of %d delivered were held before, want all", desc, rep.Objects, rep.StoredBefore, rep.Delivered)
				}
			}
			last = this
		}
	}
}

// cfgOf loads the configuration at path.
func cfgOf(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// cannotWriteBeside says why a run of window and format over rng cannot write beside
// the objects: one of another format, or one across its windows; or "".
func cannotWriteBeside(objects map[string][]byte, window, format string, rng invocation) string {
	w, _ := time.ParseDuration(window)
	for key := range objects {
		n, ok := encode.ParseKey(key)
		if !ok || (!rng.until.IsZero() && !n.Start.Before(rng.until)) || (!rng.since.IsZero() && !n.End.After(rng.since)) {
			continue
		}
		if n.Ext != encode.Format(format).Ext() || !encode.WindowStart(n.Start, w).Equal(encode.WindowStart(n.End.Add(-time.Millisecond), w)) {
			return key
		}
	}
	return ""
}

// prefixHolds reads every data object under prefix, of any integration id and
// format, checks that each record lies in its object's time range and that the
// name's digest is its impressions', and counts the objects that hold each id.
func prefixHolds(t *testing.T, s3 *testenv.S3, bucket, prefix, tenant string) map[[16]byte]int {
	t.Helper()
	out := map[[16]byte]int{}
	for key, body := range s3.Objects(t, bucket, prefix+"/") {
		n, ok := encode.ParseKey(key)
		if !ok || n.Pane == "" {
			t.Errorf("object %s: not a data object named with its digest", key)
			continue
		}
		f, _ := encode.FormatOf(n.Ext)
		recs, err := encode.ReadObject(bytes.NewReader(body), f)
		if err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		var ids []uuid.UUID
		for _, rec := range recs {
			imp := rec.Impression(tenant)
			id := imp.ComputeID()
			if tm := time.UnixMilli(rec.Time); tm.Before(n.Start) || !tm.Before(n.End) {
				t.Errorf("object %s holds an impression at %v", key, tm)
			}
			if !slices.Contains(ids, id) {
				out[id]++
			}
			ids = append(ids, id)
		}
		slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
		if d := encode.SetDigest(slices.Compact(ids)); d != n.Pane {
			t.Errorf("object %s: its impressions' digest is %s", key, d)
		}
	}
	return out
}

// Objects sized by data: an integration that leaves out shards gets one object a
// window while its windows are below object_bytes, and as many as they need above;
// every impression is in exactly one object either way. A later run into the same
// prefix that sizes its windows otherwise, or sets shards, writes beside the earlier
// objects and stores nothing they hold.
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

	// Into the prefix of one object a window, runs that write more, or fewer: every
	// impression is held already, so they store nothing, and say so.
	want := int64(len(in.want(ic, time.Time{}, time.Time{})))
	for _, c := range []struct{ fields, s3Fields string }{{"", ", object_bytes: 1048576"}, {"shards: 4,", ""}} {
		path, _ := writeCfg("whole", c.fields, c.s3Fields)
		before := s3.Objects(t, bucket, "whole/")
		r := runBackfill(t, "--config", path, "--input", glob)
		if r.code != 0 {
			t.Fatalf("%s%s: exit %d\n%s", c.fields, c.s3Fields, r.code, r.stderr)
		}
		if after := s3.Objects(t, bucket, "whole/"); len(after) != len(before) {
			t.Errorf("%s%s: %d objects after, %d before: it stored impressions held already", c.fields, c.s3Fields, len(after), len(before))
		}
		if rep := r.report.Integrations[0]; rep.Delivered != want || rep.StoredBefore != want || rep.Objects != 0 {
			t.Errorf("%s%s: report %+v; want %d delivered, all held before, no object", c.fields, c.s3Fields, rep, want)
		}
	}
}

// A run cannot write beside objects it could not leave out, or of another format:
// refused with exit 2 naming the object and the field to change, before anything is
// written. Objects of a smaller window, of a range an earlier --since cut, or of
// another shard count are no bar: it leaves out what they hold.
func TestEarlierObjectsConflict(t *testing.T) {
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	cfg := func(window, format string) string {
		return writeConfig(t, fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, window: %s, s3: {bucket: %s, prefix: p, endpoint: %s, format: %s}}
`, t.TempDir(), window, bucket, s3.Endpoint, format))
	}
	run := func(path string, extra ...string) result {
		return runBackfill(t, append([]string{"--config", path, "--input", sampleGlob}, extra...)...)
	}
	if r := run(cfg("30m", "ndjson"), "--since", "2026-01-01T00:40:00Z"); r.code != 0 {
		t.Fatalf("first run: exit %d\n%s", r.code, r.stderr)
	}
	if r := run(cfg("1h", "ndjson")); r.code != 0 {
		t.Fatalf("a larger window over a smaller one, cut by --since: exit %d\n%s", r.code, r.stderr)
	}
	before := s3.Objects(t, bucket, "p/")
	for _, c := range []struct{ window, format, want string }{
		{"30m", "ndjson", "set window to the earlier run's"},
		{"1h", "csv", "set format back"},
	} {
		r := run(cfg(c.window, c.format))
		if r.code != 2 || !strings.Contains(r.stderr, "acme-s3_20260101T000000Z_20260101T010000Z_") || !strings.Contains(r.stderr, c.want) {
			t.Errorf("window %s, format %s beside 1h objects: exit %d, want 2 naming an object and %q\n%s", c.window, c.format, r.code, c.want, r.stderr)
		}
	}
	if after := s3.Objects(t, bucket, "p/"); len(after) != len(before) {
		t.Errorf("the refused runs wrote objects: %d before, %d after", len(before), len(after))
	}
	holds := prefixHolds(t, s3, bucket, "p", "acme")
	for id := range readInput(t, sampleGlob).want(config.Integration{ID: "acme-s3", Tenant: "acme", Type: config.S3,
		S3: &s3io.Config{ObjectSpec: encode.ObjectSpec{Format: encode.NDJSON}}}, time.Time{}, time.Time{}) {
		if holds[id] != 1 {
			t.Errorf("impression %x is in %d objects, want 1", id, holds[id])
		}
	}
}

// Credentials that may list and write but not read the objects back (no permission,
// or no key to decrypt them) do not fail the run: the objects already stored are
// taken as holding nothing, with one WARN saying what that risks, and nothing read
// is lost.
func TestObjectsThatCannotBeReadBack(t *testing.T) {
	t.Parallel()
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	endpoint := testenv.FaultyS3(t, s3.Endpoint, func(method, path string, _ int) testenv.Fault {
		if method == http.MethodGet && strings.Contains(path, "/acme/dt=") {
			return testenv.Denied
		}
		return testenv.Pass
	})
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, window: 1h, s3: {bucket: %s, prefix: acme, endpoint: %s}}
`, t.TempDir(), bucket, endpoint))
	// The first run reads every other impression, so that every window of the second
	// holds some that the objects do, and some they do not.
	var half []string
	i := 0
	for _, imp := range readInput(t, sampleGlob).first["acme"] {
		if i++; i%2 == 0 {
			continue
		}
		b, _ := json.Marshal(map[string]any{"tenant": imp.Tenant, "environmentId": imp.EnvironmentID,
			"environmentName": imp.EnvironmentName, "key": imp.Key, "bucketingKey": imp.BucketingKey, "split": imp.Split,
			"treatment": imp.Treatment, "label": imp.Label, "time": imp.Time, "splitVersionNumber": imp.SplitVersionNumber})
		half = append(half, string(b))
	}
	first := t.TempDir()
	if err := os.WriteFile(filepath.Join(first, "half.ndjson"), []byte(strings.Join(half, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, glob := range []string{filepath.Join(first, "*"), sampleGlob} {
		r := runBackfill(t, "--config", cfgPath, "--input", glob)
		if r.code != 0 {
			t.Fatalf("run %d: exit %d\n%s", i+1, r.code, r.stderr)
		}
		warnings := strings.Count(r.stderr, "cannot be read back")
		if want := i; warnings != want {
			t.Errorf("run %d: %d warnings that objects cannot be read back, want %d\n%s", i+1, warnings, want, r.stderr)
		}
	}
	cfg, _ := config.Load(cfgPath)
	held := prefixHolds(t, s3, bucket, "acme", "acme")
	for id := range readInput(t, sampleGlob).want(cfg.Integrations[0], time.Time{}, time.Time{}) {
		if held[id] == 0 {
			t.Errorf("impression %x is in no object", id)
		}
	}
}

// A prefix whose lease a live run of another job holds is refused (exit 2) before
// anything is written, naming the holder and --break-lease; with --break-lease the
// backfill takes the lease, runs, and removes it at the end; the run it was taken
// from can no longer renew it.
func TestBackfillLease(t *testing.T) {
	t.Parallel()
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, s3: {bucket: %s, prefix: p, endpoint: %s}}
`, t.TempDir(), bucket, s3.Endpoint))
	other, _, err := objectio.Acquire(context.Background(), s3.ObjectTarget("acme-s3", bucket, "p"),
		objectio.LeaseInfo{Job: "stream of topic x", Run: "other", Holder: "stream on elsewhere (pid 7)"}, false)
	if err != nil {
		t.Fatal(err)
	}
	r := runBackfill(t, "--config", cfgPath, "--input", sampleGlob)
	if r.code != 2 || !strings.Contains(r.stderr, "s3://"+bucket+"/p/_outflow.lease: the prefix is held by stream on elsewhere (pid 7) (stream of topic x)") ||
		!strings.Contains(r.stderr, "--break-lease") {
		t.Fatalf("a prefix held by another job: exit %d, want 2 naming the holder\n%s", r.code, r.stderr)
	}
	if objects := s3.DataObjects(t, bucket, "p/"); len(objects) != 0 {
		t.Fatalf("the refused backfill wrote %d objects", len(objects))
	}
	r = runBackfill(t, "--config", cfgPath, "--input", sampleGlob, "--break-lease")
	if r.code != 0 || !strings.Contains(r.stderr, "took over the lease of another run") {
		t.Fatalf("--break-lease: exit %d, want 0 saying whose lease it took\n%s", r.code, r.stderr)
	}
	if err := other.Renew(context.Background()); !errors.Is(err, objectio.ErrChanged) {
		t.Errorf("the run whose lease was broken renews it: %v", err)
	}
	if left := s3.Objects(t, bucket, "p/_outflow"); len(left) != 0 {
		t.Errorf("the backfill left its lease behind: %v", slices.Collect(maps.Keys(left)))
	}
}
