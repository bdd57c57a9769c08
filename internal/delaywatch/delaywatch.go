// Package delaywatch measures how late impressions reach their destination and
// raises the alert operators wait for: a counter, and a log line at ERROR naming the
// integration, when an impression arrives later than the integration's threshold.
package delaywatch

import (
	"context"
	"sort"
	"strconv"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/internal/oplog"
)

// Watch observes one integration's delivery delays.
type Watch struct {
	integration string
	threshold   time.Duration
	delay       beam.Distribution
	alerts      metricname.Counter
	buckets     []metricname.Counter // the histogram's: one per metricname.DelayBounds, then +Inf
	sum         metricname.Counter
}

// New returns the watch of integration; a threshold of 0 never alerts (backfills,
// whose impressions are old by design).
func New(integration string, threshold time.Duration) *Watch {
	w := &Watch{integration: integration, threshold: threshold,
		delay:  beam.NewDistribution(integration, metricname.DelayMs),
		alerts: metricname.NewCounter(integration, metricname.DelayAlerts),
		sum:    metricname.NewCounter(integration, metricname.DelaySumMs)}
	for _, le := range BucketLabels() {
		w.buckets = append(w.buckets, metricname.NewCounter(integration, metricname.DelayBuckets+metricname.By+le))
	}
	return w
}

// BucketLabels are the labels of the delay histogram's buckets, in order: its bounds
// in seconds, then +Inf.
func BucketLabels() []string {
	var out []string
	for _, b := range metricname.DelayBounds {
		out = append(out, strconv.FormatFloat(b, 'g', -1, 64))
	}
	return append(out, "+Inf")
}

// Delivered records that imps arrived at now.
func (w *Watch) Delivered(ctx context.Context, now time.Time, imps []impression.Impression) {
	var late, sum int64
	worst := time.Duration(0)
	counts := make([]int64, len(w.buckets))
	for i := range imps {
		d := now.Sub(time.UnixMilli(imps[i].Time))
		w.delay.Update(ctx, d.Milliseconds())
		sum += d.Milliseconds()
		counts[sort.SearchFloat64s(metricname.DelayBounds, d.Seconds())]++
		if w.threshold > 0 && d > w.threshold {
			late++
			worst = max(worst, d)
		}
	}
	for i, n := range counts {
		if n > 0 {
			w.buckets[i].Inc(ctx, n)
		}
	}
	w.sum.Inc(ctx, sum)
	if late == 0 {
		return
	}
	w.alerts.Inc(ctx, late)
	// One ERROR line a minute per integration; the counter counts every late impression.
	if !oplog.Due("delay/"+w.integration, now) {
		return
	}
	oplog.L().ErrorContext(ctx, "delivery delay above the alert threshold", "integration", w.integration,
		"late_impressions", late, "worst_delay", worst.Round(time.Millisecond).String(), "alert_delay", w.threshold.String())
}
