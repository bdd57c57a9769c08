// Package testenv starts the real servers that integration tests talk to, on
// loopback, and stops them when the test ends.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/outflow/outflow/internal/s3server"
	"github.com/outflow/outflow/io/objectio"
	"github.com/outflow/outflow/io/s3io"
	"github.com/outflow/outflow/transforms/encode"
)

// S3EndpointEnv names an S3-compatible server (e.g. MinIO) to test against instead of
// the in-process one; its credentials come from the standard AWS variables.
const S3EndpointEnv = "OUTFLOW_TEST_S3_ENDPOINT"

// S3 is an S3 API server for one test.
type S3 struct {
	Endpoint string
	Client   *s3.Client
}

// NewS3 returns the server named by $OUTFLOW_TEST_S3_ENDPOINT, or starts an in-process
// one. It sets test credentials in the environment when none are set, so pipelines
// the test starts, in process or as a subprocess, reach it too.
func NewS3(t testing.TB) *S3 {
	t.Helper()
	// Set for the whole test process, not with t.Setenv, which parallel tests may not
	// use. A serial test may still t.Setenv its own: they are unset after it.
	for _, kv := range [][2]string{{"AWS_ACCESS_KEY_ID", "outflow-test"},
		{"AWS_SECRET_ACCESS_KEY", "outflow-test-secret"}, {"AWS_EC2_METADATA_DISABLED", "true"}} {
		if os.Getenv(kv[0]) == "" {
			os.Setenv(kv[0], kv[1])
		}
	}
	endpoint := os.Getenv(S3EndpointEnv)
	if endpoint == "" {
		srv, err := s3server.Start("")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		endpoint = srv.Endpoint
	}
	client, err := s3io.NewClient(context.Background(), s3io.Config{Connection: s3io.Connection{Endpoint: endpoint, Region: "us-east-1"}})
	if err != nil {
		t.Fatal(err)
	}
	return &S3{Endpoint: endpoint, Client: client}
}

// Bucket creates a bucket with a fresh name, so tests sharing a server never meet.
func (s *S3) Bucket(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	name := "outflow-test-" + hex.EncodeToString(b)
	if _, err := s.Client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return name
}

// Objects returns every object under prefix in bucket: key -> bytes.
func (s *S3) Objects(t testing.TB, bucket, prefix string) map[string][]byte {
	t.Helper()
	ctx := context.Background()
	out := map[string][]byte{}
	pages := s3.NewListObjectsV2Paginator(s.Client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			t.Fatalf("list s3://%s/%s: %v", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			got, err := s.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: o.Key})
			if err != nil {
				t.Fatalf("get s3://%s/%s: %v", bucket, *o.Key, err)
			}
			b, err := io.ReadAll(got.Body)
			got.Body.Close()
			if err != nil {
				t.Fatalf("read s3://%s/%s: %v", bucket, *o.Key, err)
			}
			out[*o.Key] = b
		}
	}
	return out
}

// DataObjects is Objects without the prefixes' leases (objectio.LeaseName), which
// live beside the data objects while a job runs.
func (s *S3) DataObjects(t testing.TB, bucket, prefix string) map[string][]byte {
	t.Helper()
	out := s.Objects(t, bucket, prefix)
	for key := range out {
		if path.Base(key) == objectio.LeaseName {
			delete(out, key)
		}
	}
	return out
}

// ObjectTarget is the object-store core's view of an S3 integration id writing to
// bucket/prefix on this server, for tests that work the core directly (leases).
func (s *S3) ObjectTarget(id, bucket, prefix string) objectio.Target {
	spec := encode.ObjectSpec{Bucket: bucket, Prefix: prefix}
	settings, _ := json.Marshal(s3io.Config{ObjectSpec: spec, // plain strings: no error
		Connection: s3io.Connection{Endpoint: s.Endpoint, Region: "us-east-1"}})
	return objectio.Target{ID: id, Kind: s3io.Kind, Settings: settings, Spec: spec}
}
