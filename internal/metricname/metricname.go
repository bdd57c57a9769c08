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
	Lines        = "outflow.lines"         // non-blank input lines
	InvalidLines = "outflow.invalid_lines" // lines dead-lettered as invalid
	Filtered     = "outflow.filtered"      // valid lines outside --since/--until
	Valid        = "outflow.valid"         // valid lines in range (copies of one impression included)
	FileErrors   = "outflow.file_errors"   // input files that could not be read to the end
	Replayed     = "outflow.replayed"      // dead-letter records sent to delivery again
	Kept         = "outflow.kept"          // dead-letter records replay cannot deliver, written back
	VeryLate     = "outflow.very_late"     // stream: impressions older than the allowed lateness, windowed later
)

// Per-integration counters.
const (
	Routed       = "outflow.routed"      // impressions routed to the integration, copies included
	Impressions  = "outflow.impressions" // unique impressions routed to the integration
	Duplicates   = "outflow.duplicates"  // copies of an impression dropped
	Delivered    = "outflow.delivered"   // impressions written or accepted by the destination
	DeadLettered = "outflow.dead_lettered"
	Overflowed   = "outflow.overflowed" // of those, dead-lettered past max_pending_impressions (stream)
	Objects      = "outflow.objects"    // data objects written
	Bytes        = "outflow.bytes"      // bytes written or sent
	Requests     = "outflow.requests"
	Throttled    = "outflow.throttled"
	Retries      = "outflow.retries"
	DelayAlerts  = "outflow.delay_alerts" // impressions delivered later than alert_delay (stream)
	Pending      = "outflow.pending"      // impressions buffered by the delivery core: added, then taken off
)

// Per-integration distributions and gauges.
const (
	DelayMs   = "outflow.delay_ms"   // delivery time minus impression time
	RateLimit = "outflow.rate_limit" // current request rate limit, in thousandths of a request per second
)

// Counter is a Beam counter that also counts in this process, so a running job's
// launcher can report before the runner hands back the job's metrics (the stream's
// --report). Workers in other processes count only into Beam.
type Counter struct {
	beam.Counter
	live *atomic.Int64
}

var live sync.Map // [2]string{namespace, name} -> *atomic.Int64

// NewCounter returns the counter name in namespace ns.
func NewCounter(ns, name string) Counter {
	c, _ := live.LoadOrStore([2]string{ns, name}, new(atomic.Int64))
	return Counter{Counter: beam.NewCounter(ns, name), live: c.(*atomic.Int64)}
}

// Inc adds n to the counter.
func (c Counter) Inc(ctx context.Context, n int64) {
	c.Counter.Inc(ctx, n)
	c.live.Add(n)
}

// Live returns what this process's counters counted so far, by namespace and name.
func Live() map[[2]string]int64 {
	out := map[[2]string]int64{}
	live.Range(func(k, v any) bool {
		if n := v.(*atomic.Int64).Load(); n != 0 {
			out[k.([2]string)] = n
		}
		return true
	})
	return out
}
