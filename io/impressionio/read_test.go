package impressionio

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	"github.com/klauspost/compress/gzip"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/io/deadletterio"
)

func TestMain(m *testing.M) { ptest.Main(m) }

func init() {
	register.Function1x1(impKey)
	register.Function1x1(deadSummary)
	register.Function1x1(expectedDeadLetter)
}

func impKey(imp impression.Impression) string { return imp.Key }

// deadSummary keeps what a dead-letter record says, without the temp dir's path.
func deadSummary(r deadletterio.Record) string {
	return filepath.Base(r.Source) + " | " + r.Reason + " | " + r.Raw
}

// expectedDeadLetter recognises the dead-letter records TestReadBadFiles expects.
func expectedDeadLetter(x string) bool {
	switch {
	case strings.HasPrefix(x, "a-good.ndjson:3 | line is not a JSON object | not json"):
	case strings.HasPrefix(x, "b-truncated.ndjson.gz | reading ") && strings.Contains(x, "stopped after line 2: unexpected EOF"):
	case strings.HasPrefix(x, "d-notgzip.ndjson.gz | reading ") && strings.Contains(x, "not a gzip file"):
	case strings.HasPrefix(x, "e-dir.ndjson | reading ") && strings.Contains(x, "is a directory"):
	default:
		return false
	}
	return true
}

func line(key string, t int64) string {
	return fmt.Sprintf(`{"tenant":"acme","environmentName":"production","key":"%s","split":"s","treatment":"on","time":%d}`, key, t)
}

func gz(t *testing.T, s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}

func TestReadLines(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("x", impression.MaxLineBytes+10)
	huge := strings.Repeat("y", maxKeptLine+100)
	content := "a\r\n\nb\n" + long + "\n" + huge + "\nc" // the last line has no line end
	path := filepath.Join(dir, "f.ndjson")
	os.WriteFile(path, []byte(content), 0o644)
	var got []string
	sp := span{Path: path, Size: int64(len(content)), First: 1}
	err := readLines(context.Background(), sp, 0, func(b []byte) error {
		got = append(got, string(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 || got[0] != "a" || got[1] != "" || got[2] != "b" || got[5] != "c" {
		t.Fatalf("lines = %q…", got[:min(3, len(got))])
	}
	if got[3] != long {
		t.Errorf("a line over the parser's limit came through as %d bytes, want all %d", len(got[3]), len(long))
	}
	if len(got[4]) != maxKeptLine+1 || got[4] != huge[:maxKeptLine+1] {
		t.Errorf("a line over %d bytes came through as %d bytes; want it cut just past the bound", maxKeptLine, len(got[4]))
	}
	if _, err := impression.Parse([]byte(got[3])); err == nil || !strings.Contains(err.Error(), "longer than the limit") {
		t.Errorf("Parse of the long line = %v", err)
	}

	// Reading on after a failure skips the lines already read.
	got = nil
	readLines(context.Background(), sp, 4, func(b []byte) error {
		got = append(got, string(b[:min(len(b), 1)]))
		return nil
	})
	if strings.Join(got, ",") != "y,c" {
		t.Errorf("after skipping 4 lines: %q", got)
	}
}

// quickTime, the pre-parse filter, reads "time" only where the parser would read the
// same value; elsewhere it cannot tell, and the parser decides.
func TestQuickTime(t *testing.T) {
	for _, c := range []struct {
		line string
		t    int64
		ok   bool
	}{
		{`{"tenant":"a","time":123,"key":"k"}`, 123, true},
		{`{"time" : 7}`, 7, true},
		{`{"nested":{"time":1},"label":"\"time\":2","time":3}`, 3, true},
		{`{"time":1,"time":2}`, 0, false},
		{`{"time":1,"TIME":2}`, 0, false},
		{`{"Time":1}`, 0, false},
		{`{"ti\u006de":1,"time":2}`, 0, false},
		{`{"time":1.5}`, 0, false},
		{`{"time":"1"}`, 0, false},
		{`{"key":"time","tenant":"x"}`, 0, false},
	} {
		if got, ok := quickTime([]byte(c.line)); got != c.t || ok != c.ok {
			t.Errorf("quickTime(%s) = %d, %v; want %d, %v", c.line, got, ok, c.t, c.ok)
		}
	}
}

// Bad files never stop the job: what can be read is, the rest is dead-lettered with
// the reason, and the other files are read as usual.
func TestReadBadFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) { os.WriteFile(filepath.Join(dir, name), b, 0o644) }
	write("a-good.ndjson", []byte(line("u1", 1000)+"\n"+line("u2", 2000)+"\nnot json\n"))
	full := gz(t, line("u3", 3000)+"\n"+line("u4", 4000)+"\n")
	write("b-truncated.ndjson.gz", full[:len(full)-8]) // the gzip trailer is missing
	write("c-empty.ndjson", nil)
	write("d-notgzip.ndjson.gz", []byte(line("u5", 5000)+"\n"))
	write("f-range.ndjson", []byte(line("early", 10)+"\n"+line("late", 9e12)+"\n"))

	p, s := beam.NewPipelineWithRoot()
	imps, invalid := Read(s, filepath.Join(dir, "*.ndjson*"), Since(time.UnixMilli(500)), Until(time.UnixMilli(8e12)))
	passert.EqualsList(s, beam.ParDo(s, impKey, imps), []string{"u1", "u2", "u3", "u4"})
	summaries := beam.ParDo(s, deadSummary, invalid)
	passert.Count(s, summaries, "dead-letter records", 3)
	passert.True(s, summaries, expectedDeadLetter)
	ptest.RunAndValidate(t, p)
}

// A file that cannot be read fails the job, naming the file and the cause, in every
// job sharing the input: it is never reported done.
func TestReadErrorFailsTheJob(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "e-dir.ndjson"), 0o755)
	for _, own := range []bool{true, false} {
		p, s := beam.NewPipelineWithRoot()
		Read(s, filepath.Join(dir, "*.ndjson"), Shared(own, own), Within(time.UnixMilli(1), time.UnixMilli(2)))
		err := ptest.Run(p)
		if err == nil || !strings.Contains(err.Error(), "e-dir.ndjson") || !strings.Contains(err.Error(), "is a directory") {
			t.Errorf("job owning the rest %v: error %v, want one naming the file and its cause", own, err)
		}
	}
}

// A read that fails mid-file is tried again and goes on where it stopped: every line
// once. One that keeps failing fails the job.
func TestReadRetriesThenFails(t *testing.T) {
	defer func(w time.Duration) { retryWait = w }(retryWait)
	retryWait = time.Millisecond
	var body strings.Builder
	var want []string
	for i := range 3000 {
		key := fmt.Sprintf("u%04d", i)
		want = append(want, key)
		body.WriteString(line(key, int64(1000+i)) + "\n")
	}
	flaky.files.Store("flaky://ok-after-2.ndjson.gz", &flakyFile{data: gz(t, body.String()), failures: 2})
	flaky.files.Store("flaky://never.ndjson", &flakyFile{data: []byte(body.String()), failures: 1000})
	// A body shorter than the file, ending mid-line: the cut line is not taken for a line.
	flaky.files.Store("flaky://short-once.ndjson", &flakyFile{data: []byte(body.String()), failures: 1, short: true})
	// Read in spans: cutting the file stops where its read fails (the rest is one
	// span), and spans whose reads fail, or end early, are read again.
	flaky.files.Store("flaky://spans-reset.ndjson", &flakyFile{data: []byte(body.String()), failures: 3})
	flaky.files.Store("flaky://spans-short.ndjson", &flakyFile{data: []byte(body.String()), failures: 3, short: true})

	for _, path := range []string{"flaky://ok-after-2.ndjson.gz", "flaky://short-once.ndjson", "flaky://spans-reset.ndjson", "flaky://spans-short.ndjson"} {
		p, s := beam.NewPipelineWithRoot()
		imps, invalid := Read(s, path, SpanBytes(16<<10))
		passert.EqualsList(s, beam.ParDo(s, impKey, imps), want)
		passert.Empty(s, invalid)
		if err := ptest.Run(p); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}

	p, s := beam.NewPipelineWithRoot()
	Read(s, "flaky://never.ndjson")
	err := ptest.Run(p)
	if err == nil || !strings.Contains(err.Error(), "flaky://never.ndjson") || !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("a file that cannot be read: error %v, want one naming the file and the cause", err)
	}
}
