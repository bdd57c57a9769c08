// Package metricname names the Beam metrics operators watch; the --report code reads
// the same names. Per-integration metrics use the integration id as their namespace;
// job-wide ones use Job, which no id can take (ids are [a-z0-9-]+).
package metricname

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
)

// Job is the namespace of job-wide metrics.
const Job = "_job"

// Job-wide counters.
const (
	Lines         = "outflow.lines"          // non-blank input lines
	InvalidLines  = "outflow.invalid_lines"  // lines dead-lettered as invalid
	Filtered      = "outflow.filtered"       // valid lines outside --since/--until
	Valid         = "outflow.valid"          // valid lines in range (copies of one impression included)
	FileErrors    = "outflow.file_errors"    // input files that could not be read to the end
	Replayed      = "outflow.replayed"       // dead-letter records sent to delivery again
	Kept          = "outflow.kept"           // dead-letter records replay cannot deliver, written back
	VeryLate      = "outflow.very_late"      // stream: impressions far older than their record, windowed later
	FarAhead      = "outflow.far_ahead"      // stream: impressions far newer than their record, windowed earlier
	LedgerBytes   = "outflow.ledger_bytes"   // stream: bytes of offset-ledger state written (kafkaio.Commit)
	LedgerFirings = "outflow.ledger_firings" // stream: times a partition's ledger was written
)

// Per-integration counters.
const (
	Routed       = "outflow.routed"      // impressions routed to the integration, copies included
	Impressions  = "outflow.impressions" // unique impressions routed to the integration
	Duplicates   = "outflow.duplicates"  // copies of an impression dropped
	Delivered    = "outflow.delivered"   // impressions written or accepted by the destination
	DeadLettered = "outflow.dead_lettered"
	Overflowed   = "outflow.overflowed"    // of those, dead-lettered past max_pending_impressions (stream)
	Objects      = "outflow.objects"       // data objects written
	StoredBefore = "outflow.stored_before" // of the delivered, impressions objects of earlier runs held already
	Bytes        = "outflow.bytes"         // bytes written or sent
	Requests     = "outflow.requests"
	Throttled    = "outflow.throttled"
	Retries      = "outflow.retries"
	DelayAlerts  = "outflow.delay_alerts" // impressions delivered later than alert_delay (stream)
	Pending      = "outflow.pending"      // impressions buffered by the delivery core: added, then taken off
)

// Per-integration counters with a label: the name, By, then the label's value.
const (
	By             = "|"
	RequestsByCode = "outflow.requests_by_code" // + By + Code(status)
	DeadLetteredBy = "outflow.dead_lettered_by" // + By + a reason: DeadLetterReasons
	DelayBuckets   = "outflow.delay_le_s"       // + By + a bound of DelayBounds, or "+Inf"; not cumulative
	DelaySumMs     = "outflow.delay_sum_ms"     // the delays of the delivered, summed
)

// DeadLetterReasons are the reasons impressions are dead-lettered for, as the
// DeadLetteredBy label: a small fixed set, for bounded cardinality.
var DeadLetterReasons = []string{"rejected", "gone", "retries_exhausted", "too_large", "overflow", "late", "ahead"}

// DelayBounds are the upper bounds, in seconds, of the delivery delay histogram.
var DelayBounds = []float64{1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600}

// Code is the label of an HTTP answer's status: 2xx, 429, 4xx, 5xx, or error when
// there was none (status 0).
func Code(status int) string {
	switch {
	case status == 0:
		return "error"
	case status == 429:
		return "429"
	case status >= 200 && status < 300:
		return "2xx"
	case status >= 400 && status < 500:
		return "4xx"
	case status >= 500:
		return "5xx"
	}
	return "other"
}

// Per-integration distributions and gauges.
const (
	DelayMs   = "outflow.delay_ms"   // delivery time minus impression time
	RateLimit = "outflow.rate_limit" // current request rate limit, in thousandths of a request per second
	// OldestPending is the impression time (Unix ms) of the oldest impression the HTTP
	// delivery core holds for the integration, 0 when none.
	OldestPending = "outflow.oldest_pending_ms"
)

// liveValues are this process's own values of metrics, by namespace and name.
type liveValues struct{ m sync.Map } // [2]string{namespace, name} -> *atomic.Int64

func (l *liveValues) get(ns, name string) *atomic.Int64 {
	v, _ := l.m.LoadOrStore([2]string{ns, name}, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// all returns the values, without those at zero unless withZero.
func (l *liveValues) all(withZero bool) map[[2]string]int64 {
	out := map[[2]string]int64{}
	l.m.Range(func(k, v any) bool {
		if n := v.(*atomic.Int64).Load(); n != 0 || withZero {
			out[k.([2]string)] = n
		}
		return true
	})
	return out
}

var liveCounters, liveGauges liveValues

// Counter is a Beam counter that also counts in this process, so a running job's
// launcher can report before the runner hands back the job's metrics (the stream's
// --report). Workers in other processes count only into Beam.
type Counter struct {
	beam.Counter
	live *atomic.Int64
}

// NewCounter returns the counter name in namespace ns.
func NewCounter(ns, name string) Counter {
	return Counter{Counter: beam.NewCounter(ns, name), live: liveCounters.get(ns, name)}
}

// Inc adds n to the counter.
func (c Counter) Inc(ctx context.Context, n int64) {
	c.Counter.Inc(ctx, n)
	c.live.Add(n)
}

// Gauge is a Beam gauge whose last value this process also keeps (see Counter).
type Gauge struct {
	beam.Gauge
	live *atomic.Int64
}

// NewGauge returns the gauge name in namespace ns.
func NewGauge(ns, name string) Gauge {
	return Gauge{Gauge: beam.NewGauge(ns, name), live: liveGauges.get(ns, name)}
}

// Set sets the gauge to v.
func (g Gauge) Set(ctx context.Context, v int64) {
	g.Gauge.Set(ctx, v)
	g.live.Store(v)
}

// LiveGauges returns the last values this process's gauges were set to.
func LiveGauges() map[[2]string]int64 { return liveGauges.all(true) }

// Live returns what this process's counters counted so far, by namespace and name.
func Live() map[[2]string]int64 { return liveCounters.all(false) }
