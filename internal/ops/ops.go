// Package ops serves what operators scrape and probe while a job runs (CONTRACT §6):
// GET /metrics in the Prometheus text format, GET /healthz and GET /readyz.
//
// The metrics are made from the job's report at each scrape (package report), so
// /metrics and --report never disagree. They are labelled by integration and type,
// never by impression fields.
package ops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/outflow/outflow/internal/delaywatch"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/internal/oplog"
	"github.com/outflow/outflow/internal/report"
)

// Server serves a job's metrics and probes.
type Server struct {
	srv *http.Server

	mu       sync.Mutex
	notReady string // why /readyz answers 503; "" once ready
}

// Start serves on addr (HOST:PORT). snapshot returns the job's report as it stands;
// more adds collectors of the job's own (a stream's Kafka lag). /readyz answers 503
// until Ready is called.
func Start(addr string, snapshot func() *report.Report, more ...prometheus.Collector) (*Server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(reportCollector{snapshot})
	for _, c := range more {
		reg.MustRegister(c)
	}
	s := &Server{notReady: "starting"}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	// Go's profiler, for operators chasing where a job spends its CPU.
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		why := s.notReady
		s.mu.Unlock()
		if why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			oplog.L().Error("--metrics-addr: serving stopped", "error", err)
		}
	}()
	return s, nil
}

// Ready makes /readyz answer 200: the job is submitted and its sources and sinks
// were reached.
func (s *Server) Ready() { s.NotReady("") }

// NotReady makes /readyz answer 503 with why, one line.
func (s *Server) NotReady(why string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.notReady = why
	s.mu.Unlock()
}

// Close stops serving.
func (s *Server) Close() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}

// The metrics, pinned by CONTRACT §6 (more are welcome).
var (
	labels        = []string{"integration", "type"}
	descDelivered = prometheus.NewDesc("outflow_delivered_impressions_total",
		"Impressions written to an object store or accepted by the destination.", labels, nil)
	descDead = prometheus.NewDesc("outflow_dead_lettered_impressions_total",
		"Impressions written to the dead-letter store instead, by reason.", append(slices.Clone(labels), "reason"), nil)
	descRequests = prometheus.NewDesc("outflow_requests_total",
		"HTTP requests answered, by status class (2xx, 429, 4xx, 5xx, error: no answer).", append(slices.Clone(labels), "code"), nil)
	descPending = prometheus.NewDesc("outflow_pending_impressions",
		"Impressions the HTTP delivery core holds for the destination now.", labels, nil)
	descOldest = prometheus.NewDesc("outflow_oldest_pending_seconds",
		"Age (now minus impression time) of the oldest impression held for delivery; 0 when none is.", labels, nil)
	descDelay = prometheus.NewDesc("outflow_delivery_delay_seconds",
		"Delivery time minus impression time of HTTP deliveries.", labels, nil)
	descRate = prometheus.NewDesc("outflow_rate_limit_requests_per_second",
		"The request rate the destination was last found to allow.", labels, nil)
	descAlerts = prometheus.NewDesc("outflow_delay_alerts_total",
		"Impressions delivered later than the integration's alert_delay (the ERROR log line's condition).", labels, nil)
	descRouted = prometheus.NewDesc("outflow_impressions_total",
		"Unique impressions routed to the integration after its filters.", labels, nil)
	descLines   = prometheus.NewDesc("outflow_input_lines_total", "Non-blank input lines read.", nil, nil)
	descInvalid = prometheus.NewDesc("outflow_invalid_lines_total", "Input lines dead-lettered as invalid.", nil, nil)
	descJobs    = prometheus.NewDesc("outflow_backfill_jobs",
		"A backfill's jobs by status: planned (all), running, done, dead_lettered, failed, skipped.", []string{"status"}, nil)
)

// reportCollector makes the metrics from a report snapshot at each scrape.
type reportCollector struct{ snapshot func() *report.Report }

func (c reportCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDelivered, descDead, descRequests, descPending, descOldest, descDelay,
		descRate, descAlerts, descRouted, descLines, descInvalid, descJobs} {
		ch <- d
	}
}

func (c reportCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.snapshot()
	if r == nil {
		return
	}
	now := time.Now()
	counter := func(d *prometheus.Desc, v int64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter(descLines, r.Lines)
	counter(descInvalid, r.InvalidLines)
	for _, in := range r.Integrations {
		lv := []string{in.ID, in.Type}
		counter(descDelivered, in.Delivered, lv...)
		counter(descRouted, in.Impressions, lv...)
		counter(descAlerts, in.DelayAlerts, lv...)
		for _, reason := range metricname.DeadLetterReasons {
			counter(descDead, in.DeadLetteredBy[reason], append(lv, reason)...)
		}
		if in.Type == "s3" || in.Type == "gcs" {
			continue // the rest are the HTTP delivery core's
		}
		for _, code := range []string{"2xx", "429", "4xx", "5xx", "error"} {
			counter(descRequests, in.RequestsByCode[code], append(lv, code)...)
		}
		gauge(descPending, float64(in.Pending), lv...)
		oldest := 0.0
		if !in.OldestPending.IsZero() {
			oldest = max(0, now.Sub(in.OldestPending).Seconds())
		}
		gauge(descOldest, oldest, lv...)
		gauge(descRate, in.RateLimit, lv...)
		ch <- delayHistogram(in, lv)
	}
	if len(r.Jobs) > 0 {
		byStatus := map[string]int{"planned": len(r.Jobs), "running": 0, "done": 0, "dead_lettered": 0, "failed": 0, "incomplete": 0, "skipped": 0}
		for _, j := range r.Jobs {
			switch {
			case j.Status == "not_run" && !j.Started.IsZero():
				byStatus["running"]++
			case j.Status != "not_run":
				byStatus[j.Status]++
			}
		}
		for status, n := range byStatus {
			gauge(descJobs, float64(n), status)
		}
	}
}

// delayHistogram is in's delay histogram, cumulative as Prometheus has it.
func delayHistogram(in report.Integration, lv []string) prometheus.Metric {
	buckets := map[float64]uint64{}
	var n uint64
	labels := delaywatch.BucketLabels()
	for i, le := range labels {
		n += uint64(in.DelayHistogram[le])
		if i < len(metricname.DelayBounds) {
			bound, _ := strconv.ParseFloat(le, 64)
			buckets[bound] = n
		}
	}
	return prometheus.MustNewConstHistogram(descDelay, n, float64(in.DelaySumMs)/1000, buckets, lv...)
}

var descLag = prometheus.NewDesc("outflow_kafka_lag_records",
	"Records of the partition not yet committed by the stream's consumer group: end offset minus committed offset.",
	[]string{"partition"}, nil)

// KafkaLag is a collector of outflow_kafka_lag_records, asking lag at each scrape
// (bounded to a few seconds; a failed ask yields no sample).
func KafkaLag(lag func(context.Context) (map[int32]int64, error)) prometheus.Collector {
	return lagCollector(lag)
}

type lagCollector func(context.Context) (map[int32]int64, error)

func (c lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descLag }

func (c lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lags, err := c(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descLag, err)
		return
	}
	for p, n := range lags {
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(n), strconv.Itoa(int(p)))
	}
}
