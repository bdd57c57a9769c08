package impressionio

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph"
	beamwindow "github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/transforms/filter"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
)

func init() {
	register.Function4x1(chunkRecords)
}

// chunkRecords lists a chunk's records as "key|window start|record", each copy of an
// impression once per chunk.
func chunkRecords(et beam.EventTime, key string, c encode.Chunk, emit func(string)) error {
	_, err := c.Each(func(rec []byte) error {
		emit(fmt.Sprintf("%s|%d|%s", key, et.Milliseconds(), rec))
		return nil
	})
	return err
}

// ReadObjects routes, windows and encodes what Read would emit: every valid
// impression of the range, in the chunks of every target it matches (tenant, filters,
// shard by id), in its window of each target's size and the target's format; invalid
// lines are dead-lettered as Read does. Checked against a plain loop over the same
// lines, with the workers draining their chunks every few lines as a large input
// would make them.
func TestReadObjectsMatchesRead(t *testing.T) {
	defer func(h int) { maxHeld = h }(maxHeld)
	maxHeld = 4 << 10

	dir := t.TempDir()
	var lines []string
	for i := range 3000 {
		tenant := []string{"acme", "globex", "initech"}[i%3]
		env := []string{"production", "staging"}[i/3%2]
		lines = append(lines, fmt.Sprintf(`{"tenant":%q,"environmentName":%q,"key":"u%d","split":"s","treatment":"on","time":%d}`,
			tenant, env, i, 1767225600000+int64(i*7919%3000)*1000))
		if i%500 == 0 {
			lines = append(lines, "not json", lines[len(lines)-1]) // an invalid line, a copy
		}
	}
	half := len(lines) / 2
	os.WriteFile(filepath.Join(dir, "a.ndjson"), []byte(strings.Join(lines[:half], "\n")+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "b.ndjson.gz"), gz(t, strings.Join(lines[half:], "\n")), 0o644)

	targets := []ObjectTarget{
		{Target: route.Target{ID: "acme-s3", Tenant: "acme", Shards: 2}, Window: 5 * time.Minute, Format: encode.NDJSON},
		{Target: route.Target{ID: "acme-prod", Tenant: "acme", Environments: []string{"production"}, Shards: 1},
			Window: 7 * time.Minute, Format: encode.CSV},
		{Target: route.Target{ID: "globex-s3", Tenant: "globex", Shards: 3}, Window: time.Minute, Format: encode.NDJSON},
	}
	since, until := time.UnixMilli(1767225600000+100_000), time.UnixMilli(1767225600000+2_900_000)

	// What Read, route.Fanout and encode.Objects make of the lines.
	table := route.NewTable([]route.Target{targets[0].Target, targets[1].Target, targets[2].Target})
	var want []string
	seen := map[string]bool{}
	for _, l := range lines {
		imp, err := impression.Parse([]byte(l))
		if err != nil || imp.Time < since.UnixMilli() || imp.Time >= until.UnixMilli() {
			continue
		}
		table.Each(&imp, func(i int, key string) {
			w := targets[i].Window.Milliseconds()
			rec := fmt.Sprintf("%s|%d|%s", key, imp.Time-imp.Time%w, encode.Append(targets[i].Format, nil, &imp))
			if !seen[rec] {
				seen[rec] = true
				want = append(want, rec)
			}
		})
	}
	if len(want) < 1000 {
		t.Fatalf("only %d records expected: the test data routes too little", len(want))
	}

	p, s := beam.NewPipelineWithRoot()
	chunks, invalid := ReadObjects(s, filepath.Join(dir, "*"), targets, Since(since), Until(until))
	records := beam.WindowInto(s, beamwindow.NewGlobalWindows(), beam.ParDo(s, chunkRecords, chunks))
	passert.Equals(s, filter.Distinct(s, records), beam.CreateList(s, want))
	passert.Count(s, invalid, "dead-letter records", 6)
	ptest.RunAndValidate(t, p)
}

// Both readers reshuffle the matched files before cutting them into spans, and the
// spans before reading them, so that a cluster spreads both over its workers.
func TestReadGraphReshuffles(t *testing.T) {
	p, s := beam.NewPipelineWithRoot()
	Read(s, "/nowhere/*.ndjson")
	ReadObjects(s, "/nowhere/*.ndjson", nil)
	edges, _, err := p.Build()
	if err != nil {
		t.Fatal(err)
	}
	var reshuffles, readers, splitters int
	for _, e := range edges {
		switch {
		case e.Op == graph.Reshuffle:
			reshuffles++
		case e.Op == graph.ParDo && (strings.Contains(e.Name(), "readFn") || strings.Contains(e.Name(), "readObjectsFn")):
			readers++
			if !fromReshuffle(edges, e.Input[0].From) {
				t.Errorf("%s reads spans that were not reshuffled", e.Name())
			}
		case e.Op == graph.ParDo && strings.Contains(e.Name(), "splitFn"):
			splitters++
			if !fromReshuffle(edges, e.Input[0].From) {
				t.Errorf("%s cuts files that were not reshuffled", e.Name())
			}
		}
	}
	if reshuffles != 4 || readers != 2 || splitters != 2 {
		t.Errorf("%d reshuffles, %d readers, %d splitters; want 4, 2 and 2", reshuffles, readers, splitters)
	}
}

// fromReshuffle reports whether node n is a Reshuffle's output.
func fromReshuffle(edges []*graph.MultiEdge, n *graph.Node) bool {
	for _, e := range edges {
		if e.Op == graph.Reshuffle && e.Output[0].To == n {
			return true
		}
	}
	return false
}
