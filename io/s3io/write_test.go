package s3io_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"regexp"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/objectio"
	"github.com/outflow/outflow/io/s3io"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
	"github.com/outflow/outflow/transforms/windowing"
)

func TestMain(m *testing.M) { ptest.Main(m) }

func init() {
	register.DoFn2x0[[]byte, func(beam.EventTime, impression.Impression)](&genFn{})
}

// genFn emits N impressions in one hour, with random, incompressible properties, so
// that their object is larger than one upload part.
type genFn struct{ N int }

func (fn *genFn) ProcessElement(_ []byte, emit func(beam.EventTime, impression.Impression)) {
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	for i := range fn.N {
		noise := make([]byte, 150)
		for j := range noise {
			noise[j] = byte(r.Uint32())
		}
		imp := impression.Impression{Tenant: "acme", EnvironmentName: "production", Key: fmt.Sprintf("user-%d", i),
			Split: "s", Treatment: "on", Time: base + int64(i)%3600000, Properties: base64.StdEncoding.EncodeToString(noise)}
		imp.ID = imp.ComputeID()
		emit(mtime.FromMilliseconds(imp.Time), imp)
	}
}

// An object larger than a part goes up as a multipart upload and reads back intact.
func TestWriteLargeObject(t *testing.T) {
	srv := testenv.NewS3(t)
	bucket := srv.Bucket(t)
	const n = 60000
	cfg := s3io.Config{ObjectSpec: encode.ObjectSpec{Bucket: bucket, Prefix: "big", Format: encode.NDJSON, MaxConcurrentUploads: 2},
		Connection: s3io.Connection{Endpoint: srv.Endpoint, Region: "us-east-1"}}
	settings, _ := json.Marshal(cfg)

	p, s := beam.NewPipelineWithRoot()
	imps := beam.ParDo(s, &genFn{N: n}, beam.Impulse(s))
	routed := route.Fanout(s, []route.Target{{ID: "acme-big", Tenant: "acme", Shards: 1}}, imps)
	chunks := encode.Objects(s, encode.NDJSON, windowing.Fixed(s, time.Hour, 0, routed))
	objectio.Write(s, []objectio.Target{{ID: "acme-big", Kind: s3io.Kind, Spec: cfg.ObjectSpec, Settings: settings}}, chunks)
	ptest.RunAndValidate(t, p)

	objects := srv.Objects(t, bucket, "big/")
	name := regexp.MustCompile(`^big/dt=2026-01-01/hour=00/acme-big_20260101T000000Z_20260101T010000Z_000_[0-9a-f]{16}\.ndjson\.gz$`)
	if len(objects) != 1 || !name.MatchString(keys(objects)[0]) {
		t.Fatalf("objects = %v, want only one named %s", keys(objects), name)
	}
	key := keys(objects)[0]
	body := objects[key]
	if len(body) < 9<<20 {
		t.Fatalf("object is %d bytes; the test needs one larger than a part (8 MiB)", len(body))
	}
	head, err := srv.Client.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	// Multipart uploads have ETags of the form "<md5 of part md5s>-<parts>".
	if etag := aws.ToString(head.ETag); !bytes.Contains([]byte(etag), []byte("-")) {
		t.Logf("ETag %s does not look multipart (the server may not mark it)", etag)
	}
	recs, err := encode.ReadObject(bytes.NewReader(body), encode.NDJSON)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		seen[r.Key] = true
	}
	if len(recs) != n || len(seen) != n {
		t.Fatalf("read back %d records, %d distinct; want %d", len(recs), len(seen), n)
	}
}

func keys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
