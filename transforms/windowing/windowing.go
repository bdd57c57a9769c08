// Package windowing groups integrations that share a window and applies their
// event-time windows.
package windowing

import (
	"cmp"
	"slices"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamwindow "github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window/trigger"

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

const (
	// lateEvery is how long late impressions for a window gather before they are
	// delivered together.
	lateEvery = 2 * time.Second
	// earlyGrace is how long after its end a window may wait for a held-back
	// watermark before what it holds is delivered anyway (CONTRACT §3: delivered by
	// the window's end + 30 s). A watermark that is not held back comes first.
	earlyGrace = 5 * time.Second
)

// Fixed assigns the elements of col, timestamped with impression time, to fixed
// event-time windows of size d.
//
// With lateness (a stream), windows accept late elements for that long, and fire
// more than once: when the watermark passes their end; early, if the watermark is
// held back, d + earlyGrace of processing time after the pane's first element; and
// for late elements, lateEvery after the first of them. Panes are discarding:
// each holds only what came since the last.
func Fixed(s beam.Scope, d, lateness time.Duration, col beam.PCollection) beam.PCollection {
	s = s.Scope("windowing.Fixed")
	if lateness == 0 {
		return beam.WindowInto(s, beamwindow.NewFixedWindows(d), col)
	}
	tr := trigger.AfterEndOfWindow().
		EarlyFiring(trigger.AfterProcessingTime().PlusDelay(d + earlyGrace)).
		LateFiring(trigger.AfterProcessingTime().PlusDelay(lateEvery))
	return beam.WindowInto(s, beamwindow.NewFixedWindows(d), col,
		beam.Trigger(tr), beam.AllowedLateness(lateness), beam.PanesDiscard())
}
