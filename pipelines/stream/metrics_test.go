package main

import (
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/testenv"
)

// metricsOf scrapes /metrics: name -> integration (or partition) -> value.
func metricsOf(t *testing.T, addr string) map[string]map[string]float64 {
	t.Helper()
	m, err := testenv.Scrape(addr, "integration")
	if err != nil {
		t.Fatal(err)
	}
	lag, _ := testenv.Scrape(addr, "partition")
	m["outflow_kafka_lag_records"] = lag["outflow_kafka_lag_records"]
	return m
}

// With --metrics-addr the running stream is ready once started, its delivered counts
// move, and a throttled destination's oldest pending impression ages while a
// healthy one's stays young.
func TestStreamMetrics(t *testing.T) {
	t.Parallel()
	tp := newTopic(t)
	healthy, healthyCfg := webhook(t, "globex", destsim.Options{}, "")
	_, slowCfg := webhook(t, "acme", destsim.Options{RateLimit: 0.2, Burst: 1}, ", delivery: {max_batch_events: 5}")
	addr := testenv.FreeAddr(t)
	j := startConfig(t, tp, writeConfig(t, healthyCfg+slowCfg), "--metrics-addr", addr)
	waitReady(t, j, addr)
	if code, _ := testenv.Get(addr, "/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	tp.produce("globex", keys("g", 0, 20)...)
	tp.produce("acme", keys("a", 0, 40)...)
	// The destination counts a request when it arrives; the job, once the answer is
	// back: wait for the count a little.
	delivered := func(want float64) map[string]map[string]float64 {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			m := metricsOf(t, addr)
			got := m["outflow_delivered_impressions_total"]["globex-hook"]
			if got == want {
				return m
			}
			if got > want || time.Now().After(deadline) {
				t.Fatalf("delivered to globex-hook: %v, want %v", got, want)
			}
		}
	}
	waitFor(t, j, healthy, 20)
	first := delivered(20)
	tp.produce("globex", keys("g", 20, 40)...)
	waitFor(t, j, healthy, 40)
	time.Sleep(8 * time.Second)
	later := delivered(40)
	slowAge, slowBefore := later["outflow_oldest_pending_seconds"]["acme-hook"], first["outflow_oldest_pending_seconds"]["acme-hook"]
	if slowAge <= slowBefore || slowAge < 8 {
		t.Errorf("the throttled destination's oldest pending impression: %.1f s, then %.1f s; want it growing", slowBefore, slowAge)
	}
	if age := later["outflow_oldest_pending_seconds"]["globex-hook"]; age > 4 {
		t.Errorf("the healthy destination's oldest pending impression is %.1f s old, more than twice its 2 s window", age)
	}
	if later["outflow_pending_impressions"]["acme-hook"] == 0 || later["outflow_requests_total"]["acme-hook"] == 0 {
		t.Errorf("the throttled destination: pending %v, requests %v; want both above 0",
			later["outflow_pending_impressions"]["acme-hook"], later["outflow_requests_total"]["acme-hook"])
	}
	if _, ok := later["outflow_kafka_lag_records"]["0"]; !ok {
		t.Error("no outflow_kafka_lag_records for partition 0")
	}
	if code := j.stop(); code != 0 {
		t.Errorf("exit code %d after SIGINT\n%s", code, j.stderr.String())
	}
}

// A broker that cannot be reached at start: /readyz answers 503 with the reason while
// the job tries, and the job then exits 1.
func TestStreamNotReadyWithoutBroker(t *testing.T) {
	t.Parallel()
	tp := &kafkaTopic{t: t, brokers: testenv.FreeAddr(t)} // nothing listens there
	hook, hookCfg := webhook(t, "acme", destsim.Options{}, "")
	_ = hook
	addr := testenv.FreeAddr(t)
	j := startConfig(t, tp, writeConfig(t, hookCfg), "--metrics-addr", addr, "--start-timeout", "15s")
	var code int
	var body string
	for deadline := time.Now().Add(15 * time.Second); code == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		code, body = testenv.Get(addr, "/readyz")
	}
	if code == 0 {
		t.Errorf("/readyz did not answer within 15 s, while the job tried to reach the broker\n%s", j.stderr.String())
	} else if code != 503 || !strings.Contains(body, "Kafka") {
		t.Errorf("/readyz: %d %q; want 503 naming Kafka", code, body)
	}
	select {
	case <-j.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("the job did not give up within 60 s, with --start-timeout 15s\n%s", j.stderr.String())
	}
	if c := j.cmd.ProcessState.ExitCode(); c != 1 {
		t.Errorf("exit code %d, want 1\n%s", c, j.stderr.String())
	}
}
