// Package deliverytest is the conformance suite every HTTP sink runs: the sink's wire
// format through the delivery core, on prism, against a destination simulator on
// loopback that rate-limits, fails, resets and refuses.
package deliverytest

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/outflow/outflow/internal/configkit"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/io/delivery"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
)

func init() {
	register.Function2x0(stamp)
	register.Emitter2[beam.EventTime, impression.Impression]()
}

// stamp gives an impression its event time.
func stamp(imp impression.Impression, emit func(beam.EventTime, impression.Impression)) {
	emit(mtime.FromMilliseconds(imp.Time), imp)
}

// Sink describes the sink under test.
type Sink struct {
	// Sim configures the simulator of this kind of destination (kind, keys, secret).
	Sim destsim.Options
	// Target returns the delivery target of an integration whose destination is at url.
	Target func(id, url string) delivery.Target
	// Write is the sink's Write transform.
	Write func(s beam.Scope, targets []delivery.Target, col beam.PCollection) (dead, marks beam.PCollection)
}

// Tenant is the tenant of the suite's impressions.
const Tenant = "acme"

// Impressions returns n impressions over a minute, every key distinct.
func Impressions(n int) []impression.Impression { return ImpressionsWithin(n, time.Minute) }

// ImpressionsWithin returns n impressions spread over span, every key distinct.
func ImpressionsWithin(n int, span time.Duration) []impression.Impression {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	imps := make([]impression.Impression, n)
	for i := range imps {
		imp := impression.Impression{Tenant: Tenant, EnvironmentID: "env-1", EnvironmentName: "production",
			Key: fmt.Sprintf("user-%d", i), Split: "new_checkout", Treatment: []string{"on", "off"}[i%2],
			Label: "default rule", Time: base + int64(i)*span.Milliseconds()/int64(n), SplitVersionNumber: 7,
			SDK: "go", SDKVersion: "6.7.0", Properties: `{"plan":"pro"}`}
		imp.ID = imp.ComputeID()
		imps[i] = imp
	}
	return imps
}

// Outcome is what a delivery run left: the job's metrics by name, the dead-letter
// records written and the simulator's counts.
type Outcome struct {
	Metrics    map[string]int64
	DeadLetter []deadletterio.Record
	Status     destsim.Status
	Events     map[string]destsim.Event
	Err        error
}

// Deliver runs imps through the sink to simulator sim, as integration "dest", and
// reports what happened.
func Deliver(t *testing.T, sink Sink, sim *destsim.Server, policy delivery.Config, imps []impression.Impression) Outcome {
	t.Helper()
	return DeliverPrivate(t, sink, sim, policy, imps, true)
}

// DeliverPrivate is Deliver with allow_private_destinations set as given.
func DeliverPrivate(t *testing.T, sink Sink, sim *destsim.Server, policy delivery.Config, imps []impression.Impression, allowPrivate bool) Outcome {
	t.Helper()
	target := sink.Target("dest", sim.URL())
	target.Policy = policy.WithDefaults(target.Policy)
	target.AllowPrivate = allowPrivate
	deadDir := t.TempDir()

	p, s := beam.NewPipelineWithRoot()
	col := beam.ParDo(s, stamp, beam.CreateList(s, imps))
	routed := route.Fanout(s, []route.Target{{ID: target.ID, Tenant: Tenant, Shards: 2}}, col)
	// As windowing.Fixed does (which would import every sink through the config).
	windowed := beam.WindowInto(s, window.NewFixedWindows(10*time.Second), routed)
	dead, _ := sink.Write(s, []delivery.Target{target}, encode.Objects(s, encode.Binary, windowed))
	deadletterio.Write(s, deadDir, dead)
	res, err := ptest.RunWithMetrics(p)

	out := Outcome{Metrics: map[string]int64{}, Status: sim.Status(), Events: sim.Events(), Err: err}
	if res != nil {
		for _, c := range res.Metrics().AllMetrics().Counters() {
			if c.Namespace() == target.ID {
				out.Metrics[c.Name()] += c.Result()
			}
		}
	}
	recs, err := deadletterio.ReadLocal(filepath.Join(deadDir, "*", "*.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	out.DeadLetter = recs
	return out
}

// retryAfterGrace lets requests that left before a Retry-After could reach the core
// (at most one per destination once it pushes back) not count as ignoring it.
const retryAfterGrace = 100 * time.Millisecond

func startSim(t *testing.T, o destsim.Options) *destsim.Server {
	t.Helper()
	o.RetryAfterGrace = retryAfterGrace
	sim, err := destsim.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	return sim
}

// exactlyOnce checks that every impression reached the destination once, by id.
func exactlyOnce(t *testing.T, o Outcome, imps []impression.Impression) {
	t.Helper()
	if o.Err != nil {
		t.Fatalf("pipeline failed: %v", o.Err)
	}
	for _, imp := range imps {
		e, ok := o.Events[imp.ID.String()]
		if !ok {
			t.Errorf("impression %s (%s) never accepted", imp.ID, imp.Key)
		} else if e.Count != 1 {
			t.Errorf("impression %s accepted %d times", imp.ID, e.Count)
		}
	}
	if len(o.Events) != len(imps) || o.Status.Duplicates != 0 {
		t.Errorf("destination holds %d events (%d duplicates), want %d once each", len(o.Events), o.Status.Duplicates, len(imps))
	}
	if got := o.Metrics[metricname.Delivered]; got != int64(len(imps)) {
		t.Errorf("delivered metric = %d, want %d", got, len(imps))
	}
	if len(o.DeadLetter) != 0 || o.Metrics[metricname.DeadLettered] != 0 {
		t.Errorf("%d dead-lettered (metric %d), want none; first: %+v", len(o.DeadLetter), o.Metrics[metricname.DeadLettered], first(o.DeadLetter))
	}
}

func first(rs []deadletterio.Record) any {
	if len(rs) == 0 {
		return nil
	}
	return rs[0]
}

// Run is the conformance suite.
func Run(t *testing.T, sink Sink) {
	small := delivery.Config{MaxBatchEvents: 10, MaxRetryDuration: 0}

	t.Run("rate limit and Retry-After", func(t *testing.T) {
		o := sink.Sim
		o.RateLimit, o.Burst = 4, 2
		sim := startSim(t, o)
		imps := Impressions(120)
		got := Deliver(t, sink, sim, delivery.Config{RequestsPerSecond: 40, MaxBatchEvents: 10}, imps)
		exactlyOnce(t, got, imps)
		if got.Status.Throttled == 0 || got.Metrics[metricname.Throttled] == 0 {
			t.Errorf("the destination never throttled (status %+v); the test proves nothing", got.Status)
		}
		if got.Status.IgnoredRetryAfter != 0 {
			t.Errorf("%d requests arrived before an announced Retry-After had passed", got.Status.IgnoredRetryAfter)
		}
	})

	t.Run("Retry-After as an HTTP date", func(t *testing.T) {
		o := sink.Sim
		o.RateLimit, o.Burst, o.RetryAfterDate = 5, 1, true
		sim := startSim(t, o)
		imps := Impressions(40)
		got := Deliver(t, sink, sim, delivery.Config{RequestsPerSecond: 50, MaxBatchEvents: 5}, imps)
		exactlyOnce(t, got, imps)
		if got.Status.IgnoredRetryAfter != 0 {
			t.Errorf("%d requests ignored a Retry-After date", got.Status.IgnoredRetryAfter)
		}
	})

	t.Run("5xx and resets", func(t *testing.T) {
		o := sink.Sim
		o.FailRate, o.ResetRate, o.Seed = 0.1, 0.05, 7
		sim := startSim(t, o)
		imps := Impressions(300)
		got := Deliver(t, sink, sim, small, imps)
		exactlyOnce(t, got, imps)
		if got.Status.Failed+got.Status.Resets == 0 || got.Metrics[metricname.Retries] == 0 {
			t.Errorf("no faults happened (status %+v, retries %d); the test proves nothing", got.Status, got.Metrics[metricname.Retries])
		}
	})

	t.Run("413 splits the batch", func(t *testing.T) {
		o := sink.Sim
		o.MaxBodyBytes = 1500
		sim := startSim(t, o)
		imps := ImpressionsWithin(60, 5*time.Second) // one window: batches of up to 30
		got := Deliver(t, sink, sim, delivery.Config{MaxBatchEvents: 30}, imps)
		exactlyOnce(t, got, imps)
		if got.Status.Rejected == 0 {
			t.Errorf("no request was too large; the test proves nothing")
		}
	})

	t.Run("4xx dead-letters with the reason", func(t *testing.T) {
		o := sink.Sim
		o.Status = 400
		sim := startSim(t, o)
		imps := Impressions(30)
		got := Deliver(t, sink, sim, small, imps)
		if got.Err != nil {
			t.Fatal(got.Err)
		}
		if len(got.DeadLetter) != len(imps) || got.Metrics[metricname.DeadLettered] != int64(len(imps)) {
			t.Fatalf("%d dead-letter records (metric %d), want %d", len(got.DeadLetter), got.Metrics[metricname.DeadLettered], len(imps))
		}
		seen := map[string]bool{}
		for _, r := range got.DeadLetter {
			if r.Integration != "dest" || r.Status != 400 || !strings.Contains(r.Reason, "HTTP 400") || r.Attempts != 1 || r.Impression == nil {
				t.Fatalf("dead-letter record %+v lacks integration, status, reason, attempts or impression", r)
			}
			seen[r.Impression.Key] = true
		}
		if len(seen) != len(imps) {
			t.Errorf("%d distinct impressions dead-lettered, want %d", len(seen), len(imps))
		}
		if got.Metrics[metricname.Retries] != 0 || got.Metrics[metricname.Requests] != int64(got.Status.Requests) {
			t.Errorf("%d retries of batches refused for good (%d requests); want none", got.Metrics[metricname.Retries], got.Metrics[metricname.Requests])
		}
	})

	t.Run("retries run out", func(t *testing.T) {
		o := sink.Sim
		o.Status = 500
		sim := startSim(t, o)
		imps := Impressions(10)
		got := Deliver(t, sink, sim, delivery.Config{MaxBatchEvents: 10, MaxRetryDuration: configDuration(2 * time.Second)}, imps)
		if got.Err != nil {
			t.Fatal(got.Err)
		}
		if len(got.DeadLetter) != len(imps) {
			t.Fatalf("%d dead-letter records, want %d", len(got.DeadLetter), len(imps))
		}
		if r := got.DeadLetter[0]; !strings.Contains(r.Reason, "gave up after") || r.Attempts < 2 || r.Status != 500 {
			t.Errorf("record %+v does not say that retries ran out", r)
		}
	})
}

func configDuration(d time.Duration) configkit.Duration { return configkit.Duration(d) }
