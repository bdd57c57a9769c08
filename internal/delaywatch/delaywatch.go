// Package delaywatch measures how late impressions reach their destination and
// raises the alert operators wait for: a counter, and a log line at ERROR naming the
// integration, when an impression arrives later than the integration's threshold.
package delaywatch

import (
	"context"
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
}

// New returns the watch of integration; a threshold of 0 never alerts (backfills,
// whose impressions are old by design).
func New(integration string, threshold time.Duration) *Watch {
	return &Watch{integration: integration, threshold: threshold,
		delay:  beam.NewDistribution(integration, metricname.DelayMs),
		alerts: metricname.NewCounter(integration, metricname.DelayAlerts)}
}

// Delivered records that imps arrived at now.
func (w *Watch) Delivered(ctx context.Context, now time.Time, imps []impression.Impression) {
	var late int64
	worst := time.Duration(0)
	for i := range imps {
		d := now.Sub(time.UnixMilli(imps[i].Time))
		w.delay.Update(ctx, d.Milliseconds())
		if w.threshold > 0 && d > w.threshold {
			late++
			worst = max(worst, d)
		}
	}
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
