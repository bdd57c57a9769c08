package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/pipelines/internal/sinks"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
)

// Tests that only wait (on rate limits, retries, a slow destination) and assert no
// timing run in parallel, more of them than cores; those that compare when things
// happened run alone, first.
func TestMain(m *testing.M) {
	testenv.Parallel(6)
	testenv.Main(m)
}

type result struct {
	code           int
	stdout, stderr string
	report         *report.Report
}

// runBackfill runs the backfill command, as operators do, and reads its report.
func runBackfill(t *testing.T, args ...string) result {
	t.Helper()
	reportPath := filepath.Join(t.TempDir(), "report.json")
	out := testenv.Run(t, testenv.Build(t, "./pipelines/backfill"), append(args, "--report", reportPath)...)
	r := result{code: out.Code, stdout: out.Stdout, stderr: out.Stderr}
	if b, err := os.ReadFile(reportPath); err == nil {
		r.report = &report.Report{}
		if err := json.Unmarshal(b, r.report); err != nil {
			t.Fatalf("report: %v\n%s", err, b)
		}
	}
	return r
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "outflow.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// sampleInput is the parsed sample data, read independently of the pipeline.
type sampleInput struct {
	first   map[string]map[[16]byte]impression.Impression // tenant -> id -> first copy seen
	invalid []string                                      // raw invalid lines
	lines   int                                           // non-blank lines
}

func readInput(t *testing.T, glob string) sampleInput {
	t.Helper()
	files, _ := filepath.Glob(glob)
	sort.Strings(files)
	in := sampleInput{first: map[string]map[[16]byte]impression.Impression{}}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = fh
		if strings.HasSuffix(f, ".gz") {
			if r, err = gzip.NewReader(fh); err != nil {
				t.Fatal(err)
			}
		}
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			imp, err := impression.Parse(sc.Bytes())
			if errors.Is(err, impression.ErrBlank) {
				continue
			}
			in.lines++
			if err != nil {
				in.invalid = append(in.invalid, sc.Text())
				continue
			}
			if in.first[imp.Tenant] == nil {
				in.first[imp.Tenant] = map[[16]byte]impression.Impression{}
			}
			if _, seen := in.first[imp.Tenant][imp.ID]; !seen {
				in.first[imp.Tenant][imp.ID] = imp
			}
		}
		fh.Close()
	}
	return in
}

// want returns, for one integration, the impressions it must receive: id -> record.
func (in sampleInput) want(cfg config.Integration, since, until time.Time) map[[16]byte]encode.Record {
	target := sinks.Targets([]config.Integration{cfg})[0]
	out := map[[16]byte]encode.Record{}
	for id, imp := range in.first[cfg.Tenant] {
		t := time.UnixMilli(imp.Time)
		if !target.Matches(&imp) || (!since.IsZero() && t.Before(since)) || (!until.IsZero() && !t.Before(until)) {
			continue
		}
		out[id] = encode.NewRecord(&imp)
	}
	return out
}

var objectName = regexp.MustCompile(`^dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/([a-z0-9-]+)_(\d{8}T\d{6}Z)_(\d{8}T\d{6}Z)_(\d{3})_([0-9a-f]{16})\.(ndjson|csv|parquet)(\.gz)?$`)

// delivered reads every data object of an integration and checks its name against
// its contents: the right integration, each record inside the object's window and
// shard, the digest of its impressions. It returns id -> records found with that id.
func delivered(t *testing.T, s3 *testenv.S3, cfg config.Integration) (map[[16]byte][]encode.Record, map[string][]byte) {
	t.Helper()
	prefix := cfg.S3.Prefix
	if prefix != "" {
		prefix += "/"
	}
	objects := s3.Objects(t, cfg.S3.Bucket, prefix)
	got := map[[16]byte][]encode.Record{}
	shards := cfg.Shards
	if shards == 0 {
		shards = 1 // sized by data: the tests' inputs are far below object_bytes (TestSizeShards sizes more)
	}
	for key, body := range objects {
		name := strings.TrimPrefix(key, prefix)
		m := objectName.FindStringSubmatch(name)
		if m == nil {
			t.Errorf("object %q: name does not follow {prefix}/dt=…/hour=…/{id}_{start}_{end}_{shard}_{digest}.{ext}", key)
			continue
		}
		if m[3] != cfg.ID || m[8] != string(cfg.S3.Format) {
			t.Errorf("object %q holds integration %s format %s, want %s %s", key, m[3], m[8], cfg.ID, cfg.S3.Format)
		}
		start, _ := time.Parse("20060102T150405Z", m[4])
		end, _ := time.Parse("20060102T150405Z", m[5])
		// A window, or the part of one that a run's --since/--until covered.
		w := encode.WindowStart(start, cfg.Window.D())
		if !start.Before(end) || end.After(w.Add(cfg.Window.D())) || m[1] != start.Format("2006-01-02") {
			t.Errorf("object %q: %v..%v is not within one window of %v, or not in its date partition", key, start, end, cfg.Window.D())
		}
		recs, err := encode.ReadObject(bytes.NewReader(body), cfg.S3.Format)
		if err != nil {
			t.Errorf("object %q: %v", key, err)
			continue
		}
		if len(recs) == 0 {
			t.Errorf("object %q is empty", key)
		}
		var ids []uuid.UUID
		for _, rec := range recs {
			imp := impression.Impression{Tenant: cfg.Tenant, EnvironmentID: rec.EnvironmentID,
				EnvironmentName: rec.EnvironmentName, Key: rec.Key, BucketingKey: rec.BucketingKey,
				Split: rec.Split, Treatment: rec.Treatment, Label: rec.Label, Time: rec.Time,
				SplitVersionNumber: rec.SplitVersionNumber}
			imp.ID = imp.ComputeID()
			if tm := time.UnixMilli(rec.Time); tm.Before(start) || !tm.Before(end) {
				t.Errorf("object %q: impression at %v is outside its window", key, tm)
			}
			if shard := fmt.Sprintf("%03d", route.Shard(&imp, shards)); shard != m[6] {
				t.Errorf("object %q: impression of shard %s", key, shard)
			}
			got[imp.ID] = append(got[imp.ID], rec)
			ids = append(ids, imp.ID)
		}
		slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
		if d := encode.SetDigest(slices.Compact(ids)); d != m[7] {
			t.Errorf("object %q: its impressions' digest is %s", key, d)
		}
	}
	return got, objects
}

// checkExactlyOnce compares what an integration holds with what it must hold.
func checkExactlyOnce(t *testing.T, id string, want map[[16]byte]encode.Record, got map[[16]byte][]encode.Record) {
	t.Helper()
	for wid, rec := range want {
		switch recs := got[wid]; {
		case len(recs) == 0:
			t.Errorf("%s: impression %x (key %s) missing", id, wid, rec.Key)
		case len(recs) > 1:
			t.Errorf("%s: impression %x delivered %d times", id, wid, len(recs))
		case recs[0] != rec:
			t.Errorf("%s: impression %x =\n%+v\nwant the first copy seen\n%+v", id, wid, recs[0], rec)
		}
	}
	for gid, recs := range got {
		if _, ok := want[gid]; !ok {
			t.Errorf("%s: holds impression %x (key %s) that it must not receive", id, gid, recs[0].Key)
		}
	}
}

const sampleGlob = "../../testdata/sample/*"

func TestBackfillToS3(t *testing.T) { testBackfillToS3(t) }

// The same on Beam's portable Flink runner (an embedded Flink cluster behind the job
// server), the workers in the launcher (LOOPBACK).
func TestBackfillToS3OnFlink(t *testing.T) {
	t.Parallel()
	testBackfillToS3(t, testenv.FlinkFlags(t)...)
}

// testBackfillToS3 runs the backfills of TestBackfillToS3 with runner flags.
func testBackfillToS3(t *testing.T, runner ...string) {
	s3 := testenv.NewS3(t)
	bucketA, bucketB, bucketC := s3.Bucket(t), s3.Bucket(t), s3.Bucket(t)
	deadLetter := t.TempDir()
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %[1]s
integrations:
  - id: acme-all
    tenant: acme
    type: s3
    window: 5m
    s3: {bucket: %[2]s, prefix: acme/all/, endpoint: %[4]s, region: us-east-1}
  - id: acme-prod-csv
    tenant: acme
    type: s3
    environments: [production]
    window: 1h
    shards: 2
    s3: {bucket: %[2]s, prefix: acme/prod, endpoint: %[4]s, format: csv}
  - id: globex
    tenant: globex
    type: s3
    splits: [dark_mode, search_v2]
    s3: {bucket: %[3]s, endpoint: %[4]s}
  - id: initech-parquet
    tenant: initech
    type: s3
    window: 30m
    s3: {bucket: %[5]s, prefix: schema-v1, endpoint: %[4]s, format: parquet}
`, deadLetter, bucketA, bucketB, s3.Endpoint, bucketC))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	in := readInput(t, sampleGlob)
	if len(in.invalid) < 2 {
		t.Fatalf("the sample should hold invalid lines; found %d", len(in.invalid))
	}

	r := runBackfill(t, append([]string{"--config", cfgPath, "--input", sampleGlob}, runner...)...)
	if r.code != 0 {
		t.Fatalf("exit code %d, want 0\nstderr:\n%s", r.code, r.stderr)
	}
	firstObjects := map[string]map[string][]encode.Record{}
	for i, ic := range cfg.Integrations {
		want := in.want(ic, time.Time{}, time.Time{})
		got, objects := delivered(t, s3, ic)
		checkExactlyOnce(t, ic.ID, want, got)
		if len(want) == 0 {
			t.Fatalf("%s: the sample routes nothing to it; the test proves nothing", ic.ID)
		}
		rep := r.report.Integrations[i]
		if rep.ID != ic.ID || rep.Impressions != int64(len(want)) || rep.Delivered != int64(len(want)) || rep.DeadLettered != 0 {
			t.Errorf("report for %s = %+v, want %d impressions delivered", ic.ID, rep, len(want))
		}
		if rep.Objects != int64(len(objects)) {
			t.Errorf("report for %s: %d objects, bucket holds %d", ic.ID, rep.Objects, len(objects))
		}
		firstObjects[ic.ID] = decodeAll(t, objects, ic.S3.Format)
	}
	if r.report.InvalidLines != int64(len(in.invalid)) || r.report.Lines != int64(in.lines) {
		t.Errorf("report: %d lines, %d invalid; want %d, %d", r.report.Lines, r.report.InvalidLines, in.lines, len(in.invalid))
	}
	checkDeadLetter(t, deadLetter, in.invalid)

	// A second run of the same backfill finds everything stored but an object lost in
	// between: it writes that one again, under its name, adds none, and reports what
	// it did, not zeros: every impression delivered, all but the lost object's held
	// before.
	_, objects := delivered(t, s3, cfg.Integrations[0])
	lost := keysOf(objects)[0]
	if _, err := s3.Client.DeleteObject(context.Background(), &awss3.DeleteObjectInput{Bucket: &bucketA, Key: &lost}); err != nil {
		t.Fatal(err)
	}
	r2 := runBackfill(t, append([]string{"--config", cfgPath, "--input", sampleGlob}, runner...)...)
	if r2.code != 0 {
		t.Fatalf("second run: exit code %d\n%s", r2.code, r2.stderr)
	}
	for i, ic := range cfg.Integrations {
		_, objects := delivered(t, s3, ic)
		again := decodeAll(t, objects, ic.S3.Format)
		if len(again) != len(firstObjects[ic.ID]) {
			t.Errorf("%s: %d objects after the rerun, %d before", ic.ID, len(again), len(firstObjects[ic.ID]))
		}
		for key, recs := range firstObjects[ic.ID] {
			if !sameRecords(recs, again[key]) {
				t.Errorf("%s: object %s not the same after the rerun", ic.ID, key)
			}
		}
		wantObjects, wantBefore := int64(0), r.report.Integrations[i].Delivered
		if i == 0 {
			wantObjects, wantBefore = 1, wantBefore-int64(len(firstObjects[ic.ID][lost]))
		}
		if a, b := r2.report.Integrations[i], r.report.Integrations[i]; a.Impressions != b.Impressions || a.Delivered != b.Delivered ||
			a.Objects != wantObjects || a.StoredBefore != wantBefore {
			t.Errorf("rerun report for %s = %+v; want the first run's impressions and delivered %+v, %d objects, %d held before",
				ic.ID, a, b, wantObjects, wantBefore)
		}
	}
	if r2.report.Lines != r.report.Lines || r2.report.InvalidLines != r.report.InvalidLines {
		t.Errorf("rerun report: %d lines, %d invalid; want %d, %d", r2.report.Lines, r2.report.InvalidLines, r.report.Lines, r.report.InvalidLines)
	}
	checkDeadLetter(t, deadLetter, in.invalid)

	// A new file under the glob, or a changed one, is delivered too.
	newDir := t.TempDir()
	for _, f := range []string{"part-000.ndjson.gz", "part-001.ndjson.gz", "part-002.ndjson"} {
		b, _ := os.ReadFile(filepath.Join(filepath.Dir(sampleGlob), f))
		os.WriteFile(filepath.Join(newDir, f), b, 0o644)
	}
	newLine := `{"tenant":"acme","environmentName":"production","key":"late-arrival","split":"s","treatment":"on","time":1767225600000}`
	os.WriteFile(filepath.Join(newDir, "part-003.ndjson"), []byte(newLine+"\n"), 0o644)
	r3 := runBackfill(t, append([]string{"--config", cfgPath, "--input", filepath.Join(newDir, "*")}, runner...)...)
	if r3.code != 0 {
		t.Fatalf("run with a new file: exit code %d\n%s", r3.code, r3.stderr)
	}
	got, _ := delivered(t, s3, cfg.Integrations[0])
	checkExactlyOnce(t, "acme-all", readInput(t, filepath.Join(newDir, "*")).want(cfg.Integrations[0], time.Time{}, time.Time{}), got)
}

func decodeAll(t *testing.T, objects map[string][]byte, f encode.Format) map[string][]encode.Record {
	out := map[string][]encode.Record{}
	for k, b := range objects {
		recs, err := encode.ReadObject(bytes.NewReader(b), f)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		out[k] = recs
	}
	return out
}

func sameRecords(a, b []encode.Record) bool {
	key := func(r encode.Record) string { s, _ := json.Marshal(r); return string(s) }
	as, bs := make([]string, len(a)), make([]string, len(b))
	for i := range a {
		as[i] = key(a[i])
	}
	for i := range b {
		bs[i] = key(b[i])
	}
	sort.Strings(as)
	sort.Strings(bs)
	return strings.Join(as, "\n") == strings.Join(bs, "\n")
}

// checkDeadLetter finds every invalid line, with a reason, exactly once.
func checkDeadLetter(t *testing.T, dir string, invalid []string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "invalid", "*.ndjson"))
	seen := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			for _, field := range []string{"integration", "reason", "status", "attempts", "raw"} {
				if _, ok := rec[field]; !ok {
					t.Errorf("dead-letter record lacks %q: %s", field, line)
				}
			}
			var r deadletterio.Record
			json.Unmarshal([]byte(line), &r)
			if r.Reason == "" {
				t.Errorf("dead-letter record without a reason: %s", line)
			}
			seen[strings.TrimRight(string(r.RawBytes()), "\r")]++
		}
	}
	want := map[string]int{}
	for _, raw := range invalid {
		want[strings.TrimRight(raw, "\r")]++
	}
	for raw, n := range want {
		if seen[raw] != n {
			t.Errorf("invalid line dead-lettered %d times, want %d: %s", seen[raw], n, raw)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("dead-letter holds %d distinct lines, want %d", len(seen), len(want))
	}
}

func TestSinceUntil(t *testing.T) {
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-window, tenant: acme, type: s3, window: 10m, s3: {bucket: %s, endpoint: %s}}
`, t.TempDir(), bucket, s3.Endpoint))
	cfg, _ := config.Load(cfgPath)
	since := time.Date(2026, 1, 1, 0, 30, 0, 0, time.UTC)
	until := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
	r := runBackfill(t, "--config", cfgPath, "--input", sampleGlob,
		"--since", since.Format(time.RFC3339), "--until", until.Format(time.RFC3339))
	if r.code != 0 {
		t.Fatalf("exit code %d\n%s", r.code, r.stderr)
	}
	in := readInput(t, sampleGlob)
	want := in.want(cfg.Integrations[0], since, until)
	all := in.want(cfg.Integrations[0], time.Time{}, time.Time{})
	if len(want) == 0 || len(want) == len(all) {
		t.Fatalf("the range keeps %d of %d impressions; the test proves nothing", len(want), len(all))
	}
	got, _ := delivered(t, s3, cfg.Integrations[0])
	checkExactlyOnce(t, "acme-window", want, got)
	if r.report.Filtered == 0 {
		t.Errorf("report counts no impression outside the range")
	}
}

func TestUnreachableS3(t *testing.T) {
	testenv.NewS3(t) // credentials
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, s3: {bucket: nowhere, endpoint: "http://127.0.0.1:1"}}
`, t.TempDir()))
	r := runBackfill(t, "--config", cfgPath, "--input", sampleGlob)
	if r.code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, `integration "acme-s3": bucket s3://nowhere at http://127.0.0.1:1 is not reachable`) {
		t.Errorf("stderr does not explain the failure:\n%s", r.stderr)
	}
	if r.report == nil || r.report.ExitCode != 1 || r.report.Error == "" {
		t.Errorf("report = %+v, want exit code 1 and the error", r.report)
	}
}

// A bucket that is reachable but refuses writes fails the pipeline: exit 1 with the
// S3 error in one line, not Beam's execution plan. That it refuses the prefix's lease
// too is only a warning.
func TestUploadRefused(t *testing.T) { testUploadRefused(t) }

// testUploadRefused runs TestUploadRefused's backfill with runner flags.
func testUploadRefused(t *testing.T, runner ...string) {
	testenv.NewS3(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			return
		}
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`)
	}))
	defer srv.Close()
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, s3: {bucket: locked, endpoint: %s}}
`, t.TempDir(), srv.URL))
	r := runBackfill(t, append([]string{"--config", cfgPath, "--input", sampleGlob}, runner...)...)
	if r.code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "pipeline failed: put s3://locked/") || !strings.Contains(r.stderr, "AccessDenied") {
		t.Errorf("stderr does not name the refused upload:\n%s", r.stderr)
	}
	// Its lease could not go up either: a warning, as for a bucket it may not list.
	if !strings.Contains(r.stderr, "cannot hold the prefix's lease") {
		t.Errorf("no warning that the prefix's lease could not be held:\n%s", r.stderr)
	}
	if strings.Contains(r.stderr, "DataSource[") {
		t.Errorf("stderr shows Beam's execution plan:\n%s", r.stderr)
	}
}

func TestUsageErrors(t *testing.T) { testUsageErrors(t) }

// testUsageErrors runs TestUsageErrors's cases after runner flags; a case's own flags
// come last and win.
func testUsageErrors(t *testing.T, runner ...string) {
	s3 := testenv.NewS3(t)
	good := writeConfig(t, fmt.Sprintf(`
integrations:
  - {id: acme-s3, tenant: acme, type: s3, s3: {bucket: %s, endpoint: %s}}
`, s3.Bucket(t), s3.Endpoint))
	bad := writeConfig(t, `
integrations:
  - {id: acme-s3, tenant: acme, type: s3, window: 5 minutes, s3: {format: xml}}
  - {id: acme-s3, tenant: "", type: pigeon}
`)
	for name, c := range map[string]struct {
		args []string
		want []string
	}{
		"config problems": {[]string{"--config", bad, "--input", sampleGlob}, []string{
			`integration "acme-s3": window (line 3): "5 minutes" is not a duration`,
			`integration "acme-s3": s3.bucket: is required`,
			`integration "acme-s3": s3.format: "xml" is not one of`,
			`integration "acme-s3": type: "pigeon" is not one of`,
			`integration "acme-s3": tenant: is required`,
			`integration "acme-s3": id: "acme-s3" is used by another integration`}},
		"missing config file": {[]string{"--config", "/nonexistent.yaml", "--input", sampleGlob}, []string{"/nonexistent.yaml"}},
		"no flags":            {nil, []string{"--config is required", "--input is required", "usage: backfill"}},
		"bad since":           {[]string{"--config", good, "--input", sampleGlob, "--since", "yesterday"}, []string{`--since: "yesterday" is not an RFC 3339 time`}},
		"sub-second until":    {[]string{"--config", good, "--input", sampleGlob, "--until", "2026-01-01T00:30:00.5Z"}, []string{`--until: "2026-01-01T00:30:00.5Z" must be a whole second`}},
		"empty range": {[]string{"--config", good, "--input", sampleGlob, "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"},
			[]string{"--since must be before --until"}},
		"negative HTTP slots": {[]string{"--config", good, "--input", sampleGlob, "--parallel-http-jobs", "-1"},
			[]string{"--parallel-http-jobs must be 0 (a slot per destination) or more; got -1"}},
		"no input match": {[]string{"--config", good, "--input", "/nonexistent/*.ndjson"}, []string{"--input /nonexistent/*.ndjson: no files match"}},
		"unknown flag":   {[]string{"--config", good, "--inptu", sampleGlob}, []string{"flag provided but not defined: -inptu"}},
		// Left to Beam: exit 1 without a word, leases held; every job failed.
		"unknown runner": {[]string{"--config", good, "--input", sampleGlob, "--runner=flnk"}, []string{`--runner: "flnk" is not a runner`}},
		"no job server": {[]string{"--config", good, "--input", sampleGlob, "--runner=universal", "--endpoint="},
			[]string{"--runner=universal needs --endpoint HOST:PORT"}},
	} {
		t.Run(name, func(t *testing.T) {
			r := runBackfill(t, append(slices.Clip(runner), c.args...)...)
			if r.code != 2 {
				t.Errorf("exit code %d, want 2\n%s", r.code, r.stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
		})
	}
}

const hookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// Isolation: a destination limited to one request a second does not hold up the
// others; they are all delivered long before it is. (The timing ratio against a run
// without it is measured by `go run ./cmd/bench -mode isolation`.)
func TestSlowDestinationDelaysNobody(t *testing.T) {
	// The grace lets requests already on their way when the first 429 goes out not
	// count as ignoring its Retry-After (see destsim.Options).
	slow := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: "initech", RateLimit: 1,
		RetryAfterGrace: 100 * time.Millisecond})
	fast := map[string]*destsim.Server{
		"acme":   testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: "acme"}),
		"globex": testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: "globex"}),
	}
	hook := func(tenant, url, extra string) string {
		return fmt.Sprintf("  - {id: %s-hook, tenant: %s, type: webhook, window: 1h, %s webhook: {url: %q, secret: %q}}\n",
			tenant, tenant, extra, url+"/hook", hookSecret)
	}
	cfgPath := writeConfig(t, "dead_letter: "+t.TempDir()+"\nallow_private_destinations: true\nintegrations:\n"+
		hook("initech", slow.URL(), "shards: 1, delivery: {max_batch_events: 20},")+
		hook("acme", fast["acme"].URL(), "shards: 2, delivery: {max_batch_events: 10},")+
		hook("globex", fast["globex"].URL(), "shards: 2, delivery: {max_batch_events: 10},"))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	r := runBackfill(t, "--config", cfgPath, "--input", sampleGlob)
	if r.code != 0 {
		t.Fatalf("exit code %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	in := readInput(t, sampleGlob)
	sims := map[string]*destsim.Server{"initech": slow, "acme": fast["acme"], "globex": fast["globex"]}
	for _, ic := range cfg.Integrations {
		want := in.want(ic, time.Time{}, time.Time{})
		events := sims[ic.Tenant].Events()
		if len(events) != len(want) {
			t.Errorf("%s holds %d impressions, want %d", ic.ID, len(events), len(want))
		}
		for id := range want {
			if e := events[uuid.UUID(id).String()]; e.Count != 1 {
				t.Errorf("%s: impression %x received %d times", ic.ID, id, e.Count)
			}
		}
	}
	slowSt := slow.Status()
	if slowSt.Throttled == 0 || slowSt.IgnoredRetryAfter > 0 {
		t.Errorf("slow destination: %d throttled, %d requests ignored a Retry-After", slowSt.Throttled, slowSt.IgnoredRetryAfter)
	}
	t.Logf("slow destination: %d requests (%d throttled) from %v to %v", slowSt.Requests, slowSt.Throttled, slowSt.FirstAccepted.Format("15:04:05.000"), slowSt.LastAccepted.Format("15:04:05.000"))
	for tenant, f := range fast {
		st := f.Status()
		t.Logf("%s: last delivery at %v", tenant, st.LastAccepted.Format("15:04:05.000"))
		if lead := slowSt.LastAccepted.Sub(st.LastAccepted); lead < 3*time.Second {
			t.Errorf("%s finished only %v before the slow destination: it waited for it", tenant, lead)
		}
	}
}

// uploadSample copies the sample input to bucket, under in/.
func uploadSample(t *testing.T, s3 *testenv.S3, bucket string) {
	t.Helper()
	files, _ := filepath.Glob(sampleGlob)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s3.Client.PutObject(context.Background(), &awss3.PutObjectInput{Bucket: &bucket,
			Key: aws.String("in/" + filepath.Base(f)), Body: bytes.NewReader(b)}); err != nil {
			t.Fatal(err)
		}
	}
}

// Input and dead-letter store on an S3-compatible server, reached through the
// configuration's files.s3 endpoint (path-style), not the AWS environment.
func TestS3InputAndDeadLetter(t *testing.T) {
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	uploadSample(t, s3, bucket)
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: s3://%[1]s/dead-letter/
files: {s3: {endpoint: %[2]s, region: us-east-1}}
integrations:
  - {id: acme-s3, tenant: acme, type: s3, s3: {bucket: %[1]s, prefix: out, endpoint: %[2]s, format: parquet}}
`, bucket, s3.Endpoint))
	cfg, _ := config.Load(cfgPath)
	r := runBackfill(t, "--config", cfgPath, "--input", "s3://"+bucket+"/in/part-*")
	if r.code != 0 {
		t.Fatalf("exit code %d\n%s", r.code, r.stderr)
	}
	in := readInput(t, sampleGlob)
	got, _ := delivered(t, s3, cfg.Integrations[0])
	checkExactlyOnce(t, "acme-s3", in.want(cfg.Integrations[0], time.Time{}, time.Time{}), got)
	dead := s3.Objects(t, bucket, "dead-letter/invalid/")
	lines := 0
	for _, b := range dead {
		lines += strings.Count(string(b), "\n")
	}
	if lines != len(in.invalid) || r.report.InvalidLines != int64(len(in.invalid)) {
		t.Errorf("dead-letter store on S3 holds %d lines in %d files, want %d", lines, len(dead), len(in.invalid))
	}
	// A complete backfill leaves no record of finished jobs, nor receipts: a rerun
	// delivers it again.
	if left := s3.Objects(t, bucket, "dead-letter/_"); len(left) != 0 {
		t.Errorf("a complete backfill left %v in the dead-letter store", keysOf(left))
	}
}

// GCS and S3 each as input and as output, Parquet objects read back with the same
// library: every impression once, with the right columns.
func TestGCSAndS3BothWays(t *testing.T) {
	s3 := testenv.NewS3(t)
	gcs := testenv.NewGCS(t)
	s3Bucket, gcsBucket := s3.Bucket(t), gcs.Bucket(t)
	ctx := context.Background()
	files, _ := filepath.Glob(sampleGlob)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := "in/" + filepath.Base(f)
		if _, err := s3.Client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &s3Bucket, Key: &name, Body: bytes.NewReader(b)}); err != nil {
			t.Fatal(err)
		}
		w := gcs.Client.Bucket(gcsBucket).Object(name).NewWriter(ctx)
		w.Write(b)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	in := readInput(t, sampleGlob)
	for _, c := range []struct{ name, input, out string }{
		{"gcs to s3", "gs://" + gcsBucket + "/in/part-*", "s3"},
		{"s3 to gcs", "s3://" + s3Bucket + "/in/part-*", "gcs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			section := fmt.Sprintf("s3: {bucket: %s, prefix: %s, endpoint: %s, format: parquet}", s3Bucket, "out-"+c.out, s3.Endpoint)
			if c.out == "gcs" {
				section = fmt.Sprintf("gcs: {bucket: %s, prefix: %s, format: parquet}", gcsBucket, "out-"+c.out)
			}
			cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
files: {s3: {endpoint: %s}}
integrations:
  - {id: acme-pq, tenant: acme, type: %s, window: 1h, %s}
`, t.TempDir(), s3.Endpoint, c.out, section))
			cfg, err := config.Load(cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			r := runBackfill(t, "--config", cfgPath, "--input", c.input)
			if r.code != 0 {
				t.Fatalf("exit code %d\n%s", r.code, r.stderr)
			}
			var objects map[string][]byte
			if c.out == "gcs" {
				objects = gcs.Objects(t, gcsBucket, "out-gcs/")
			} else {
				objects = s3.Objects(t, s3Bucket, "out-s3/")
			}
			got := map[[16]byte][]encode.Record{}
			for key, body := range objects {
				if !strings.HasSuffix(key, ".parquet") {
					t.Errorf("object %s is not Parquet", key)
				}
				rows, err := encode.ReadParquet(body)
				if err != nil {
					t.Fatalf("%s: %v", key, err)
				}
				for _, row := range rows {
					if row.ReceptionTimestamp < time.Now().Add(-time.Hour).UnixMilli() || row.TrafficTypeID != "" {
						t.Errorf("%s: row %+v", key, row)
					}
					rec := row.Record()
					imp := impression.Impression{Tenant: "acme", EnvironmentID: rec.EnvironmentID, EnvironmentName: rec.EnvironmentName,
						Key: rec.Key, BucketingKey: rec.BucketingKey, Split: rec.Split, Treatment: rec.Treatment,
						Label: rec.Label, Time: rec.Time, SplitVersionNumber: rec.SplitVersionNumber}
					got[imp.ComputeID()] = append(got[imp.ComputeID()], rec)
				}
			}
			checkExactlyOnce(t, "acme-pq", in.want(cfg.Integrations[0], time.Time{}, time.Time{}), got)
		})
	}
}
