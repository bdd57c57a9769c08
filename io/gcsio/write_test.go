package gcsio_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
	_ "github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem/gcs" // registers gs://
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/outflow/outflow/internal/configkit"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/gcsio"
	"github.com/outflow/outflow/io/objectio"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
	"github.com/outflow/outflow/transforms/windowing"
)

func TestMain(m *testing.M) { ptest.Main(m) }

func init() {
	register.DoFn2x0[[]byte, func(beam.EventTime, impression.Impression)](&genFn{})
}

var base = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// impressions returns the impressions of a named set, the same in the pipeline and
// in the test that checks what it wrote.
//
//	"small": 400 impressions of tenant acme over three hours, with properties that
//	         need quoting in CSV and escaping in JSON;
//	"big":   60000 impressions of tenant bigco in one hour, with random,
//	         incompressible properties, so that their object is larger than one
//	         upload chunk (8 MiB).
func impressions(set string) []impression.Impression {
	var out []impression.Impression
	switch set {
	case "small":
		for i := range 400 {
			imp := impression.Impression{Tenant: "acme", EnvironmentID: "env-1", EnvironmentName: "production",
				Key: fmt.Sprintf("user-%d", i), BucketingKey: fmt.Sprintf("b-%d", i%7), Split: "checkout", Treatment: "on",
				Label: "default rule", Time: base.UnixMilli() + int64(i)*27_000, SplitVersionNumber: 1767225600000,
				MachineName: "host-1", MachineIP: "10.0.0.1", SDK: "go", SDKVersion: "6.1.0",
				Properties: fmt.Sprintf(`{"plan":"pro, \"gold\"","n":%d,"note":"café ☕\nline 2"}`, i)}
			if i%5 == 0 {
				imp.Properties = ""
			}
			imp.ID = imp.ComputeID()
			imp.Origin = uint64(i)
			out = append(out, imp)
		}
	case "big":
		r := rand.New(rand.NewPCG(1, 2))
		noise := make([]byte, 150)
		for i := range 60000 {
			for j := range noise {
				noise[j] = byte(r.Uint32())
			}
			imp := impression.Impression{Tenant: "bigco", EnvironmentName: "production", Key: fmt.Sprintf("user-%d", i),
				Split: "s", Treatment: "on", Time: base.UnixMilli() + int64(i)%3600000,
				Properties: base64.StdEncoding.EncodeToString(noise)}
			imp.ID = imp.ComputeID()
			imp.Origin = uint64(i)
			out = append(out, imp)
		}
	default:
		panic("no impression set " + set)
	}
	return out
}

// genFn emits an impression set, and a second copy of every tenth impression: the
// objects must hold each impression once.
type genFn struct{ Set string }

func (fn *genFn) ProcessElement(_ []byte, emit func(beam.EventTime, impression.Impression)) {
	imps := impressions(fn.Set)
	for i, imp := range imps {
		emit(mtime.FromMilliseconds(imp.Time), imp)
		if i%10 == 0 {
			imp.Origin += 1 << 32
			emit(mtime.FromMilliseconds(imp.Time), imp)
		}
	}
}

// target is one GCS integration of the test.
type target struct {
	route route.Target
	cfg   gcsio.Config
}

func (tg target) object() objectio.Target {
	settings, err := json.Marshal(tg.cfg)
	if err != nil {
		panic(err)
	}
	return objectio.Target{ID: tg.route.ID, Kind: gcsio.Kind, Spec: tg.cfg.ObjectSpec, Settings: settings}
}

// want returns the records each target's objects must hold, by object name, sorted
// by key.
func want(targets []target, imps []impression.Impression) map[string][]encode.Record {
	out := map[string][]encode.Record{}
	for _, tg := range targets {
		for _, imp := range imps {
			if !tg.route.Matches(&imp) {
				continue
			}
			start := time.UnixMilli(imp.Time).UTC().Truncate(time.Hour)
			key := tg.cfg.Key(tg.route.ID, start, start.Add(time.Hour), route.Shard(&imp, tg.route.Shards), "")
			out[key] = append(out[key], encode.NewRecord(&imp))
		}
	}
	for _, recs := range out {
		sortRecords(recs)
	}
	return out
}

func sortRecords(recs []encode.Record) {
	slices.SortFunc(recs, func(a, b encode.Record) int { return cmp.Compare(a.Key, b.Key) })
}

// NDJSON and CSV objects written through objectio.Write land under their
// ObjectSpec.Key names and decode to exactly the impressions sent, once each; an
// object larger than one chunk goes up as a resumable upload and reads back intact.
func TestWrite(t *testing.T) {
	srv := testenv.NewGCS(t)
	bucket := srv.Bucket(t)
	spec := func(prefix string, f encode.Format) encode.ObjectSpec {
		return encode.ObjectSpec{Bucket: bucket, Prefix: prefix, Format: f, MaxConcurrentUploads: 2}
	}
	// acme-ndjson names its endpoint; the others reach the emulator through
	// STORAGE_EMULATOR_HOST, as a job does.
	ndjson := []target{
		{route.Target{ID: "acme-ndjson", Tenant: "acme", Shards: 2}, gcsio.Config{ObjectSpec: spec("impressions/ndjson/", encode.NDJSON), Endpoint: srv.Endpoint}},
		{route.Target{ID: "bigco-big", Tenant: "bigco", Shards: 1}, gcsio.Config{ObjectSpec: spec("big", encode.NDJSON)}},
	}
	csv := []target{
		{route.Target{ID: "acme-csv", Tenant: "acme", Shards: 1}, gcsio.Config{ObjectSpec: spec("impressions/csv", encode.CSV)}},
	}
	// Validate trims the prefixes and checks the endpoint, as loading the config does.
	for _, ts := range [][]target{ndjson, csv} {
		for i := range ts {
			var p configkit.Problems
			ts[i].cfg.Validate(&p, "integrations."+ts[i].route.ID+".gcs")
			if len(p.List()) > 0 {
				t.Fatalf("config of %s: %v", ts[i].route.ID, p.List())
			}
		}
	}

	p, s := beam.NewPipelineWithRoot()
	imps := beam.Flatten(s,
		beam.ParDo(s, &genFn{Set: "small"}, beam.Impulse(s)),
		beam.ParDo(s, &genFn{Set: "big"}, beam.Impulse(s)))
	for _, g := range []struct {
		format  encode.Format
		targets []target
	}{{encode.NDJSON, ndjson}, {encode.CSV, csv}} {
		s := s.Scope(string(g.format))
		var rts []route.Target
		var ots []objectio.Target
		for _, tg := range g.targets {
			rts = append(rts, tg.route)
			ots = append(ots, tg.object())
		}
		routed := route.Fanout(s, rts, imps)
		objectio.Write(s, ots, encode.Objects(s, g.format, windowing.Fixed(s, time.Hour, 0, routed)))
	}
	ptest.RunAndValidate(t, p)

	all := slices.Concat(impressions("small"), impressions("big"))
	wantNDJSON, wantCSV := want(ndjson, all), want(csv, all)
	objects := srv.Objects(t, bucket, "")
	named := map[string]string{} // key without the digest -> key
	for key := range objects {
		base := digestPart.ReplaceAllString(key, "$1")
		if base == key {
			t.Errorf("object %s: no digest of its impressions in its name", key)
		}
		named[base] = key
	}
	if len(objects) != len(wantNDJSON)+len(wantCSV) {
		t.Errorf("%d objects, want %d: %v", len(objects), len(wantNDJSON)+len(wantCSV), names(objects))
	}
	for _, w := range []struct {
		format encode.Format
		byKey  map[string][]encode.Record
	}{{encode.NDJSON, wantNDJSON}, {encode.CSV, wantCSV}} {
		for base, wantRecs := range w.byKey {
			key := named[base]
			body, ok := objects[key]
			if !ok {
				t.Errorf("no object %s; have %v", key, names(objects))
				continue
			}
			recs, err := encode.ReadObject(bytes.NewReader(body), w.format)
			if err != nil {
				t.Errorf("%s: %v", key, err)
				continue
			}
			sortRecords(recs)
			if !slices.Equal(recs, wantRecs) {
				t.Errorf("%s: read back %d records, want %d (or they differ)", key, len(recs), len(wantRecs))
			}
			attrs, err := srv.Client.Bucket(bucket).Object(key).Attrs(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if attrs.ContentType != w.format.ContentType() || attrs.ContentEncoding != "" {
				t.Errorf("%s: Content-Type %q, Content-Encoding %q; want %q and none",
					key, attrs.ContentType, attrs.ContentEncoding, w.format.ContentType())
			}
		}
	}
	const big = "big/dt=2026-01-01/hour=00/bigco-big_20260101T000000Z_20260101T010000Z_000.ndjson.gz"
	if n := len(objects[named[big]]); n < 9<<20 {
		t.Errorf("%s is %d bytes; the test needs one larger than a chunk (8 MiB)", big, n)
	}
	if len(wantNDJSON) != 3*2+1 || len(wantCSV) != 3 {
		t.Errorf("test data: want 7 NDJSON and 3 CSV objects, have %d and %d", len(wantNDJSON), len(wantCSV))
	}
}

// digestPart is the digest of its impressions that ends an object's name.
var digestPart = regexp.MustCompile(`_[0-9a-f]{16}(\.[a-z.]+)$`)

func names(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestCheck(t *testing.T) {
	srv := testenv.NewGCS(t)
	bucket := srv.Bucket(t)
	ctx := context.Background()

	t.Run("reachable", func(t *testing.T) {
		for _, endpoint := range []string{"", srv.Endpoint} { // STORAGE_EMULATOR_HOST, then the endpoint
			cfg := gcsio.Config{ObjectSpec: encode.ObjectSpec{Bucket: bucket}, Endpoint: endpoint}
			if err := gcsio.Check(ctx, "acme-gcs", cfg); err != nil {
				t.Errorf("endpoint %q: %v", endpoint, err)
			}
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		cfg := gcsio.Config{ObjectSpec: encode.ObjectSpec{Bucket: "outflow-no-such-bucket"}, Endpoint: srv.Endpoint}
		err := gcsio.Check(ctx, "acme-gcs", cfg)
		t.Logf("error: %v", err)
		wantError(t, err, `integration "acme-gcs"`, "gs://outflow-no-such-bucket at "+srv.Endpoint, "does not exist")
	})
	t.Run("unreachable endpoint", func(t *testing.T) {
		// As in a deployment: no emulator in the environment, only the endpoint.
		t.Setenv("STORAGE_EMULATOR_HOST", "")
		// A port that was free a moment ago: connections are refused.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		endpoint := "http://" + l.Addr().String()
		l.Close()
		cfg := gcsio.Config{ObjectSpec: encode.ObjectSpec{Bucket: bucket}, Endpoint: endpoint}
		start := time.Now()
		err = gcsio.Check(ctx, "acme-gcs", cfg)
		t.Logf("error after %v: %v", time.Since(start).Round(time.Millisecond), err)
		wantError(t, err, `integration "acme-gcs"`, "gs://"+bucket+" at "+endpoint, "not reachable")
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("Check took %v; it should fail fast", d)
		}
	})
	t.Run("credentials in endpoint", func(t *testing.T) {
		cfg := gcsio.Config{ObjectSpec: encode.ObjectSpec{Bucket: "outflow-no-such-bucket"},
			Endpoint: strings.Replace(srv.Endpoint, "://", "://user:hunter2@", 1)}
		err := gcsio.Check(ctx, "acme-gcs", cfg)
		t.Logf("error: %v", err)
		wantError(t, err, `integration "acme-gcs"`)
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error shows the password: %v", err)
		}
	})
}

func wantError(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one containing %q", parts)
	}
	for _, part := range parts {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not contain %q", err, part)
		}
	}
}

func TestConfigValidateEndpoint(t *testing.T) {
	for endpoint, ok := range map[string]bool{
		"":                       true,
		"http://localhost:4443":  true,
		"https://gcs.example/x/": true,
		"localhost:4443":         false,
		"ftp://localhost":        false,
		"http://u:p@localhost":   false,
	} {
		cfg := gcsio.Config{ObjectSpec: encode.ObjectSpec{Bucket: "bucket"}, Endpoint: endpoint}
		var p configkit.Problems
		cfg.Validate(&p, "gcs")
		if got := len(p.List()) == 0; got != ok {
			t.Errorf("endpoint %q: problems %v; want ok=%v", endpoint, p.List(), ok)
		}
	}
}

// Beam's own gcs filesystem, with STORAGE_EMULATOR_HOST set, lists objects of the
// emulator by glob, and reads them (skipped while it cannot: see OpenRead below).
func TestBeamFilesystem(t *testing.T) {
	srv := testenv.NewGCS(t)
	bucket := srv.Bucket(t)
	ctx := context.Background()
	objects := map[string]string{
		"prefix/a.ndjson":     `{"key":"a"}` + "\n",
		"prefix/b.ndjson":     `{"key":"b"}` + "\n",
		"prefix/c.csv":        "key\nc\n",
		"prefix/sub/d.ndjson": `{"key":"d"}` + "\n",
	}
	for name, body := range objects {
		w := srv.Client.Bucket(bucket).Object(name).NewWriter(ctx)
		io.WriteString(w, body)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}

	glob := "gs://" + bucket + "/prefix/*.ndjson"
	fs, err := filesystem.New(ctx, glob)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	files, err := fs.List(ctx, glob)
	if err != nil {
		t.Fatalf("List(%s): %v", glob, err)
	}
	slices.Sort(files)
	wantFiles := []string{"gs://" + bucket + "/prefix/a.ndjson", "gs://" + bucket + "/prefix/b.ndjson"}
	if !slices.Equal(files, wantFiles) {
		t.Errorf("List(%s) = %q, want %q", glob, files, wantFiles)
	}
	for _, f := range wantFiles {
		r, err := fs.OpenRead(ctx, f)
		if err != nil {
			// Known limitation, left for a decision rather than worked around: the
			// filesystem's client reads through the XML API, path-style at
			// http://$STORAGE_EMULATOR_HOST/<bucket>/<object>, which fake-gcs-server
			// serves only for its public host (storage.googleapis.com), so the read
			// gets a 404. It has no option for storage.WithJSONReads.
			t.Fatalf("Beam's gcs filesystem lists but cannot read the emulator: OpenRead(%s): %v", f, err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Errorf("read %s: %v", f, err)
			continue
		}
		if name := strings.TrimPrefix(f, "gs://"+bucket+"/"); string(b) != objects[name] {
			t.Errorf("%s = %q, want %q", f, b, objects[name])
		}
	}
}

// failingReader yields n random bytes, then fails, as a Parquet body does when
// encoding fails part way.
type failingReader struct {
	n int
	r *rand.ChaCha8
}

var errBody = errors.New("body failed")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errBody
	}
	p = p[:min(len(p), f.n)]
	f.r.Read(p)
	f.n -= len(p)
	return len(p), nil
}

// A body that fails part way, before or after the first chunk went up, fails Put
// and leaves no object behind; a body that ends stores the object.
func TestPutAbandonsFailedUpload(t *testing.T) {
	srv := testenv.NewGCS(t)
	bucket := srv.Bucket(t)
	ctx := context.Background()
	settings, _ := json.Marshal(gcsio.Config{ObjectSpec: encode.ObjectSpec{Bucket: bucket}})
	store, err := objectio.NewStore(ctx, gcsio.Kind, settings)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1 << 10, 9 << 20} {
		key := fmt.Sprintf("failed-%d", n)
		err := store.Put(ctx, key, "application/gzip", &failingReader{n: n, r: rand.NewChaCha8([32]byte{})})
		if !errors.Is(err, errBody) || !strings.Contains(err.Error(), store.Where(key)) {
			t.Errorf("Put of a body failing after %d bytes: %v; want the body's error, naming the object", n, err)
		}
	}
	body := strings.Repeat("x", 100)
	if err := store.Put(ctx, "ok", "text/plain", strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	objects := srv.Objects(t, bucket, "")
	if len(objects) != 1 || string(objects["ok"]) != body {
		t.Errorf("objects = %v; want only ok", names(objects))
	}
}
