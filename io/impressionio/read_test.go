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
	content := "a\r\n\nb\n" + long + "\nc" // the last line has no line end
	path := filepath.Join(dir, "f.ndjson")
	os.WriteFile(path, []byte(content), 0o644)
	var got []string
	err := readLines(context.Background(), path, func(b []byte) error {
		got = append(got, string(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || got[0] != "a" || got[1] != "" || got[2] != "b" || got[4] != "c" {
		t.Fatalf("lines = %q…", got[:min(3, len(got))])
	}
	if n := len(got[3]); n <= impression.MaxLineBytes || n > impression.MaxLineBytes+300<<10 {
		t.Errorf("the long line came through as %d bytes; want it cut just past the limit", n)
	}
	if _, err := impression.Parse([]byte(got[3])); err == nil || !strings.Contains(err.Error(), "longer than the limit") {
		t.Errorf("Parse of the long line = %v", err)
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
	os.Mkdir(filepath.Join(dir, "e-dir.ndjson"), 0o755)
	write("f-range.ndjson", []byte(line("early", 10)+"\n"+line("late", 9e12)+"\n"))

	p, s := beam.NewPipelineWithRoot()
	imps, invalid := Read(s, filepath.Join(dir, "*.ndjson*"), Since(time.UnixMilli(500)), Until(time.UnixMilli(8e12)))
	passert.EqualsList(s, beam.ParDo(s, impKey, imps), []string{"u1", "u2", "u3", "u4"})
	summaries := beam.ParDo(s, deadSummary, invalid)
	passert.Count(s, summaries, "dead-letter records", 4)
	passert.True(s, summaries, expectedDeadLetter)
	ptest.RunAndValidate(t, p)
}
