package main

// The outage benchmark's set-up and the figures issue 26 asks of it: the down
// webhook's probes per minute, its recovery to its limit, the other HTTP destinations'
// events/s during the outage, and the impressions dead-lettered with default settings.

import (
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/gen"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/io/webhookio"
)

const (
	// outageMaxProbes is the most requests a minute a destination that refuses
	// everything should get (issue 26).
	outageMaxProbes = 6
	// outageRecoveryShare of the down webhook's limit, in accepted requests a second
	// over outageRecoveryWindow, is recovered; outageRecoveryLimit is the target time
	// to it from the recovery.
	outageRecoveryShare  = 0.9
	outageRecoveryWindow = 5 * time.Second
	outageRecoveryLimit  = time.Minute
	// outageMinRateShare is the target for the other HTTP destinations' events/s
	// during the outage, against their ideal.
	outageMinRateShare = 0.9
)

// outageDests lists the integrations, issue 26's 3 tenants × (Amplitude, Segment,
// webhook) plus an S3 prefix a tenant, and the first tenant's webhook, the one that
// goes down.
func outageDests(tenants int) (ds []*outageDest, down *outageDest) {
	for i := range tenants {
		t := gen.TenantName(i)
		hook := &outageDest{id: t + "-hook", tenant: t, kind: "webhook", down: i == 0}
		if hook.down {
			down = hook
		}
		ds = append(ds, &outageDest{id: t + "-s3", tenant: t, kind: "s3", prefix: "outage/" + t}, hook,
			&outageDest{id: t + "-amplitude", tenant: t, kind: "amplitude"},
			&outageDest{id: t + "-segment", tenant: t, kind: "segment"})
	}
	return ds, down
}

// outageConfig starts the HTTP destinations' simulators and returns the stream job's
// config. The healthy ones are limited well above their config's default rate, so
// they never answer 429; the down webhook is limited to the webhook default
// requests_per_second, so that the limit its recovery is measured against is one the
// job may reach (it never sends faster than requests_per_second).
func outageConfig(ds []*outageDest, s3Endpoint, deadDir string, window time.Duration) (string, error) {
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "dead_letter: %s\nallow_private_destinations: true\nintegrations:\n", deadDir)
	pending := ""
	if *outageMaxPending > 0 {
		pending = fmt.Sprintf(", delivery: {max_pending_impressions: %d}", *outageMaxPending)
	}
	for _, d := range ds {
		head := fmt.Sprintf("  - {id: %s, tenant: %s, type: %s, window: %s", d.id, d.tenant, d.kind, window)
		switch d.kind {
		case "s3":
			fmt.Fprintf(&cfg, "%s, s3: {bucket: bench, prefix: %s, endpoint: %q}}\n", head, d.prefix, s3Endpoint)
			continue
		case "webhook":
			d.opts = destsim.Options{Kind: destsim.Webhook, Secret: benchSecret, Tenant: d.tenant, RateLimit: surgeHookLimit, NoBodies: true}
			if d.down {
				d.opts.RateLimit = webhookio.Defaults.RequestsPerSecond
			}
		case "amplitude":
			d.opts = destsim.Options{Kind: destsim.Amplitude, APIKey: "key-" + d.id, RateLimit: surgeAmpLimit, NoBodies: true}
		case "segment":
			d.opts = destsim.Options{Kind: destsim.Segment, WriteKey: "wk-" + d.id, RateLimit: surgeAmpLimit, NoBodies: true}
		}
		var err error
		if d.sim, err = destsim.Start(d.opts); err != nil {
			return "", err
		}
		switch d.kind {
		case "webhook":
			fmt.Fprintf(&cfg, "%s, webhook: {url: %q, secret: %q}%s}\n", head, d.sim.URL()+"/hook", benchSecret, pending)
		case "amplitude":
			fmt.Fprintf(&cfg, "%s, amplitude: {api_key: %q, endpoint: %q}%s}\n", head, d.opts.APIKey, d.sim.URL(), pending)
		case "segment":
			fmt.Fprintf(&cfg, "%s, segment: {write_key: %q, endpoint: %q}%s}\n", head, d.opts.WriteKey, d.sim.URL(), pending)
		}
	}
	return cfg.String(), nil
}

// outageCheckDownFlags checks -down-status and -down-retry-after: the down webhook
// answers an outage's statuses, and destsim sends a Retry-After only with a 503.
func outageCheckDownFlags() error {
	switch *outageDownStatus {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
	default:
		return fmt.Errorf("-down-status %d: the down webhook answers 500, 502, 503 or 504", *outageDownStatus)
	}
	switch ra := *outageRetryAfter; {
	case ra < 0:
		return fmt.Errorf("-down-retry-after %v must be ≥ 0", ra)
	case ra > 0 && *outageDownStatus != http.StatusServiceUnavailable:
		return fmt.Errorf("-down-retry-after %v needs -down-status 503 (the simulator sends Retry-After only with a 503)", ra)
	}
	return nil
}

// outageDownOptions are the down webhook's options during the outage: healthy's, but
// answering -down-status to everything, with -down-retry-after or no Retry-After.
func outageDownOptions(healthy destsim.Options) destsim.Options {
	o := healthy
	o.Status = *outageDownStatus
	o.RetryAfter = *outageRetryAfter
	o.NoRetryAfter = *outageRetryAfter == 0
	return o
}

// outageDownDesc says what the down webhook answers during the outage.
func outageDownDesc() string {
	if *outageRetryAfter > 0 {
		return fmt.Sprintf("%d with Retry-After: %v", *outageDownStatus, *outageRetryAfter)
	}
	return fmt.Sprintf("%d without Retry-After", *outageDownStatus)
}

// downSample is the down simulator's counts at a moment.
type downSample struct {
	at                 time.Time
	requests, accepted int
}

// downSampler samples the down webhook's simulator once a second, beside the input:
// the requests it received (probes, while it refuses everything) and those it
// accepted (its rate after the recovery).
type downSampler struct {
	sim        *destsim.Server
	mu         sync.Mutex
	samples    []downSample
	stop, done chan struct{}
}

func startDownSampler(sim *destsim.Server) *downSampler {
	s := &downSampler{sim: sim, stop: make(chan struct{}), done: make(chan struct{})}
	s.sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				s.sample()
			case <-s.stop:
				return
			}
		}
	}()
	return s
}

// sample takes a sample now and returns its time; also called right after the
// simulator is set down and up, so the outage's bounds are sampled exactly. The
// lock keeps the samples in time order.
func (s *downSampler) sample() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	st := s.sim.Status()
	s.samples = append(s.samples, downSample{at: now, requests: st.Requests, accepted: st.Accepted})
	return now
}

// finish stops the sampling and returns the samples, oldest first.
func (s *downSampler) finish() []downSample {
	close(s.stop)
	<-s.done
	return s.samples
}

// sampleAt is the last sample at or before t (the first one if none is).
func sampleAt(samples []downSample, t time.Time) downSample {
	i := sort.Search(len(samples), func(i int) bool { return samples[i].at.After(t) })
	return samples[max(0, i-1)]
}

// outageProbes counts the requests the down webhook received in each whole minute of
// the outage [from, to) after the first, and their average a minute over all of it
// after the first minute. The first is left out: requests under way or retried
// when the webhook went down are not probes of a destination known to be down.
// from and to are taken just after the phases' bounds, so the outage may be a few
// milliseconds short of its length: a last minute that short still counts as whole,
// ending at to.
func outageProbes(samples []downSample, from, to time.Time) (first int, perMinute []int, avg float64, ok bool) {
	start := from.Add(time.Minute)
	if !to.After(start) {
		return sampleAt(samples, to).requests - sampleAt(samples, from).requests, nil, 0, false
	}
	first = sampleAt(samples, start).requests - sampleAt(samples, from).requests
	avg = float64(sampleAt(samples, to).requests-sampleAt(samples, start).requests) / to.Sub(start).Minutes()
	const short = time.Second
	for m := start; !m.Add(time.Minute - short).After(to); m = m.Add(time.Minute) {
		end := m.Add(time.Minute)
		if end.After(to) {
			end = to
		}
		perMinute = append(perMinute, sampleAt(samples, end).requests-sampleAt(samples, m).requests)
	}
	return first, perMinute, avg, true
}

// outageRecoveryTime finds the first sample after the recovery at up at which the down
// webhook's accepted requests over the preceding outageRecoveryWindow (at least)
// reach share × limit a second, and the highest such rate after up. A window that
// starts before up only lowers the rate: nothing is accepted during the outage.
func outageRecoveryTime(samples []downSample, up time.Time, limit, share float64) (reached time.Duration, ok bool, peak float64, peakAt time.Duration) {
	for j, s := range samples {
		if !s.at.After(up) {
			continue
		}
		i := j - 1
		for i >= 0 && s.at.Sub(samples[i].at) < outageRecoveryWindow {
			i--
		}
		if i < 0 {
			continue
		}
		rate := float64(s.accepted-samples[i].accepted) / s.at.Sub(samples[i].at).Seconds()
		if rate > peak {
			peak, peakAt = rate, s.at.Sub(up)
		}
		if !ok && rate >= share*limit {
			reached, ok = s.at.Sub(up), true
		}
	}
	return reached, ok, peak, peakAt
}

// outageBacklog says when the down webhook first received the last of its tenant's
// impressions produced up to the recovery (those timed ≤ before), its backlog, and
// how many of them it received of how many.
func outageBacklog(r outageRun, before time.Time) (last time.Time, got, want int) {
	for _, imp := range r.imps {
		if gen.TenantName(imp.tenant) == r.down.tenant && imp.ms <= before.UnixMilli() {
			want++
		}
	}
	for id, e := range r.down.sim.Events() {
		u, err := uuid.Parse(id)
		imp, known := r.imps[u]
		if err != nil || !known || gen.TenantName(imp.tenant) != r.down.tenant || imp.ms > before.UnixMilli() {
			continue
		}
		got++
		if e.First.After(last) {
			last = e.First
		}
	}
	return last, got, want
}

// destRate is an HTTP destination's events/s during the outage against its ideal.
type destRate struct {
	id        string
	got, want int // its tenant's impressions of the outage: received in time, produced
}

// share is the destination's events/s against its ideal.
func (d destRate) share() float64 { return float64(d.got) / float64(max(1, d.want)) }

// outageRates measures each HTTP destination but the down one during the outage: its
// ideal is its tenant's share of the input then (the impressions timed in the outage
// over its length), and it delivered those of them it received by the outage's end
// + slack (they cannot arrive before their window closes), over the same length;
// the ratio of the two is got/want.
func outageRates(r outageRun, slack time.Duration) []destRate {
	from, to := r.bounds[1].UnixMilli(), r.bounds[2].UnixMilli()
	var rates []destRate
	for _, d := range r.ds {
		if d.sim == nil || d.down {
			continue
		}
		dr := destRate{id: d.id, want: countTenantIn(r.imps, d.tenant, r.bounds[1], r.bounds[2])}
		for id, e := range d.sim.Events() {
			u, err := uuid.Parse(id)
			imp, known := r.imps[u]
			if err == nil && known && gen.TenantName(imp.tenant) == d.tenant && imp.ms >= from && imp.ms < to &&
				e.First.Before(r.bounds[2].Add(slack)) {
				dr.got++
			}
		}
		rates = append(rates, dr)
	}
	return rates
}

// outageDeadLetters counts the impressions dead-lettered in the whole run, every
// integration's: from the stream's final report (ok false if it could not be read)
// and, by impression id, from the dead-letter files (invalid input lines, under
// invalid/, are not impressions of an integration).
func outageDeadLetters(reportPath, deadDir string) (byReport map[string]int64, ok bool, byFiles map[string]int, err error) {
	byReport, byFiles = map[string]int64{}, map[string]int{}
	if rep := readStreamReport(reportPath); rep != nil {
		ok = true
		for _, in := range rep.Integrations {
			if in.DeadLettered > 0 {
				byReport[in.ID] = in.DeadLettered
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(deadDir, "*"))
	for _, dir := range dirs {
		if filepath.Base(dir) == "invalid" {
			continue
		}
		recs, err := deadletterio.ReadLocal(filepath.Join(dir, "*.ndjson"))
		if err != nil {
			return nil, false, nil, err
		}
		ids := map[uuid.UUID]bool{}
		for _, rec := range recs {
			if rec.Impression != nil {
				imp := rec.Impression.Record.Impression(rec.Impression.Tenant)
				ids[imp.ComputeID()] = true
			}
		}
		if len(ids) > 0 {
			byFiles[filepath.Base(dir)] = len(ids)
		}
	}
	return byReport, ok, byFiles, nil
}

// outageIssue is what issue 26 asks of the outage run, for the summary.
type outageIssue struct {
	probesOK     bool // the outage lasted more than its first minute
	probesAvg    float64
	probesMax    int
	wholeMinutes int
	limit        float64 // the down webhook's, requests/s
	recovered    bool
	recovery     time.Duration // from the recovery to outageRecoveryShare of limit
	peak         float64       // the highest accepted rate over outageRecoveryWindow after it
	backlogDone  bool          // the down webhook received its whole backlog…
	backlogDrain time.Duration // …the last of it this long after the recovery
	backlogGot   int
	backlogWant  int
	rates        []destRate
	deadReport   int64 // impressions dead-lettered: by the stream's report (-1: unread)…
	deadFiles    int   // …and in the dead-letter files
	defaults     bool  // max_pending_impressions is the default
}

// outageIssueFigures measures issue 26's figures and prints their details.
func outageIssueFigures(r outageRun) (outageIssue, error) {
	f := outageIssue{limit: r.down.opts.RateLimit, defaults: r.maxPending == outageDefaultMaxPending}
	down, up := r.downUp[0], r.downUp[1]
	first, perMinute, avg, ok := outageProbes(r.samples, down, up)
	f.probesOK, f.probesAvg, f.wholeMinutes = ok, avg, len(perMinute)
	for _, n := range perMinute {
		f.probesMax = max(f.probesMax, n)
	}
	fmt.Printf("\n%s's requests while down: %d in the first minute; after it %.1f a minute, by whole minute %v\n",
		r.down.id, first, avg, perMinute)

	var peakAt time.Duration
	f.recovery, f.recovered, f.peak, peakAt = outageRecoveryTime(r.samples, up, f.limit, outageRecoveryShare)
	var last time.Time
	last, f.backlogGot, f.backlogWant = outageBacklog(r, r.bounds[2])
	f.backlogDone, f.backlogDrain = f.backlogGot == f.backlogWant, last.Sub(up)
	fmt.Printf("%s after the recovery: limit %.0f requests/s; accepted at most %.1f requests/s over %v (%.0fs after it); "+
		"its backlog (impressions timed before the recovery) received %d of %d, the last %.1fs after the recovery\n",
		r.down.id, f.limit, f.peak, outageRecoveryWindow, peakAt.Seconds(), f.backlogGot, f.backlogWant, f.backlogDrain.Seconds())

	slack := r.window + 10*time.Second
	f.rates = outageRates(r, slack)
	secs := r.bounds[2].Sub(r.bounds[1]).Seconds()
	fmt.Printf("HTTP destinations during the outage: their tenant's impressions of it received by its end + %v, a second, "+
		"against all of them (the ideal)\n", slack)
	for _, d := range f.rates {
		fmt.Printf("  %-20s %7.1f/s of %7.1f/s  %.3f\n", d.id, float64(d.got)/secs, float64(d.want)/secs, d.share())
	}

	byReport, reportOK, byFiles, err := outageDeadLetters(r.reportPath, r.deadDir)
	if err != nil {
		return f, fmt.Errorf("reading the dead letters: %w", err)
	}
	f.deadReport = -1
	var lines []string
	if reportOK {
		f.deadReport = 0
		for id, n := range byReport {
			f.deadReport += n
			lines = append(lines, fmt.Sprintf("%s %d by the report", id, n))
		}
	}
	for id, n := range byFiles {
		f.deadFiles += n
		lines = append(lines, fmt.Sprintf("%s %d in the files", id, n))
	}
	sort.Strings(lines)
	fmt.Printf("impressions dead-lettered, every integration (report read: %v): %d by the report, %d in the files%s\n",
		reportOK, max(0, f.deadReport), f.deadFiles, strings.Join(append([]string{""}, lines...), "; "))
	return f, nil
}

// summary prints issue 26's lines of the summary.
func (f outageIssue) summary(line func(target, measured string, ok bool)) {
	target := fmt.Sprintf("down webhook: requests a minute while down, after the 1st ≤ %d", outageMaxProbes)
	if !f.probesOK {
		fmt.Printf("  %-62s | n/a: the outage lasted a minute or less\n", target)
	} else {
		measured := fmt.Sprintf("%.1f on average", f.probesAvg)
		if f.wholeMinutes > 0 {
			measured += fmt.Sprintf(", at most %d in a whole minute (%d)", f.probesMax, f.wholeMinutes)
		}
		line(target, measured, f.probesAvg <= outageMaxProbes && f.probesMax <= outageMaxProbes)
	}

	target = fmt.Sprintf("down webhook: recovery to %.1f × its limit (%.0f/s) ≤ %.0f s",
		outageRecoveryShare, f.limit, outageRecoveryLimit.Seconds())
	switch {
	case f.recovered:
		line(target, fmt.Sprintf("%.0fs (over %v)", f.recovery.Seconds(), outageRecoveryWindow), f.recovery <= outageRecoveryLimit)
	case f.backlogDone:
		// The backlog was too small to need the limit: how long it took is the figure.
		line(target, fmt.Sprintf("never (at most %.1f/s): its backlog was received %.0fs after the recovery",
			f.peak, f.backlogDrain.Seconds()), f.backlogDrain <= outageRecoveryLimit)
	default:
		line(target, fmt.Sprintf("never (at most %.1f/s), and %d of its backlog of %d never received",
			f.peak, f.backlogWant-f.backlogGot, f.backlogWant), false)
	}

	lowest, lowestID := 0.0, "none"
	for i, d := range f.rates {
		if i == 0 || d.share() < lowest {
			lowest, lowestID = d.share(), d.id
		}
	}
	line(fmt.Sprintf("other HTTP destinations: events/s in the outage ≥ %.1f × ideal", outageMinRateShare),
		fmt.Sprintf("lowest %.3f (%s)", lowest, lowestID), len(f.rates) > 0 && lowest >= outageMinRateShare)

	target = "impressions dead-lettered (all, default settings): 0"
	if !f.defaults {
		target = "impressions dead-lettered (all; -max-pending set): 0"
	}
	report := "unread"
	if f.deadReport >= 0 {
		report = fmt.Sprint(f.deadReport)
	}
	line(target, fmt.Sprintf("%s by the report, %d in the files", report, f.deadFiles), f.deadReport <= 0 && f.deadFiles == 0)
}
