package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/internal/testenv"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/transforms/encode"
)

// No job waits behind a slow destination: jobs bound by an HTTP destination's rate
// run in their own slots, so with --parallel-jobs 2 two webhook jobs waiting on a
// destination limited to one request a second hold no slot the S3 jobs need. The
// webhook's two jobs are the largest, so the plan puts them first: with one pool for
// all, they would take both slots, and no S3 job would start before one of them had
// finished.
func TestSlowHTTPJobsHoldNoObjectSlot(t *testing.T) {
	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	slow := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: "initech", RateLimit: 1,
		RetryAfterGrace: 100 * time.Millisecond})
	// One 1h window and shard per slice, 8 events a request: the webhook's 136
	// impressions take at least 18 requests, at one a second (its jobs, of 73 and 63,
	// at least 10 and 8), the S3 jobs well under a second each.
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %[1]s
allow_private_destinations: true
integrations:
  - {id: initech-hook, tenant: initech, type: webhook, window: 1h, shards: 1, delivery: {max_batch_events: 8}, webhook: {url: "%[2]s/hook", secret: %[3]q}}
  - {id: acme-s3, tenant: acme, type: s3, environments: [production], s3: {bucket: %[4]s, prefix: acme, endpoint: %[5]s}}
  - {id: globex-s3, tenant: globex, type: s3, environments: [production], s3: {bucket: %[4]s, prefix: globex, endpoint: %[5]s}}
`, t.TempDir(), slow.URL(), hookSecret, bucket, s3.Endpoint))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--config", cfgPath, "--input", sampleGlob, "--jobs-by", "integration", "--slice", "1h", "--parallel-jobs", "2"}
	plan := runBackfill(t, append(args, "--plan")...)
	if plan.code != 0 || !strings.Contains(plan.stdout, "object store jobs 2 at a time, HTTP jobs one at a time per destination, a slot per destination") {
		t.Fatalf("--plan: exit %d, does not show the pools' slots\n%s%s", plan.code, plan.stdout, plan.stderr)
	}
	for _, line := range strings.Split(plan.stdout, "\n") {
		if hook, s3 := strings.Contains(line, "initech-hook@"), strings.Contains(line, "-s3@"); hook && !strings.Contains(line, " http ") ||
			s3 && !strings.Contains(line, " object ") {
			t.Errorf("--plan puts a job in the wrong pool: %s", line)
		}
	}
	r := runBackfill(t, args...)
	if r.code != 0 || r.report == nil {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The setup must be the incident's: more S3 jobs than slots, and the webhook's
	// jobs planned first, enough of them to fill every --parallel-jobs slot.
	var hookJobs, s3Jobs []report.Job
	for i, j := range r.report.Jobs {
		if j.Status != "done" {
			t.Errorf("job %s: %s %s", j.ID, j.Status, j.Error)
		}
		if strings.HasPrefix(j.ID, "initech-hook@") {
			hookJobs = append(hookJobs, j)
			if i >= 2 {
				t.Fatalf("webhook job %s is number %d of the plan; the test needs the webhook's jobs first", j.ID, i+1)
			}
		} else {
			s3Jobs = append(s3Jobs, j)
		}
	}
	if len(hookJobs) != 2 || len(s3Jobs) <= 2 {
		t.Fatalf("%d webhook jobs and %d S3 jobs; the test needs 2 and more than --parallel-jobs", len(hookJobs), len(s3Jobs))
	}

	// Every S3 job finished before either webhook job did: none waited for a slot
	// the webhook's jobs held.
	firstHook := hookJobs[0]
	for _, h := range hookJobs[1:] {
		if h.Finished.Before(firstHook.Finished) {
			firstHook = h
		}
	}
	var s3Start, s3End time.Time
	for _, j := range s3Jobs {
		t.Logf("%-40s %v to %v", j.ID, j.Started.Format("15:04:05.000"), j.Finished.Format("15:04:05.000"))
		if !j.Finished.Before(firstHook.Finished) {
			t.Errorf("S3 job %s finished at %v, not before the webhook job %s (%v): it waited behind the webhook",
				j.ID, j.Finished.Format("15:04:05.000"), firstHook.ID, firstHook.Finished.Format("15:04:05.000"))
		}
		if s3Start.IsZero() || j.Started.Before(s3Start) {
			s3Start = j.Started
		}
		if j.Finished.After(s3End) {
			s3End = j.Finished
		}
	}
	for _, h := range hookJobs {
		t.Logf("%-40s %v to %v", h.ID, h.Started.Format("15:04:05.000"), h.Finished.Format("15:04:05.000"))
	}
	t.Logf("S3 jobs took %v from the first start to the last finish; the webhook's first job %v",
		s3End.Sub(s3Start).Round(time.Millisecond), firstHook.Finished.Sub(firstHook.Started).Round(time.Millisecond))

	// Every impression delivered exactly once, to both kinds of destination.
	in := readInput(t, sampleGlob)
	for _, ic := range cfg.Integrations {
		want := in.want(ic, time.Time{}, time.Time{})
		if len(want) == 0 {
			t.Fatalf("%s: the sample routes nothing to it; the test proves nothing", ic.ID)
		}
		switch ic.Type {
		case config.S3:
			got, _ := delivered(t, s3, ic)
			checkExactlyOnce(t, ic.ID, want, got)
		case config.Webhook:
			events := slow.Events()
			if len(events) != len(want) {
				t.Errorf("%s holds %d impressions, want %d", ic.ID, len(events), len(want))
			}
			for id := range want {
				if e := events[uuid.UUID(id).String()]; e.Count != 1 {
					t.Errorf("%s: impression %x received %d times", ic.ID, id, e.Count)
				}
			}
		}
	}
	if st := slow.Status(); st.Throttled == 0 {
		t.Errorf("the webhook was never throttled (%d requests): its jobs were not bound by its rate", st.Requests)
	}
}

// A plan's job is either an object store job or an HTTP one; a job that held both
// (no grouping makes one) would be an HTTP job, bound by its destination.
func TestPoolOf(t *testing.T) {
	in := func(typ config.Type) config.Integration { return config.Integration{ID: string(typ), Type: typ} }
	for _, c := range []struct {
		types []config.Type
		want  pool
	}{
		{[]config.Type{config.S3}, objectPool},
		{[]config.Type{config.S3, config.GCS}, objectPool},
		{[]config.Type{config.Amplitude}, httpPool},
		{[]config.Type{config.Segment}, httpPool},
		{[]config.Type{config.Webhook}, httpPool},
		{[]config.Type{config.S3, config.Webhook}, httpPool},
	} {
		var j planJob
		for _, typ := range c.types {
			j.Integrations = append(j.Integrations, in(typ))
		}
		if got := poolOf(j); got != c.want {
			t.Errorf("job of %v: pool %v, want %v", c.types, got, c.want)
		}
	}
}

// dispatch gives each pool its own slots: HTTP jobs that never end hold no slot an
// object job needs, and within a pool jobs start in the plan's order.
func TestDispatchPools(t *testing.T) {
	// The plan's order: three HTTP jobs first (the largest), then five object jobs.
	pools := []pool{httpPool, httpPool, httpPool, objectPool, objectPool, objectPool, objectPool, objectPool}
	todo := make([]int, len(pools))
	for i := range todo {
		todo[i] = i
	}
	release := make(chan struct{}) // the HTTP jobs wait on their destination until closed
	var (
		mu        sync.Mutex
		started   []int
		running   [numPools]int
		most      [numPools]int
		objectsOK = make(chan struct{})
		objects   int
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		dispatch(context.Background(), todo, func(i int) (pool, []string) { return pools[i], []string{fmt.Sprint(i)} }, [numPools]int{objectPool: 2, httpPool: 2},
			func(i int) func() {
				p := pools[i]
				mu.Lock()
				started = append(started, i)
				running[p]++
				most[p] = max(most[p], running[p])
				mu.Unlock()
				return func() {
					if p == httpPool {
						<-release
					} else {
						time.Sleep(5 * time.Millisecond)
					}
					mu.Lock()
					defer mu.Unlock()
					running[p]--
					if p == objectPool {
						if objects++; objects == 5 {
							close(objectsOK)
						}
					}
				}
			})
	}()
	select {
	case <-objectsOK:
	case <-time.After(10 * time.Second):
		t.Fatal("the object jobs did not all run while the HTTP jobs held their slots")
	}
	mu.Lock()
	if n := slices.Index(started, 2); n >= 0 {
		t.Errorf("the third HTTP job started (%v) while two HTTP jobs held both HTTP slots", started)
	}
	mu.Unlock()
	close(release)
	<-done
	var order [numPools][]int
	for _, i := range started {
		order[pools[i]] = append(order[pools[i]], i)
	}
	if !slices.IsSorted(order[httpPool]) || !slices.IsSorted(order[objectPool]) || len(started) != len(pools) {
		t.Errorf("jobs started in the order %v; want every job, in the plan's order within each pool", started)
	}
	if most[objectPool] > 2 || most[httpPool] != 2 {
		t.Errorf("at most %d object and %d HTTP jobs ran at once; want up to 2 and 2", most[objectPool], most[httpPool])
	}

	// Once ctx is done, no job starts.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n := 0
	dispatch(ctx, todo, func(i int) (pool, []string) { return pools[i], nil }, [numPools]int{1, 1}, func(int) func() { n++; return func() {} })
	if n != 0 {
		t.Errorf("%d jobs started after the context was done", n)
	}
}

// The jobs of one HTTP destination run one at a time, and another destination's job
// starts beside them, even with one HTTP slot fewer than destinations would need.
func TestDispatchOneJobPerDestination(t *testing.T) {
	dests := []string{"hook", "hook", "hook", "hook", "amp"} // the plan's order
	for _, slots := range []int{0, 4} {
		release := make(chan struct{})
		var mu sync.Mutex
		running := map[string]int{}
		most := map[string]int{}
		ampStarted := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			dispatch(context.Background(), []int{0, 1, 2, 3, 4}, func(i int) (pool, []string) { return httpPool, []string{dests[i]} },
				[numPools]int{objectPool: 2, httpPool: slots}, func(i int) func() {
					mu.Lock()
					running[dests[i]]++
					most[dests[i]] = max(most[dests[i]], running[dests[i]])
					mu.Unlock()
					if dests[i] == "amp" {
						close(ampStarted)
					}
					return func() {
						if dests[i] == "hook" {
							<-release // throttled: never done until released
						}
						mu.Lock()
						running[dests[i]]--
						mu.Unlock()
					}
				})
		}()
		select {
		case <-ampStarted:
		case <-time.After(10 * time.Second):
			t.Fatalf("--parallel-http-jobs %d: the other destination's job never started while the webhook's jobs waited", slots)
		}
		close(release)
		<-done
		if most["hook"] != 1 {
			t.Errorf("--parallel-http-jobs %d: the webhook ran %d jobs at once; want 1", slots, most["hook"])
		}
	}
}

// No destination waits for another: of two webhooks of different tenants, one
// answers 500 to everything, and the other's backfill, in several slices, finishes
// while the first is still down. Then the down one comes back: the circuit's next
// probe finds it, its failed batches (hours from their next retry on the webhook
// schedule) are due at once, and it gets every impression once, none dead-lettered.
func TestDownDestinationDelaysNoOther(t *testing.T) {
	downOpts := destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: "initech", Status: 500}
	down := testenv.Destination(t, downOpts)
	healthy := testenv.Destination(t, destsim.Options{Kind: destsim.Webhook, Secret: hookSecret, Tenant: "acme", RateLimit: 20,
		RetryAfterGrace: 100 * time.Millisecond})
	hook := func(tenant, url string) string {
		return fmt.Sprintf("  - {id: %s-hook, tenant: %s, type: webhook, window: 1h, shards: 1, delivery: {max_batch_events: 10}, webhook: {url: %q, secret: %q}}\n",
			tenant, tenant, url+"/hook", hookSecret)
	}
	cfgPath := writeConfig(t, "dead_letter: "+t.TempDir()+"\nallow_private_destinations: true\nintegrations:\n"+
		hook("initech", down.URL())+hook("acme", healthy.URL()))
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	in := readInput(t, sampleGlob)
	want := map[string]map[[16]byte]encode.Record{}
	for _, ic := range cfg.Integrations {
		want[ic.Tenant] = in.want(ic, time.Time{}, time.Time{})
	}

	done := make(chan result, 1)
	go func() { done <- runBackfill(t, "--config", cfgPath, "--input", sampleGlob, "--slice", "1h") }()
	deadline := time.Now().Add(3 * time.Minute)
	for len(healthy.Events()) < len(want["acme"]) {
		if time.Now().After(deadline) {
			t.Fatalf("the healthy webhook got %d of %d impressions in 3 minutes while the other was down", len(healthy.Events()), len(want["acme"]))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Down a while longer, for its last job to end: a job that waited for the other
	// destination would end only after it came back.
	time.Sleep(10 * time.Second)
	upAt := time.Now()
	failedWhileDown := down.Status().Failed
	o := downOpts
	o.Status = 0
	down.Set(o)
	r := <-done
	if r.code != 0 || r.report == nil {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	var hookJobs int
	for _, j := range r.report.Jobs {
		t.Logf("%-40s %s %v to %v", j.ID, j.Status, j.Started.Format("15:04:05.000"), j.Finished.Format("15:04:05.000"))
		if strings.HasPrefix(j.ID, "acme-hook@") {
			hookJobs++
			if !j.Finished.Before(upAt) {
				t.Errorf("job %s finished at %v, after the other webhook came back (%v): it waited for it", j.ID, j.Finished, upAt)
			}
		}
	}
	if hookJobs < 2 {
		t.Fatalf("the healthy webhook had %d jobs; the test needs several slices", hookJobs)
	}
	for tenant, sim := range map[string]*destsim.Server{"acme": healthy, "initech": down} {
		events := sim.Events()
		if len(events) != len(want[tenant]) {
			t.Errorf("%s's webhook holds %d impressions, want %d", tenant, len(events), len(want[tenant]))
		}
		for id := range want[tenant] {
			if e := events[uuid.UUID(id).String()]; e.Count != 1 {
				t.Errorf("%s: impression %x received %d times", tenant, id, e.Count)
			}
		}
	}
	t.Logf("the down webhook answered %d requests with 500 while down; back at %v, done %v later",
		failedWhileDown, upAt.Format("15:04:05.000"), down.Status().LastAccepted.Sub(upAt).Round(time.Millisecond))
}

// A job the runner ended while the delivery core held impressions is incomplete, not
// done: its impressions are nowhere, so the backfill must not say it delivered them.
// What was held is worked out from the counters that only grow: a pending counter
// the runner miscounted does not make a complete job incomplete.
func TestJobStatus(t *testing.T) {
	j := planJob{Integrations: []config.Integration{{ID: "acme-hook", Type: config.Webhook}, {ID: "acme-s3", Type: config.S3}}}
	dead := deadletterio.Tally{DeadLettered: map[string]int64{"acme-hook": 2}}
	counts := func(impressions, delivered, deadLettered, pending int64) report.Counts {
		return report.Counts{"acme-hook": {metricname.Impressions: impressions, metricname.Delivered: delivered,
			metricname.DeadLettered: deadLettered, metricname.Pending: pending}, "acme-s3": {metricname.Impressions: 50, metricname.Delivered: 40}}
	}
	for _, c := range []struct {
		err    error
		counts report.Counts
		tally  deadletterio.Tally
		want   string
	}{
		{errors.New("boom"), nil, deadletterio.Tally{}, "failed"},
		{nil, counts(100, 88, 2, 0), dead, "incomplete"},
		{nil, counts(100, 98, 2, 30), dead, "dead_lettered"},
		{nil, counts(100, 100, 0, 30), deadletterio.Tally{}, "done"},
	} {
		heldAtEnd(c.counts, j)
		got, why := jobStatus(c.err, c.counts, c.tally)
		if got != c.want || (got == "incomplete" && !strings.Contains(why, "holding 10 impressions")) {
			t.Errorf("jobStatus(%v, %v, %+v) = %s (%s), want %s", c.err, c.counts, c.tally, got, why, c.want)
		}
	}
}
