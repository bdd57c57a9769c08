package main

import (
	"strings"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph"

	"github.com/outflow/outflow/pipelines/internal/pipetest"
)

// The backfill's graph uses only state and timers every runner serves.
func TestPortableState(t *testing.T) {
	pipetest.Portable(t, pipeline(pipetest.AllTypes(t), "/tmp/none/*.ndjson", nil, "run"))
}

// The object stores' and the dead-letter store's writers end in a shuffle
// (runners.End): prism spins through every bundle of a stage without an output.
func TestWritersEndInAShuffle(t *testing.T) {
	edges, _, err := pipeline(pipetest.AllTypes(t), "/tmp/none/*.ndjson", nil, "run").Build()
	if err != nil {
		t.Fatal(err)
	}
	writers := map[string]int{}
	for _, e := range edges {
		name := e.Name()
		if e.Op != graph.ParDo || !strings.HasSuffix(name, "objectio.writeFn") && !strings.HasSuffix(name, "deadletterio.writeFn") {
			continue
		}
		writers[name[strings.LastIndex(name, "/")+1:]]++
		for _, out := range e.Output {
			shuffled := false
			for _, c := range edges {
				shuffled = shuffled || c.Op == graph.CoGBK && c.Input[0].From == out.To
			}
			if !shuffled {
				t.Errorf("%s: an output is not shuffled", name)
			}
		}
	}
	if writers["objectio.writeFn"] == 0 || writers["deadletterio.writeFn"] != 1 {
		t.Errorf("writers found: %v; want the object stores' and one dead-letter writer", writers)
	}
}
