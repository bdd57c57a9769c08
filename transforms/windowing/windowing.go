// Package windowing applies integrations' event-time windows.
package windowing

import (
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamwindow "github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window/trigger"
)

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
