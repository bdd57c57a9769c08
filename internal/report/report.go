// Package report builds the --report JSON (CONTRACT §3) from a job's Beam metrics.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/metricname"
)

// Report is the --report file. The first fields are pinned by CONTRACT §3; the rest
// help operators.
type Report struct {
	InvalidLines int64         `json:"invalid_lines"`
	Integrations []Integration `json:"integrations"`

	Lines      int64  `json:"lines"`              // non-blank input lines
	Filtered   int64  `json:"filtered"`           // valid lines outside --since/--until
	FileErrors int64  `json:"file_errors"`        // input files that could not be read to the end
	Replayed   int64  `json:"replayed,omitempty"` // replay: dead-letter records delivered again
	Kept       int64  `json:"kept,omitempty"`     // replay: records it could not deliver, written back
	DeadLetter string `json:"dead_letter"`        // where invalid and undeliverable records went

	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Seconds  float64   `json:"seconds"`
	ExitCode int       `json:"exit_code"`
	Error    string    `json:"error,omitempty"`
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

	Duplicates int64 `json:"duplicates"` // copies of an impression dropped
	Objects    int64 `json:"objects,omitempty"`
	Bytes      int64 `json:"bytes"`
	// Location is where an object store integration writes: s3://bucket/prefix.
	Location string `json:"location,omitempty"`
	// RateLimit is the HTTP request rate the destination was last allowed, per second.
	RateLimit float64 `json:"rate_limit,omitempty"`
	// Delay is delivery time minus impression time, over delivered impressions.
	Delay *Delay `json:"delay_ms,omitempty"`
}

// Delay summarizes the delivery delay distribution, in milliseconds.
type Delay struct {
	Count int64 `json:"count"`
	Min   int64 `json:"min"`
	Mean  int64 `json:"mean"`
	Max   int64 `json:"max"`
}

// New returns a report of cfg's integrations with every count at zero.
func New(cfg *config.Config, started time.Time) *Report {
	r := &Report{DeadLetter: cfg.DeadLetter, Started: started, Integrations: []Integration{}}
	for _, in := range cfg.Integrations {
		ri := Integration{ID: in.ID, Type: string(in.Type), Tenant: in.Tenant}
		if in.S3 != nil {
			ri.Location = "s3://" + in.S3.Bucket + "/" + in.S3.Prefix
		}
		r.Integrations = append(r.Integrations, ri)
	}
	return r
}

// AddMetrics fills the counts from a finished job's committed metrics.
func (r *Report) AddMetrics(res beam.PipelineResult) {
	if res == nil {
		return
	}
	sum := map[[2]string]int64{} // namespace, name -> total over steps
	for _, c := range res.Metrics().AllMetrics().Counters() {
		sum[[2]string{c.Namespace(), c.Name()}] += c.Result()
	}
	delays := map[string]Delay{}
	for _, d := range res.Metrics().AllMetrics().Distributions() {
		if d.Name() != metricname.DelayMs {
			continue
		}
		v, cur := d.Result(), delays[d.Namespace()]
		if cur.Count == 0 || v.Min < cur.Min {
			cur.Min = v.Min
		}
		cur.Max = max(cur.Max, v.Max)
		cur.Mean += v.Sum // a sum until divided below
		cur.Count += v.Count
		delays[d.Namespace()] = cur
	}
	rates := map[string]int64{}
	for _, g := range res.Metrics().AllMetrics().Gauges() {
		if g.Name() == metricname.RateLimit {
			rates[g.Namespace()] = g.Result().Value
		}
	}
	job := func(name string) int64 { return sum[[2]string{metricname.Job, name}] }
	r.Lines, r.InvalidLines = job(metricname.Lines), job(metricname.InvalidLines)
	r.Filtered, r.FileErrors = job(metricname.Filtered), job(metricname.FileErrors)
	r.Replayed, r.Kept = job(metricname.Replayed), job(metricname.Kept)
	for i := range r.Integrations {
		in := &r.Integrations[i]
		get := func(name string) int64 { return sum[[2]string{in.ID, name}] }
		in.Impressions, in.Delivered, in.DeadLettered = get(metricname.Impressions), get(metricname.Delivered), get(metricname.DeadLettered)
		in.Requests, in.Throttled, in.Retries = get(metricname.Requests), get(metricname.Throttled), get(metricname.Retries)
		in.Duplicates, in.Objects, in.Bytes = get(metricname.Duplicates), get(metricname.Objects), get(metricname.Bytes)
		if d, ok := delays[in.ID]; ok && d.Count > 0 {
			d.Mean /= d.Count
			in.Delay = &d
		}
		in.RateLimit = float64(rates[in.ID]) / 1000
	}
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
	for _, in := range r.Integrations {
		fmt.Fprintf(w, "%-24s %-9s impressions %d, delivered %d, dead-lettered %d, duplicates dropped %d", in.ID, in.Type,
			in.Impressions, in.Delivered, in.DeadLettered, in.Duplicates)
		if in.Objects > 0 || in.Location != "" {
			fmt.Fprintf(w, ", objects %d (%d bytes) %s", in.Objects, in.Bytes, in.Location)
		}
		if in.Requests > 0 {
			fmt.Fprintf(w, ", requests %d, throttled %d, retries %d", in.Requests, in.Throttled, in.Retries)
		}
		fmt.Fprintln(w)
	}
}
