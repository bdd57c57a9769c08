package ops

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/outflow/outflow/internal/report"
)

// scrape gets path from the server at addr.
func scrape(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The metrics are the report's counts, labelled by integration and type; the probes
// answer as the job says.
func TestServer(t *testing.T) {
	oldest := time.Now().Add(-42 * time.Second)
	rep := &report.Report{Lines: 100, InvalidLines: 3, Integrations: []report.Integration{
		{ID: "acme-hook", Type: "webhook", Impressions: 90, Delivered: 80, DeadLettered: 7, Pending: 3,
			DeadLetteredBy: map[string]int64{"rejected": 5, "overflow": 2}, RequestsByCode: map[string]int64{"2xx": 8, "429": 2},
			DelayHistogram: map[string]int64{"1": 10, "5": 60, "+Inf": 10}, DelaySumMs: 400_000, RateLimit: 12.5, OldestPending: oldest},
		{ID: "acme-s3", Type: "s3", Impressions: 97, Delivered: 97}},
		Jobs: []report.Job{{Status: "done"}, {Status: "not_run", Started: time.Now()}, {Status: "not_run"}}}
	addr := freeAddr(t)
	lag := func(context.Context) (map[int32]int64, error) { return map[int32]int64{0: 5, 1: 0}, nil }
	s, err := Start(addr, func() *report.Report { return rep }, KafkaLag(lag))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	if code, body := scrape(t, addr, "/readyz"); code != 503 || !strings.Contains(body, "starting") {
		t.Errorf("/readyz before Ready: %d %q, want 503 with a reason", code, body)
	}
	s.NotReady("kafka: connection refused")
	if code, body := scrape(t, addr, "/readyz"); code != 503 || !strings.Contains(body, "kafka: connection refused") {
		t.Errorf("/readyz: %d %q, want 503 naming the reason", code, body)
	}
	s.Ready()
	if code, _ := scrape(t, addr, "/readyz"); code != 200 {
		t.Errorf("/readyz after Ready: %d, want 200", code)
	}
	if code, _ := scrape(t, addr, "/healthz"); code != 200 {
		t.Errorf("/healthz: %d, want 200", code)
	}

	_, text := scrape(t, addr, "/metrics")
	families, err := new(expfmt.TextParser).TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v\n%s", err, text)
	}
	value := func(name string, labels ...string) float64 {
		t.Helper()
		f := families[name]
		if f == nil {
			t.Fatalf("no %s in\n%s", name, text)
		}
	metrics:
		for _, m := range f.Metric {
			have := map[string]string{}
			for _, l := range m.Label {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("no %s%v in\n%s", name, labels, text)
		return 0
	}
	hook := []string{"integration", "acme-hook", "type", "webhook"}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"outflow_input_lines_total", nil, 100},
		{"outflow_invalid_lines_total", nil, 3},
		{"outflow_delivered_impressions_total", hook, 80},
		{"outflow_delivered_impressions_total", []string{"integration", "acme-s3", "type", "s3"}, 97},
		{"outflow_dead_lettered_impressions_total", append(hook, "reason", "rejected"), 5},
		{"outflow_dead_lettered_impressions_total", append(hook, "reason", "overflow"), 2},
		{"outflow_dead_lettered_impressions_total", append(hook, "reason", "gone"), 0},
		{"outflow_requests_total", append(hook, "code", "429"), 2},
		{"outflow_pending_impressions", hook, 3},
		{"outflow_rate_limit_requests_per_second", hook, 12.5},
		{"outflow_delivery_delay_seconds", hook, 80},
		{"outflow_kafka_lag_records", []string{"partition", "0"}, 5},
		{"outflow_backfill_jobs", []string{"status", "planned"}, 3},
		{"outflow_backfill_jobs", []string{"status", "running"}, 1},
		{"outflow_backfill_jobs", []string{"status", "done"}, 1},
	} {
		if got := value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if age := value("outflow_oldest_pending_seconds", hook...); age < 42 || age > 60 {
		t.Errorf("outflow_oldest_pending_seconds = %v, want about 42", age)
	}
	// Cumulative buckets: 10 within 1 s, 70 within 5 s, 80 in all.
	for _, m := range families["outflow_delivery_delay_seconds"].Metric {
		for _, b := range m.Histogram.Bucket {
			want := map[float64]uint64{1: 10, 2.5: 10, 5: 70, 10: 70}[b.GetUpperBound()]
			if want > 0 && b.GetCumulativeCount() != want {
				t.Errorf("delay bucket le=%v holds %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
			}
		}
		if m.Histogram.GetSampleSum() != 400 {
			t.Errorf("delay sum %v s, want 400", m.Histogram.GetSampleSum())
		}
	}
	if strings.Contains(text, `outflow_requests_total{code="2xx",integration="acme-s3"`) {
		t.Error("an object store integration has request metrics")
	}
}
