package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/testenv"
)

// A stream, then a backfill over a file that holds what the stream stored and more,
// then the stream again with copies of the backfill's impressions: the prefix holds
// each impression once, whichever job wrote it, and no object was replaced. A
// backfill started while the stream runs is refused, naming the stream's lease.
func TestStreamAndBackfillShareAPrefix(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	s3, bucket, s3Cfg := acmeS3(t)
	cfgPath := writeConfig(t, s3Cfg)
	stored := func() map[string]int { return copies(t, s3, bucket, "acme/") }
	objects := func() map[string][]byte { return s3.DataObjects(t, bucket, "acme/") }
	at := time.Now().Add(-time.Minute)
	var lines []string
	for _, k := range keys("a", 0, 50) {
		lines = append(lines, fmt.Sprintf(`{"tenant":"acme","environmentName":"production","key":%q,"split":"s","treatment":"on","time":%d}`, k, at.UnixMilli()))
	}
	input := filepath.Join(t.TempDir(), "in.ndjson")
	if err := os.WriteFile(input, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	backfillBin := testenv.Build(t, "./pipelines/backfill")

	j := startConfig(t, tp, cfgPath)
	tp.produceAt(at, "acme", keys("a", 0, 30)...)
	waitCopies(t, j, s3, bucket, "acme/", 30, 90*time.Second)
	// One writer at a time: while the stream runs, the backfill is refused before it
	// writes, naming the stream.
	backfill := testenv.Run(t, backfillBin, "--config", cfgPath, "--input", input)
	if backfill.Code != 2 || !strings.Contains(backfill.Stderr, "held by stream on ") ||
		!strings.Contains(backfill.Stderr, "acme/_outflow.lease") || !strings.Contains(backfill.Stderr, "--break-lease") {
		t.Fatalf("a backfill while the stream runs: exit %d, want 2 naming the stream's lease\n%s", backfill.Code, backfill.Stderr)
	}
	if held := stored(); len(held) != 30 {
		t.Fatalf("the refused backfill stored something: %d impressions held, want 30", len(held))
	}
	if code := j.stop(); code != 0 {
		t.Fatalf("stream: exit %d\n%s", code, j.stderr.String())
	}
	afterStream := objects()

	// The backfill reads the stream's 30 and 20 more, of the same windows.
	backfill = testenv.Run(t, backfillBin, "--config", cfgPath, "--input", input)
	if backfill.Code != 0 {
		t.Fatalf("backfill: exit %d\n%s", backfill.Code, backfill.Stderr)
	}
	afterBackfill := objects()
	for key, body := range afterStream {
		if !bytes.Equal(afterBackfill[key], body) {
			t.Errorf("the backfill replaced the stream's object %s", key)
		}
	}

	// The stream again: copies of what the backfill stored, and new ones.
	j = startConfig(t, tp, cfgPath)
	tp.produceAt(at, "acme", keys("a", 20, 50)...)
	tp.produce("acme", keys("b", 0, 10)...)
	waitCopies(t, j, s3, bucket, "acme/", 60, 90*time.Second)
	time.Sleep(3 * time.Second) // time for a copy to be stored, if one were
	if code := j.stop(); code != 0 {
		t.Errorf("stream: exit %d\n%s", code, j.stderr.String())
	}
	held := stored()
	for _, k := range append(keys("a", 0, 50), keys("b", 0, 10)...) {
		if held[k] != 1 {
			t.Errorf("impression %s is in %d objects, want 1", k, held[k])
		}
	}
	if len(held) != 60 {
		t.Errorf("the prefix holds %d impressions, want 60", len(held))
	}
}
