package main

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/testenv"
)

// Faults at an HTTP destination: each time, nothing is lost, each impression is held
// once by id, and the report's counts match what the destination holds.
func TestHTTPFaults(t *testing.T) { t.Parallel(); testHTTPFaults(t) }

// The same on Beam's portable Flink runner in batch mode, where the delivery core's
// waits are processing-time timers that Flink may fire at once at the end of input.
func TestHTTPFaultsOnFlink(t *testing.T) {
	testHTTPFaults(t, "--runner=flink", "--endpoint="+testenv.FlinkJobServer(t), "--environment_type=LOOPBACK")
}

// testHTTPFaults runs TestHTTPFaults's cases with runner flags.
func testHTTPFaults(t *testing.T, runner ...string) {
	in := readInput(t, sampleGlob)
	for _, c := range []struct {
		name     string
		opts     destsim.Options
		during   func(*destsim.Server) // changes while the backfill runs
		delivery string
	}{
		{name: "5xx burst, then healthy", opts: destsim.Options{Status: 500},
			during: func(s *destsim.Server) { // healthy again after a burst of failures
				for deadline := time.Now().Add(time.Minute); s.Status().Failed < 8 && time.Now().Before(deadline); {
					time.Sleep(20 * time.Millisecond)
				}
				s.Set(destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: "acme"})
			}},
		{name: "slow answers beyond the timeout", opts: destsim.Options{SlowRate: 0.3, SlowDelay: 1500 * time.Millisecond, Seed: 3},
			delivery: "max_batch_events: 5, timeout: 500ms"},
		{name: "connections reset", opts: destsim.Options{ResetRate: 0.3, Seed: 4}},
		{name: "429 storm with long Retry-After", opts: destsim.Options{RateLimit: 0.4, Burst: 1}, // Retry-After: 3
			delivery: "max_batch_events: 20"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			o := c.opts
			o.Kind, o.Secret, o.Tenant, o.RetryAfterGrace = destsim.Webhook, hookSecret, "acme", 100*time.Millisecond
			sim := testenv.Destination(t, o)
			delivery := "max_batch_events: 5"
			if c.delivery != "" {
				delivery = c.delivery
			}
			cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
allow_private_destinations: true
integrations:
  - {id: acme-hook, tenant: acme, type: webhook, window: 1h, shards: 2, delivery: {%s}, webhook: {url: %q, secret: %q, gzip: true}}
`, t.TempDir(), delivery, sim.URL()+"/h", hookSecret))
			cfg, _ := config.Load(cfgPath)
			var wg sync.WaitGroup
			if c.during != nil {
				wg.Add(1)
				go func() { defer wg.Done(); c.during(sim) }()
			}
			r := runBackfill(t, append([]string{"--config", cfgPath, "--input", sampleGlob}, runner...)...)
			wg.Wait()
			if r.code != 0 {
				t.Fatalf("exit code %d\n%s", r.code, r.stderr)
			}
			want := in.want(cfg.Integrations[0], time.Time{}, time.Time{})
			events := sim.Events()
			for id := range want {
				if events[uuid.UUID(id).String()].Count == 0 {
					t.Errorf("impression %x lost", id)
				}
			}
			st := sim.Status()
			rep := r.report.Integrations[0]
			t.Logf("%d requests: %d accepted, %d throttled, %d unavailable, %d failed, %d reset; %d duplicate copies (by id), %d retries; %d ignored a Retry-After",
				st.Requests, st.Accepted, st.Throttled, st.Unavailable, st.Failed, st.Resets, st.Duplicates, rep.Retries, st.IgnoredRetryAfter)
			if len(events) != len(want) || rep.Delivered != int64(len(want)) || rep.DeadLettered != 0 {
				t.Errorf("destination holds %d impressions, report says %d delivered and %d dead-lettered; want %d",
					len(events), rep.Delivered, rep.DeadLettered, len(want))
			}
			if rep.Retries == 0 || st.IgnoredRetryAfter != 0 {
				t.Errorf("retries %d (want some: the fault did not bite), requests ignoring Retry-After %d", rep.Retries, st.IgnoredRetryAfter)
			}
			// Copies only where a request timed out after the destination took it: the
			// same batch, same webhook-id, for the receiver to drop.
			if st.Duplicates > 0 && (c.opts.SlowRate == 0 || st.DuplicateBatches == 0) {
				t.Errorf("%d duplicate copies without a timed-out request to explain them", st.Duplicates)
			}
		})
	}
}

// The S3 server goes away in the middle of the uploads and comes back: the uploads are
// retried and every impression ends in exactly one object.
func TestS3RestartMidUpload(t *testing.T) {
	t.Parallel()
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	target, _ := url.Parse(s3.Endpoint)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var down atomic.Int64 // Unix ms until which the "server" is down
	var puts atomic.Int32
	front := testenv.HTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && puts.Add(1) == 3 {
			down.Store(time.Now().Add(2 * time.Second).UnixMilli()) // the third upload takes it down
		}
		if time.Now().UnixMilli() < down.Load() {
			hj, _ := w.(http.Hijacker)
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close() // as a restarting server does: the connection just ends
			}
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, window: 10m, s3: {bucket: %s, endpoint: %s, max_concurrent_uploads: 2}}
`, t.TempDir(), bucket, front))
	cfg, _ := config.Load(cfgPath)
	r := runBackfill(t, "--config", cfgPath, "--input", sampleGlob)
	if r.code != 0 {
		t.Fatalf("exit code %d\n%s", r.code, r.stderr)
	}
	if down.Load() == 0 {
		t.Fatal("the server never went down; the test proves nothing")
	}
	in := readInput(t, sampleGlob)
	got, _ := delivered(t, s3, cfg.Integrations[0])
	checkExactlyOnce(t, "acme-s3", in.want(cfg.Integrations[0], time.Time{}, time.Time{}), got)
}
