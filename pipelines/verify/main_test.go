package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/transforms/encode"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const sampleGlob = "../../testdata/sample/*"

// TestVerify backfills the sample once, then gives each subtest a bucket holding a
// copy of what the backfill wrote, which the subtest edits before running verify.
// The subtests that break a window check that exactly that window gets the status.
func TestVerify(t *testing.T) { testVerify(t, nil) }

// The backfill and verify on Beam's portable Flink runner: a complete backfill is
// clean (exit 0), a window missing an object is found (exit 3), bad flags are exit 2.
func TestVerifyOnFlink(t *testing.T) {
	t.Parallel()
	testVerify(t, []string{"clean", "bad flags", "MISSING"}, testenv.FlinkFlags(t)...)
}

// testVerify runs TestVerify's subtests named in only (all of them if only is nil),
// the backfill and every verify with runner flags.
func testVerify(t *testing.T, only []string, runner ...string) {
	f := backfilled(t, runner...)
	ran := map[string]bool{}
	run := func(name string, test func(t *testing.T)) {
		if only == nil || slices.Contains(only, name) {
			ran[name] = true
			t.Run(name, test)
		}
	}
	ndjson := &encode.ObjectSpec{Format: encode.NDJSON}
	keys := f.keys("acme/")     // acme-s3's objects: one per 15 min window (one shard)
	victim := keys[len(keys)/2] // acme/dt=2026-01-01/hour=01/acme-s3_20260101T010000Z_20260101T011500Z_000.ndjson.gz
	name, ok := ndjson.ParseKey(victim)
	if !ok {
		t.Fatalf("%s is not a data object's key", victim)
	}
	windowStart := name.Start
	recs := f.records(t, victim, encode.NDJSON)
	if len(recs) < 4 {
		t.Fatalf("%s holds %d records; the tests need a few", victim, len(recs))
	}
	// keyOf names another object of the victim's window, covering [start, end).
	keyOf := func(start, end time.Time, shard int) string {
		return (&encode.ObjectSpec{Prefix: "acme", Format: encode.NDJSON}).Key("acme-s3", start, end, shard, "")
	}

	run("clean", func(t *testing.T) {
		_, args := f.bucket(t)
		work := t.TempDir()
		r, rows := f.verify(t, append(args, "--work-dir", work)...)
		if r.Code != 0 || !strings.Contains(r.Stdout, " 0 differ") {
			t.Fatalf("verify of a complete backfill: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
		}
		wantOnly(t, rows, "", time.Time{}, "")
		if left, _ := os.ReadDir(work); len(left) != 0 {
			t.Errorf("verify left %v in --work-dir", left)
		}
	})

	run("bad flags", func(t *testing.T) {
		_, args := f.bucket(t)
		r := testenv.Run(t, f.bin, append(append(args, "--work-dir", "hdfs://tmp/verify"), f.runner...)...)
		if r.Code != 2 || !strings.Contains(r.Stderr, "--work-dir") {
			t.Errorf("verify --work-dir hdfs://…: exit %d, want 2\n%s", r.Code, r.Stderr)
		}
	})

	run("MISSING", func(t *testing.T) {
		bucket, args := f.bucket(t)
		f.delete(t, bucket, victim)
		r, rows := f.verify(t, args...)
		wantOnly(t, rows, "acme-s3", windowStart, statusMissing)
		line := tableLine(r.Stdout, statusMissing)
		if !strings.Contains(line, "acme-s3") || !strings.Contains(line, windowStart.Format(time.RFC3339)) {
			t.Errorf("the deleted object's window (%s) is not in the table:\n%s", windowStart, r.Stdout)
		}
		if r.Code != 3 || !strings.Contains(r.Stdout, " 1 differ") {
			t.Errorf("want exit 3 and one window differing, got exit %d:\n%s", r.Code, r.Stdout)
		}
	})

	run("SHORT", func(t *testing.T) { // a record removed
		bucket, args := f.bucket(t)
		f.put(t, bucket, victim, recs[1:])
		r, rows := f.verify(t, args...)
		wantOnly(t, rows, "acme-s3", windowStart, statusShort)
		wantExit3(t, r)
	})

	run("DUPLICATED", func(t *testing.T) { // another object of the window holds one of its impressions
		bucket, args := f.bucket(t)
		f.put(t, bucket, keyOf(name.Start, name.End, 1), recs[:1])
		r, rows := f.verify(t, args...)
		wantOnly(t, rows, "acme-s3", windowStart, statusDuplicated)
		wantExit3(t, r)
	})

	// verify takes every data object under the prefix: another integration id's (one
	// renamed), a stream's panes, another format's.
	for _, c := range []struct{ name, id, pane string }{{"DUPLICATED_renamed", "acme-old", ""}, {"DUPLICATED_pane", "acme-s3", "9f86d081884c7d65"}} {
		run(c.name, func(t *testing.T) {
			bucket, args := f.bucket(t)
			key := (&encode.ObjectSpec{Prefix: "acme", Format: encode.NDJSON}).Key(c.id, name.Start, name.End, 0, c.pane)
			f.put(t, bucket, key, recs[:1])
			r, rows := f.verify(t, args...)
			wantOnly(t, rows, "acme-s3", windowStart, statusDuplicated)
			wantExit3(t, r)
		})
	}

	run("UNEXPECTED", func(t *testing.T) { // an impression of another tenant, same window
		bucket, args := f.bucket(t)
		var intruder *encode.Record
		for _, k := range f.keys("globex/") {
			for _, rec := range f.records(t, k, encode.Parquet) {
				if intruder == nil && rec.Time >= name.Start.UnixMilli() && rec.Time < name.End.UnixMilli() {
					intruder = &rec
				}
			}
		}
		if intruder == nil {
			t.Fatalf("no globex impression in %s's window", victim)
		}
		f.put(t, bucket, victim, append(slices.Clone(recs), *intruder))
		r, rows := f.verify(t, args...)
		wantOnly(t, rows, "acme-s3", windowStart, statusUnexpected)
		wantExit3(t, r)
	})

	// A backfill whose --since or --until cut a window names its objects by the part
	// they cover; several of them may hold one window.
	half := name.Start.Add(7*time.Minute + 30*time.Second)
	var before, after []encode.Record
	for _, rec := range recs {
		if rec.Time < half.UnixMilli() {
			before = append(before, rec)
		} else {
			after = append(after, rec)
		}
	}
	if len(before) == 0 || len(after) < 2 {
		t.Fatalf("%s: %d records before %s, %d after; the tests need some on both sides", victim, len(before), half, len(after))
	}
	split := func(t *testing.T, bucket string, before, after []encode.Record) {
		f.delete(t, bucket, victim)
		f.put(t, bucket, keyOf(name.Start, half, 0), before)
		f.put(t, bucket, keyOf(half, name.End, 0), after)
	}

	run("split", func(t *testing.T) { // objects of disjoint parts of the window
		bucket, args := f.bucket(t)
		split(t, bucket, before, after)
		r, rows := f.verify(t, args...)
		if r.Code != 0 {
			t.Fatalf("verify of a window split in two objects: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
		}
		wantOnly(t, rows, "", time.Time{}, "")
	})

	run("UNEXPECTED_stray", func(t *testing.T) { // a record filed in the part of the window it is not in
		bucket, args := f.bucket(t)
		split(t, bucket, append(slices.Clone(before), after[0]), after[1:])
		r, rows := f.verify(t, args...)
		wantOnly(t, rows, "acme-s3", windowStart, statusUnexpected)
		wantExit3(t, r)
	})

	run("WRONG", func(t *testing.T) { // a record replaced by another impression of the window
		bucket, args := f.bucket(t)
		edited := slices.Clone(recs)
		edited[0].Key += "-someone-else"
		f.put(t, bucket, victim, edited)
		r, rows := f.verify(t, args...)
		wantOnly(t, rows, "acme-s3", windowStart, statusWrong)
		wantExit3(t, r)
	})

	run("since", func(t *testing.T) { // the recount and the check clip windows alike
		_, args := f.bucket(t)
		r, rows := f.verify(t, append(args, "--since", half.Format(time.RFC3339))...)
		if r.Code != 0 {
			t.Fatalf("verify --since %s: exit %d\n%s%s", half.Format(time.RFC3339), r.Code, r.Stdout, r.Stderr)
		}
		i := slices.IndexFunc(rows, func(r row) bool { return r.Integration == "acme-s3" && r.Start.Equal(windowStart) })
		if i < 0 || rows[i].Expected != int64(len(after)) || rows[i].Unique != int64(len(after)) {
			t.Errorf("window %s cut at %s: want %d expected and stored, got %+v", windowStart, half, len(after), rows)
		}
	})
	for _, name := range only {
		if !ran[name] {
			t.Errorf("no subtest %q", name)
		}
	}
}

// The status rule alone: what a window holds against what it should.
func TestStatus(t *testing.T) {
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	set := func(ids ...uuid.UUID) (s idSet) {
		for _, id := range ids {
			s.add(id)
		}
		return s
	}
	want := set(a, b)
	for _, tc := range []struct {
		name string
		got  stored
		want string
	}{
		{"same", stored{records: 2, ids: set(b, a)}, statusOK},
		{"nothing", stored{}, statusMissing},
		{"one missing", stored{records: 1, ids: set(a)}, statusShort},
		{"one missing, another extra, one more missing", stored{records: 1, ids: set(c)}, statusShort},
		{"one replaced", stored{records: 2, ids: set(a, c)}, statusWrong},
		{"one extra", stored{records: 3, ids: set(a, b, c)}, statusUnexpected},
		{"a stray", stored{records: 2, strays: 1, ids: set(a, b)}, statusUnexpected},
		{"a copy", stored{records: 3, ids: set(a, b)}, statusDuplicated},
	} {
		if got := status(want, tc.got); got != tc.want {
			t.Errorf("%s: status %s, want %s", tc.name, got, tc.want)
		}
	}
	if set(a, b).plus(set(c)) != set(c, b, a) {
		t.Error("an idSet depends on the order of its ids")
	}
	if s, err := parseIDSet("2", want.Digest()); err != nil || s != want {
		t.Errorf("parseIDSet(Digest()) = %v, %v; want %v", s, err, want)
	}
}

// fixture is a completed backfill of the sample.
type fixture struct {
	s3      *testenv.S3
	bin     string            // verify
	objects map[string][]byte // key -> the object the backfill wrote
	runner  []string          // the runner flags of the backfill and of every verify
}

func backfilled(t *testing.T, runner ...string) *fixture {
	f := &fixture{s3: testenv.NewS3(t), runner: runner}
	bucket, args := f.bucket(t)
	if r := testenv.Run(t, testenv.Build(t, "./pipelines/backfill"), append(args, runner...)...); r.Code != 0 {
		t.Fatalf("backfill: exit %d\n%s", r.Code, r.Stderr)
	}
	f.objects = f.s3.Objects(t, bucket, "")
	f.bin = testenv.Build(t, "./pipelines/verify")
	return f
}

// bucket returns a new bucket holding a copy of the backfill's objects, and the
// flags that name it (a configuration file and the input).
func (f *fixture) bucket(t *testing.T) (string, []string) {
	bucket := f.s3.Bucket(t)
	for k, b := range f.objects {
		f.putBytes(t, bucket, k, b)
	}
	cfgPath := filepath.Join(t.TempDir(), "outflow.yaml")
	err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, window: 15m, shards: 1, s3: {bucket: %[2]s, prefix: acme, endpoint: %[3]s}}
  - {id: globex-pq, tenant: globex, type: s3, window: 1h, s3: {bucket: %[2]s, prefix: globex, endpoint: %[3]s, format: parquet}}
`, t.TempDir(), bucket, f.s3.Endpoint)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return bucket, []string{"--config", cfgPath, "--input", sampleGlob}
}

// verify runs verify with --out and returns its rows too.
func (f *fixture) verify(t *testing.T, args ...string) (testenv.Result, []row) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "verify.jsonl")
	r := testenv.Run(t, f.bin, append(append(args, "--out", out), f.runner...)...)
	t.Logf("verify: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("verify wrote no --out file: %v", err)
	}
	var rows []row
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var r row
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("--out line %q: %v", sc.Text(), err)
		}
		rows = append(rows, r)
	}
	return r, rows
}

// wantOnly checks that the window of integration id starting at start has status
// want and every other window is ok (with id "", that all are).
func wantOnly(t *testing.T, rows []row, id string, start time.Time, want string) {
	t.Helper()
	found := id == ""
	for _, r := range rows {
		if r.Integration == id && r.Start.Equal(start) {
			found = true
			if r.Status != want {
				t.Errorf("window %s %s: status %s, want %s (%+v)", id, start, r.Status, want, r)
			}
		} else if r.Status != statusOK {
			t.Errorf("window %s %s: status %s, want ok (%+v)", r.Integration, r.Start, r.Status, r)
		}
	}
	if !found {
		t.Errorf("no row for window %s %s", id, start)
	}
	if len(rows) < 8 {
		t.Errorf("%d windows checked; the sample has more", len(rows))
	}
}

func wantExit3(t *testing.T, r testenv.Result) {
	t.Helper()
	if r.Code != 3 {
		t.Errorf("exit %d, want 3", r.Code)
	}
}

// tableLine returns the line of the table that holds s.
func tableLine(table, s string) string {
	for _, l := range strings.Split(table, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// keys returns the keys of the backfill's objects under prefix, in order.
func (f *fixture) keys(prefix string) []string {
	var keys []string
	for k := range f.objects {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func (f *fixture) records(t *testing.T, key string, format encode.Format) []encode.Record {
	t.Helper()
	recs, err := encode.ReadObject(bytes.NewReader(f.objects[key]), format)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return recs
}

// put writes recs as acme-s3's NDJSON object at key.
func (f *fixture) put(t *testing.T, bucket, key string, recs []encode.Record) {
	t.Helper()
	var raw []byte
	for _, rec := range recs {
		imp := rec.Impression("acme")
		raw = encode.Append(encode.NDJSON, raw, &imp)
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(raw)
	zw.Close()
	f.putBytes(t, bucket, key, b.Bytes())
}

func (f *fixture) putBytes(t *testing.T, bucket, key string, b []byte) {
	t.Helper()
	_, err := f.s3.Client.PutObject(context.Background(), &awss3.PutObjectInput{Bucket: &bucket, Key: aws.String(key), Body: bytes.NewReader(b)})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func (f *fixture) delete(t *testing.T, bucket, key string) {
	t.Helper()
	if _, err := f.s3.Client.DeleteObject(context.Background(), &awss3.DeleteObjectInput{Bucket: &bucket, Key: aws.String(key)}); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
}
