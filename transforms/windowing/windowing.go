// Package windowing groups integrations that share a window and applies their
// event-time windows.
package windowing

import (
	"cmp"
	"slices"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamwindow "github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/transforms/encode"
)

// Group is integrations of one type, window size and (for object stores) format:
// one branch of the pipeline graph.
type Group struct {
	Type         config.Type
	Window       time.Duration
	Format       encode.Format // object stores only
	Integrations []config.Integration
}

// Groups splits integrations into groups, in a stable order.
func Groups(ints []config.Integration) []Group {
	var gs []Group
	for _, in := range ints {
		g := Group{Type: in.Type, Window: in.Window.D(), Format: format(in)}
		i := slices.IndexFunc(gs, func(h Group) bool {
			return h.Type == g.Type && h.Window == g.Window && h.Format == g.Format
		})
		if i < 0 {
			gs, i = append(gs, g), len(gs)
		}
		gs[i].Integrations = append(gs[i].Integrations, in)
	}
	slices.SortStableFunc(gs, func(a, b Group) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Window, b.Window), cmp.Compare(a.Format, b.Format))
	})
	return gs
}

func format(in config.Integration) encode.Format {
	switch {
	case in.S3 != nil:
		return in.S3.Format
	case in.GCS != nil:
		return in.GCS.Format
	}
	return ""
}

// AllowedLateness is how long after its window closed a late impression is still
// taken, and copies of an impression are still recognised (CONTRACT §3, stream).
const AllowedLateness = time.Hour

// Fixed assigns the elements of col, timestamped with impression time, to fixed
// event-time windows of size d that accept late elements for lateness.
func Fixed(s beam.Scope, d, lateness time.Duration, col beam.PCollection) beam.PCollection {
	s = s.Scope("windowing.Fixed")
	return beam.WindowInto(s, beamwindow.NewFixedWindows(d), col, beam.AllowedLateness(lateness))
}
