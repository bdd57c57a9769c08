package impressionio

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamwindow "github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/filter"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/linefile"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
)

func init() {
	register.Function1x1(impOrigin)
	register.Function1x1(deadSource)
}

// impOrigin names an impression with what reading gave it: its origin, its file's line.
func impOrigin(imp impression.Impression) string { return fmt.Sprintf("%s@%x", imp.Key, imp.Origin) }

// deadSource is a dead-letter record with its file:line source.
func deadSource(r deadletterio.Record) string {
	return filepath.Base(r.Source) + " | " + r.Reason + " | " + r.Raw
}

// A large uncompressed file read in spans gives what reading it whole gives: every
// line once, numbered alike (origins, dead-letter sources), through Read and
// ReadObjects; a gzip file is read whole. The lines are of all kinds: invalid, empty,
// CRLF, longer than a span, and the last without a line end.
func TestReadSpansMatchWholeFiles(t *testing.T) {
	defer func(h int) { maxHeld = h }(maxHeld)
	maxHeld = 4 << 10
	const span = 4 << 10

	dir := t.TempDir()
	var b strings.Builder
	for i := range 4000 {
		tenant := []string{"acme", "globex"}[i%2]
		l := fmt.Sprintf(`{"tenant":%q,"environmentName":"production","key":"u%d","split":"s","treatment":"on","time":%d}`,
			tenant, i, 1767225600000+int64(i*7919%4000)*1000)
		switch {
		case i%250 == 0:
			l = "not json " + strings.Repeat("z", 3*span) // an invalid line longer than a span
		case i%97 == 0:
			l += "\r"
		case i%89 == 0:
			l = ""
		case i%13 == 0:
			b.WriteString(l + "\n") // a copy on the next line
		}
		b.WriteString(l)
		if i < 3999 {
			b.WriteString("\n")
		}
	}
	content := b.String()
	os.WriteFile(filepath.Join(dir, "a.ndjson"), []byte(content), 0o644)
	os.WriteFile(filepath.Join(dir, "b.ndjson.gz"), gz(t, content[:len(content)/3]), 0o644)
	nspans := 1 // b.ndjson.gz
	linefile.Spans(context.Background(), filepath.Join(dir, "a.ndjson"), int64(len(content)), span, func(linefile.Span) { nspans++ })
	if nspans < 50 {
		t.Fatalf("a.ndjson is only %d spans", nspans-1)
	}

	targets := []ObjectTarget{
		{Target: route.Target{ID: "acme-s3", Tenant: "acme", Shards: 2}, Window: 5 * time.Minute, Format: encode.NDJSON},
		{Target: route.Target{ID: "globex-s3", Tenant: "globex", Shards: 1}, Window: time.Minute, Format: encode.CSV},
	}
	glob := filepath.Join(dir, "*")
	p, s := beam.NewPipelineWithRoot()
	passert.Count(s, spans(s, glob, nil, span), "spans", nspans)
	imps, invalid := Read(s, glob, SpanBytes(span))
	wholeImps, wholeInvalid := Read(s, glob, SpanBytes(0))
	passert.Equals(s, beam.ParDo(s, impOrigin, imps), beam.ParDo(s, impOrigin, wholeImps))
	passert.Equals(s, beam.ParDo(s, deadSource, invalid), beam.ParDo(s, deadSource, wholeInvalid))
	passert.Count(s, invalid, "dead-letter records", invalidLines(content)+invalidLines(content[:len(content)/3]))

	records := func(opt ReadOptionFn) beam.PCollection {
		chunks, _ := ReadObjects(s, glob, targets, opt)
		return filter.Distinct(s, beam.WindowInto(s, beamwindow.NewGlobalWindows(), beam.ParDo(s, chunkRecords, chunks)))
	}
	passert.Equals(s, records(SpanBytes(span)), records(SpanBytes(0)))
	ptest.RunAndValidate(t, p)
}

// invalidLines counts the lines of content that are neither empty nor impressions.
func invalidLines(content string) int {
	n := 0
	for _, l := range strings.Split(content, "\n") {
		if _, err := impression.Parse([]byte(strings.TrimSuffix(l, "\r"))); err != nil && l != "" {
			n++
		}
	}
	return n
}
