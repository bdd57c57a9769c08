package windowing

import (
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamwindow "github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/teststream"
)

func TestMain(m *testing.M) { ptest.Main(m) }

func init() {
	register.Function1x2(withKey)
	register.Function2x1(paneSize)
	register.Iter1[string]()
}

func withKey(s string) (int, string) { return 1, s }

func paneSize(_ int, values func(*string) bool) int {
	n := 0
	for v := ""; values(&v); {
		n++
	}
	return n
}

// A stream's window whose watermark is held back still delivers: what it holds fires
// once its size plus earlyGrace of processing time has passed; what comes later
// fires when the watermark passes the window's end, and a late impression after that.
func TestFixedFiresEarlyOnHeldBackWatermark(t *testing.T) {
	const window = time.Minute
	ms := func(d time.Duration) int64 { return d.Milliseconds() }
	con := teststream.NewConfig()
	con.AdvanceWatermark(0)
	con.AddElements(ms(time.Second), "a", "b")
	con.AdvanceProcessingTime(ms(window + earlyGrace + time.Second)) // the watermark stays at 0
	con.AddElements(ms(2*time.Second), "c")
	con.AdvanceWatermark(ms(window + time.Second))
	con.AddElements(ms(3*time.Second), "late")
	con.AdvanceProcessingTime(ms(lateEvery + time.Second))
	con.AdvanceWatermarkToInfinity()

	p, s := beam.NewPipelineWithRoot()
	keyed := beam.ParDo(s, withKey, teststream.Create(s, con))
	panes := beam.ParDo(s, paneSize, beam.GroupByKey(s, Fixed(s, window, time.Hour, keyed)))
	passert.Equals(s, beam.WindowInto(s, beamwindow.NewGlobalWindows(), panes), 2, 1, 1) // early (a, b), on time (c), late
	ptest.RunAndValidate(t, p)
}
