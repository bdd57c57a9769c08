package main

import (
	"encoding/json"
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
	testHTTPFaults(t, testenv.FlinkFlags(t)...)
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

// Amplitude and Segment throttle, each its own way: Amplitude answers partial 429s
// naming the events it throttled (held back, the rest sent again), Segment 429s with
// Retry-After. Every impression reaches its destination at least once under the
// impression's id, as the impression it is, no Retry-After is ignored, and the
// report's counts are the destinations' own.
func TestVendorsThrottled(t *testing.T) { t.Parallel(); testVendorsThrottled(t) }

// The same on Beam's portable Flink runner in batch mode, where Amplitude's throttled
// events wait out their hold in a processing-time timer.
func TestVendorsThrottledOnFlink(t *testing.T) {
	t.Parallel()
	testVendorsThrottled(t, testenv.FlinkFlags(t)...)
}

// testVendorsThrottled runs TestVendorsThrottled's backfill with runner flags.
func testVendorsThrottled(t *testing.T, runner ...string) {
	amp := testenv.Destination(t, destsim.Options{Kind: destsim.Amplitude, APIKey: "amp-key", ThrottleEvents: 0.05, Seed: 7})
	seg := testenv.Destination(t, destsim.Options{Kind: destsim.Segment, WriteKey: "seg-key", RateLimit: 2, Burst: 1,
		RetryAfterGrace: 100 * time.Millisecond})
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
allow_private_destinations: true
integrations:
  - {id: acme-amp, tenant: acme, type: amplitude, delivery: {max_batch_events: 10}, amplitude: {api_key: amp-key, endpoint: %q}}
  - {id: globex-seg, tenant: globex, type: segment, delivery: {max_batch_events: 10}, segment: {write_key: seg-key, endpoint: %q}}
`, t.TempDir(), amp.URL(), seg.URL()))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	r := runBackfill(t, append([]string{"--config", cfgPath, "--input", sampleGlob}, runner...)...)
	if r.code != 0 || r.report == nil {
		t.Fatalf("exit code %d, want 0\n%s", r.code, r.stderr)
	}
	in := readInput(t, sampleGlob)
	for i, c := range []struct {
		sim     *destsim.Server
		userKey string // the field of an event that holds the impression's key
	}{{amp, "user_id"}, {seg, "userId"}} {
		ic, rep := cfg.Integrations[i], r.report.Integrations[i]
		want := in.want(ic, time.Time{}, time.Time{})
		events := c.sim.Events()
		for id, rec := range want {
			e := events[uuid.UUID(id).String()]
			if e.Count == 0 {
				t.Errorf("%s: impression %x (key %s) lost", ic.ID, id, rec.Key)
				continue
			}
			var body map[string]any
			if err := json.Unmarshal(e.Body, &body); err != nil || body[c.userKey] != rec.Key {
				t.Errorf("%s: the event of impression %x is %s, not the impression of key %s", ic.ID, id, e.Body, rec.Key)
			}
		}
		st := c.sim.Status()
		t.Logf("%s: %d requests: %d accepted, %d throttled; %d duplicate copies (by id); report: %d requests, %d throttled, %d retries",
			ic.ID, st.Requests, st.Accepted, st.Throttled, st.Duplicates, rep.Requests, rep.Throttled, rep.Retries)
		if len(want) == 0 || len(events) != len(want) {
			t.Errorf("%s holds %d impressions, want %d", ic.ID, len(events), len(want))
		}
		if rep.ID != ic.ID || rep.Impressions != int64(len(want)) || rep.Delivered != int64(len(want)) || rep.DeadLettered != 0 {
			t.Errorf("report for %s: %d impressions, %d delivered, %d dead-lettered; want %d delivered",
				rep.ID, rep.Impressions, rep.Delivered, rep.DeadLettered, len(want))
		}
		if st.Throttled == 0 || rep.Throttled != int64(st.Throttled) || rep.Requests != int64(st.Requests) || rep.Retries == 0 {
			t.Errorf("%s: report says %d requests, %d throttled, %d retries; the destination got %d requests, %d throttled (want some)",
				ic.ID, rep.Requests, rep.Throttled, rep.Retries, st.Requests, st.Throttled)
		}
		if st.IgnoredRetryAfter != 0 {
			t.Errorf("%s: %d requests ignored a Retry-After", ic.ID, st.IgnoredRetryAfter)
		}
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
