// Package report builds the --report JSON (CONTRACT §3) from a job's Beam metrics.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/metrics"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/metricname"
)

// Report is the --report file. The first fields are pinned by CONTRACT §3; the rest
// help operators.
type Report struct {
	InvalidLines int64         `json:"invalid_lines"`
	Integrations []Integration `json:"integrations"`

	Lines      int64 `json:"lines"`              // non-blank input lines
	Filtered   int64 `json:"filtered"`           // valid lines outside --since/--until
	FileErrors int64 `json:"file_errors"`        // input files that could not be read to the end
	Replayed   int64 `json:"replayed,omitempty"` // replay: dead-letter records delivered again
	Kept       int64 `json:"kept,omitempty"`     // replay: records it could not deliver, written back
	// A stream's: impressions far from their Kafka record's time (impressionio.FromRecords),
	// and the offset ledger's state writes (kafkaio.Commit).
	VeryLate      int64  `json:"very_late,omitempty"`
	FarAhead      int64  `json:"far_ahead,omitempty"`
	LedgerBytes   int64  `json:"ledger_bytes,omitempty"`
	LedgerFirings int64  `json:"ledger_firings,omitempty"`
	DeadLetter    string `json:"dead_letter"` // where invalid and undeliverable records went

	// Jobs are a backfill's independent Beam jobs, in the order they were planned.
	Jobs []Job `json:"jobs,omitempty"`

	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Seconds  float64   `json:"seconds"`
	ExitCode int       `json:"exit_code"`
	Error    string    `json:"error,omitempty"`
	// Running marks the report of a stream still running, rewritten every few seconds.
	Running bool `json:"running,omitempty"`
	// Incomplete says which counts are missing and why: a job cancelled on remote
	// workers returns no metrics, so only what the dead-letter store holds is known.
	// A count it names is unknown, not zero.
	Incomplete string `json:"incomplete,omitempty"`
}

// Integration is one integration's line of the report.
type Integration struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	Tenant string `json:"tenant"`
	// Impressions counts unique impressions routed to the integration after its filters.
	Impressions  int64 `json:"impressions"`
	Delivered    int64 `json:"delivered"`
	DeadLettered int64 `json:"dead_lettered"`
	Requests     int64 `json:"requests"`
	Throttled    int64 `json:"throttled"`
	Retries      int64 `json:"retries"`

	Duplicates int64 `json:"duplicates"`        // copies of an impression dropped
	Objects    int64 `json:"objects,omitempty"` // data objects written
	// StoredBefore counts, of the delivered, impressions that data objects already in
	// the prefix held (an earlier run's), so they were not stored again.
	StoredBefore int64 `json:"stored_before,omitempty"`
	Bytes        int64 `json:"bytes"`
	// Location is where an object store integration writes: s3://bucket/prefix, gs://….
	Location string `json:"location,omitempty"`
	// RateLimit is the HTTP request rate the destination was last allowed, per second.
	RateLimit float64 `json:"rate_limit,omitempty"`
	// Delay is delivery time minus impression time, over delivered impressions.
	Delay *Delay `json:"delay_ms,omitempty"`
	// DelayAlerts counts impressions delivered later than alert_delay (stream only).
	DelayAlerts int64 `json:"delay_alerts,omitempty"`
	// Pending counts impressions the HTTP delivery core holds, waiting for their
	// destination (a running stream's report; 0 once a job has finished).
	Pending int64 `json:"pending,omitempty"`
	// Overflowed counts, of the dead-lettered, impressions a stream dead-lettered
	// because the integration already held max_pending_impressions (replay them).
	Overflowed int64 `json:"overflowed,omitempty"`

	// DeadLetteredBy splits DeadLettered by reason (metricname.DeadLetterReasons).
	DeadLetteredBy map[string]int64 `json:"dead_lettered_by,omitempty"`
	// RequestsByCode splits Requests by answer: 2xx, 429, 4xx, 5xx, error.
	RequestsByCode map[string]int64 `json:"requests_by_code,omitempty"`
	// DelayHistogram counts delivered impressions by delay, per bucket (not
	// cumulative), keyed by the bucket's upper bound in seconds or "+Inf"; DelaySumMs
	// sums their delays.
	DelayHistogram map[string]int64 `json:"delay_histogram,omitempty"`
	DelaySumMs     int64            `json:"delay_sum_ms,omitempty"`
	// OldestPending is the time of the oldest impression the HTTP delivery core holds
	// for the integration (a running stream's report; absent when it holds none).
	OldestPending time.Time `json:"oldest_pending,omitzero"`
}

// Job is one of a backfill's Beam jobs: some integrations over a time slice.
type Job struct {
	ID           string    `json:"id"`
	Integrations []string  `json:"integrations"`
	From         time.Time `json:"from,omitzero"` // unbounded when absent
	Until        time.Time `json:"until,omitzero"`
	Estimate     int64     `json:"estimated_impressions"`
	// Status is done, dead_lettered, failed, incomplete (it ended holding impressions
	// it had neither delivered nor dead-lettered: a rerun redoes it), skipped (done by
	// an earlier run) or not_run.
	Status string `json:"status"`
	// PreviousStatus is how a skipped job ended in the earlier run (done or
	// dead_lettered), whose counts this report includes.
	PreviousStatus string    `json:"previous_status,omitempty"`
	Started        time.Time `json:"started,omitzero"`
	Finished       time.Time `json:"finished,omitzero"`
	Seconds        float64   `json:"seconds,omitempty"`
	Error          string    `json:"error,omitempty"`
}

// Delay summarizes the delivery delay distribution, in milliseconds.
type Delay struct {
	Count int64 `json:"count"`
	Min   int64 `json:"min"`
	Mean  int64 `json:"mean"`
	Max   int64 `json:"max"`
	sum   int64
}

func (d *Delay) add(v metrics.DistributionValue) {
	if v.Count == 0 {
		return
	}
	if d.Count == 0 || v.Min < d.Min {
		d.Min = v.Min
	}
	d.Max = max(d.Max, v.Max)
	d.Count += v.Count
	d.sum += v.Sum
	d.Mean = d.sum / d.Count
}

// New returns a report of cfg's integrations with every count at zero.
func New(cfg *config.Config, started time.Time) *Report {
	r := &Report{DeadLetter: cfg.DeadLetter, Started: started, Integrations: []Integration{}}
	for _, in := range cfg.Integrations {
		ri := Integration{ID: in.ID, Type: string(in.Type), Tenant: in.Tenant}
		switch {
		case in.S3 != nil:
			ri.Location = "s3://" + in.S3.Bucket + "/" + in.S3.Prefix
		case in.GCS != nil:
			ri.Location = "gs://" + in.GCS.Bucket + "/" + in.GCS.Prefix
		}
		r.Integrations = append(r.Integrations, ri)
	}
	return r
}

// metricsOf returns res's metrics. A job whose metrics could not be fetched (one
// cancelled, say) comes back from the universal runner as a result whose Metrics
// dereferences nil (Beam v2.77.0, runnerlib/execute.go): that means none.
func metricsOf(res beam.PipelineResult) (m metrics.Results, ok bool) {
	if res == nil {
		return m, false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return res.Metrics(), true
}

// Counts are a job's counter totals: namespace -> name -> value. A backfill records
// them with each finished job, so that a rerun which skips the job still reports what
// it did.
type Counts map[string]map[string]int64

// HeldAtEnd is what an HTTP integration's delivery core still held when its batch job
// ended: impressions that reached it and were neither delivered nor dead-lettered.
// It is worked out from the counters that only grow, not read from the pending
// counter, which goes up and down: prism sometimes loses a bundle's decrement of it,
// and a job that delivered everything then seems to hold some.
func HeldAtEnd(impressions, delivered, deadLettered int64) int64 {
	return max(0, impressions-delivered-deadLettered)
}

// Pending is how many impressions the HTTP delivery core still held when the counts
// were taken, over every integration.
func (c Counts) Pending() int64 {
	var n int64
	for _, names := range c {
		n += names[metricname.Pending]
	}
	return n
}

// Add adds d to c.
func (c Counts) Add(d Counts) {
	for ns, names := range d {
		if c[ns] == nil {
			c[ns] = map[string]int64{}
		}
		for name, v := range names {
			c[ns][name] += v
		}
	}
}

// CountsOf returns the committed counter totals of a finished job; ok is false when
// the runner returned no counters: Beam's Flink runner answers a cancelled job with
// an empty set, which is no count of zero.
func CountsOf(res beam.PipelineResult) (c Counts, ok bool) {
	results, ok := metricsOf(res)
	if !ok {
		return nil, false
	}
	c = countsIn(results)
	return c, len(c) > 0
}

func countsIn(results metrics.Results) Counts {
	c := Counts{}
	for _, m := range results.AllMetrics().Counters() {
		if c[m.Namespace()] == nil {
			c[m.Namespace()] = map[string]int64{}
		}
		c[m.Namespace()][m.Name()] += m.Result() // summed over steps
	}
	return c
}

// Get returns the total of name in namespace ns.
func (c Counts) Get(ns, name string) int64 { return c[ns][name] }

// AddCounts adds counter totals to the report's counts.
func (r *Report) AddCounts(c Counts) {
	sum := map[[2]string]int64{}
	for ns, names := range c {
		for name, v := range names {
			sum[[2]string{ns, name}] += v
		}
	}
	r.addCounts(sum)
}

// AddMetrics adds a finished job's committed metrics to the counts; a backfill made
// of several jobs calls it once for each. It reports whether the runner returned
// counters (CountsOf).
func (r *Report) AddMetrics(res beam.PipelineResult) (counted bool) {
	results, ok := metricsOf(res)
	if !ok {
		return false
	}
	c := countsIn(results)
	r.AddCounts(c)
	r.addOthers(results)
	return len(c) > 0
}

// AddDistributionsAndGauges adds a finished job's delay distributions and rate-limit
// gauges, for a caller that adds its counts itself (AddCounts).
func (r *Report) AddDistributionsAndGauges(res beam.PipelineResult) {
	if results, ok := metricsOf(res); ok {
		r.addOthers(results)
	}
}

func (r *Report) addOthers(results metrics.Results) {
	all := results.AllMetrics()
	byID := map[string]*Integration{}
	for i := range r.Integrations {
		byID[r.Integrations[i].ID] = &r.Integrations[i]
	}
	for _, d := range all.Distributions() {
		if in := byID[d.Namespace()]; in != nil && d.Name() == metricname.DelayMs {
			if in.Delay == nil {
				in.Delay = &Delay{}
			}
			in.Delay.add(d.Result())
		}
	}
	for _, g := range all.Gauges() {
		if in := byID[g.Namespace()]; in != nil && g.Name() == metricname.RateLimit {
			in.RateLimit = float64(g.Result().Value) / 1000
		}
	}
}

// addCounts adds counter totals, by namespace and name, to the counts.
func (r *Report) addCounts(sum map[[2]string]int64) {
	job := func(name string) int64 { return sum[[2]string{metricname.Job, name}] }
	r.Lines += job(metricname.Lines)
	r.InvalidLines += job(metricname.InvalidLines)
	r.Filtered += job(metricname.Filtered)
	r.FileErrors += job(metricname.FileErrors)
	r.Replayed += job(metricname.Replayed)
	r.Kept += job(metricname.Kept)
	r.VeryLate += job(metricname.VeryLate)
	r.FarAhead += job(metricname.FarAhead)
	r.LedgerBytes += job(metricname.LedgerBytes)
	r.LedgerFirings += job(metricname.LedgerFirings)
	byID := map[string]*Integration{}
	for i := range r.Integrations {
		in := &r.Integrations[i]
		byID[in.ID] = in
		get := func(name string) int64 { return sum[[2]string{in.ID, name}] }
		in.Impressions += get(metricname.Impressions)
		in.Delivered += get(metricname.Delivered)
		in.DeadLettered += get(metricname.DeadLettered)
		in.Requests += get(metricname.Requests)
		in.Throttled += get(metricname.Throttled)
		in.Retries += get(metricname.Retries)
		in.Duplicates += get(metricname.Duplicates)
		in.Objects += get(metricname.Objects)
		in.StoredBefore += get(metricname.StoredBefore)
		in.Bytes += get(metricname.Bytes)
		in.DelayAlerts += get(metricname.DelayAlerts)
		in.Pending += get(metricname.Pending)
		in.Overflowed += get(metricname.Overflowed)
		in.DelaySumMs += get(metricname.DelaySumMs)
	}
	for key, v := range sum {
		in := byID[key[0]]
		name, label, ok := strings.Cut(key[1], metricname.By)
		if in == nil || !ok || v == 0 {
			continue
		}
		m := map[string]*map[string]int64{metricname.DeadLetteredBy: &in.DeadLetteredBy,
			metricname.RequestsByCode: &in.RequestsByCode, metricname.DelayBuckets: &in.DelayHistogram}[name]
		if m == nil {
			continue
		}
		if *m == nil {
			*m = map[string]int64{}
		}
		(*m)[label] += v
	}
}

// SetCounts replaces the counts with what this process counted (metricname.Live):
// a running stream's, or one whose runner returned no metrics.
func (r *Report) SetCounts(live map[[2]string]int64) {
	r.Lines, r.InvalidLines, r.Filtered, r.FileErrors, r.Replayed, r.Kept = 0, 0, 0, 0, 0, 0
	r.VeryLate, r.FarAhead, r.LedgerBytes, r.LedgerFirings = 0, 0, 0, 0
	for i := range r.Integrations {
		in := &r.Integrations[i]
		in.Impressions, in.Delivered, in.DeadLettered, in.Requests, in.Throttled, in.Retries = 0, 0, 0, 0, 0, 0
		in.Duplicates, in.Objects, in.StoredBefore, in.Bytes, in.DelayAlerts, in.Pending, in.Overflowed = 0, 0, 0, 0, 0, 0, 0
		in.DeadLetteredBy, in.RequestsByCode, in.DelayHistogram, in.DelaySumMs = nil, nil, nil, 0
	}
	r.addCounts(live)
}

// SetGauges sets the gauges from what this process's workers set last
// (metricname.LiveGauges): the rate limit and the oldest impression held.
func (r *Report) SetGauges(live map[[2]string]int64) {
	for i := range r.Integrations {
		in := &r.Integrations[i]
		if v, ok := live[[2]string{in.ID, metricname.RateLimit}]; ok {
			in.RateLimit = float64(v) / 1000
		}
		in.OldestPending = time.Time{}
		if v := live[[2]string{in.ID, metricname.OldestPending}]; v > 0 && in.Pending > 0 {
			in.OldestPending = time.UnixMilli(v).UTC()
		}
	}
}

// Clone returns a copy of r that shares nothing with it.
func (r *Report) Clone() *Report {
	c := *r
	c.Integrations = slices.Clone(r.Integrations)
	for i := range c.Integrations {
		in := &c.Integrations[i]
		in.DeadLetteredBy, in.RequestsByCode, in.DelayHistogram = maps.Clone(in.DeadLetteredBy), maps.Clone(in.RequestsByCode), maps.Clone(in.DelayHistogram)
		if in.Delay != nil {
			d := *in.Delay
			in.Delay = &d
		}
	}
	c.Jobs = slices.Clone(r.Jobs)
	return &c
}

// Snapshot returns a copy of r for a job still running: the counts this process
// counted so far, and its gauges.
func (r *Report) Snapshot(live map[[2]string]int64) *Report {
	c := *r
	c.Integrations = slices.Clone(r.Integrations)
	c.SetCounts(live)
	c.SetGauges(metricname.LiveGauges())
	c.Running = true
	c.Seconds = time.Since(r.Started).Seconds()
	return &c
}

// DeadLettered is the number of impressions dead-lettered across integrations.
func (r *Report) DeadLettered() int64 {
	var n int64
	for _, in := range r.Integrations {
		n += in.DeadLettered
	}
	return n
}

// Finish records how the job ended.
func (r *Report) Finish(exitCode int, err error) {
	r.Finished = time.Now()
	r.Seconds = r.Finished.Sub(r.Started).Seconds()
	r.ExitCode = exitCode
	if err != nil {
		r.Error = err.Error()
	}
}

// Write writes the report as indented JSON to path, atomically.
func (r *Report) Write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".report-*")
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("report: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	return os.Rename(tmp.Name(), path)
}

// Print writes a summary for a person: one line for the input, one per integration.
func (r *Report) Print(w io.Writer) {
	if r.Replayed+r.Kept > 0 {
		fmt.Fprintf(w, "dead-letter records replayed: %d, kept in %s: %d\n", r.Replayed, r.DeadLetter, r.Kept)
	} else {
		fmt.Fprintf(w, "lines read: %d, invalid: %d (dead-lettered under %s), outside --since/--until: %d, unreadable files: %d\n",
			r.Lines, r.InvalidLines, r.DeadLetter, r.Filtered, r.FileErrors)
	}
	skipped := 0
	for _, j := range r.Jobs {
		if j.Status == "skipped" {
			skipped++
		}
	}
	if skipped > 0 {
		fmt.Fprintf(w, "%d of %d jobs were done by an earlier run of this backfill: not run again, their counts included\n", skipped, len(r.Jobs))
	}
	for _, in := range r.Integrations {
		fmt.Fprintf(w, "%-24s %-9s impressions %d, delivered %d, dead-lettered %d, duplicates dropped %d", in.ID, in.Type,
			in.Impressions, in.Delivered, in.DeadLettered, in.Duplicates)
		if in.Objects > 0 || in.Location != "" {
			fmt.Fprintf(w, ", objects %d (%d bytes) %s", in.Objects, in.Bytes, in.Location)
			if in.StoredBefore > 0 {
				fmt.Fprintf(w, ", %d already held by earlier objects", in.StoredBefore)
			}
		}
		if in.Requests > 0 {
			fmt.Fprintf(w, ", requests %d, throttled %d, retries %d", in.Requests, in.Throttled, in.Retries)
		}
		fmt.Fprintln(w)
	}
}
