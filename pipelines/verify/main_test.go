package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/outflow/outflow/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const sampleGlob = "../../testdata/sample/*"

// A complete backfill verifies clean; a deleted object's window is reported missing.
func TestVerify(t *testing.T) {
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	cfgPath := filepath.Join(t.TempDir(), "outflow.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, window: 15m, shards: 1, s3: {bucket: %[2]s, prefix: acme, endpoint: %[3]s}}
  - {id: globex-pq, tenant: globex, type: s3, window: 1h, s3: {bucket: %[2]s, prefix: globex, endpoint: %[3]s, format: parquet}}
`, t.TempDir(), bucket, s3.Endpoint)), 0o644)
	args := []string{"--config", cfgPath, "--input", sampleGlob}
	if r := testenv.Run(t, testenv.Build(t, "./pipelines/backfill"), args...); r.Code != 0 {
		t.Fatalf("backfill: exit %d\n%s", r.Code, r.Stderr)
	}
	verify := testenv.Build(t, "./pipelines/verify")

	clean := testenv.Run(t, verify, args...)
	if clean.Code != 0 || !strings.Contains(clean.Stdout, " 0 differ") {
		t.Fatalf("verify of a complete backfill: exit %d\n%s%s", clean.Code, clean.Stdout, clean.Stderr)
	}

	objects := s3.Objects(t, bucket, "acme/")
	var keys []string
	for k := range objects {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	victim := keys[len(keys)/2]
	if _, err := s3.Client.DeleteObject(context.Background(), &awss3.DeleteObjectInput{Bucket: &bucket, Key: aws.String(victim)}); err != nil {
		t.Fatal(err)
	}
	// victim is .../acme-s3_20260101T011500Z_20260101T013000Z_000.ndjson.gz
	start := strings.Split(filepath.Base(victim), "_")[1]
	missing := testenv.Run(t, verify, args...)
	if missing.Code == 0 {
		t.Fatalf("verify after deleting %s: exit 0\n%s", victim, missing.Stdout)
	}
	var line string
	for _, l := range strings.Split(missing.Stdout, "\n") {
		if strings.Contains(l, "MISSING") {
			line = l
		}
	}
	if line == "" || !strings.Contains(line, "acme-s3") || !strings.Contains(strings.ReplaceAll(strings.ReplaceAll(line, "-", ""), ":", ""), start[:13]) {
		t.Errorf("the deleted object's window (%s) is not reported missing:\n%s", start, missing.Stdout)
	}
	t.Logf("verify after deleting an object:\n%s", missing.Stdout)
	if !strings.Contains(missing.Stdout, " 1 differ") {
		t.Errorf("want exactly one window differing:\n%s", missing.Stdout)
	}
}
