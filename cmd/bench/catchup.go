package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/gen"
	"github.com/outflow/outflow/internal/impression"
)

// Flags of -mode catchup; -n, -rate, -tenants and -files are shared with the other modes.
var (
	catchupSpan       = flag.Duration("span", 24*time.Hour, "catchup: event time the catch-up input spreads over")
	catchupConfigRate = flag.Float64("config-rate", 50, "catchup: requests_per_second in the config, above the destinations' limit so it must be learned")
	catchupPause      = flag.Duration("pause", 60*time.Second, "catchup: the Retry-After of the pause scenario (0 skips it)")
	catchupPauseN     = flag.Int("pause-n", 100000, "catchup: the pause scenario's backlog, for one webhook")
	catchupTimeout    = flag.Duration("timeout", 0, "catchup: kill a backfill that runs longer than this and report what arrived (0: no limit)")
	catchupSkip       = flag.Bool("no-catchup", false, "catchup: run only the pause scenario")
	catchupMaxBatch   = flag.Int("max-batch", 25, "catchup: max_batch_events of every integration (0: each destination's default); "+
		"small enough that the destinations' limit, not reading the input, bounds the catch-up")
)

// catchupDefaultN is -n for -mode catchup when the flag is not given.
const catchupDefaultN = 200_000

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on
// every Linux architecture Go supports (the kernel converts to it for userspace).
const clockTicks = 100

// destDefaults are each HTTP destination's default request size (io/*io.Defaults),
// written explicitly into the bench config so the figures say what they compare to.
var destDefaults = []struct {
	kind                destsim.Kind
	maxEvents, maxBytes int
}{
	{destsim.Amplitude, 1000, 10_000_000},
	{destsim.Segment, 2500, 500_000},
	{destsim.Webhook, 500, 256 << 10},
}

// catchDest is one integration of the catch-up scenario with its simulator.
type catchDest struct {
	id, tenant          string
	kind                destsim.Kind
	maxEvents, maxBytes int
	sim                 *destsim.Server
}

// benchCatchup runs the issue 12 benchmark: a catch-up of n impressions over -span of
// event time to tenants × (Amplitude, Segment, webhook), each destination limited to
// limit requests/s; then a backlog for one webhook whose destination first pauses it
// with a long Retry-After. It prints the figures, then a summary against the targets.
func benchCatchup(n, tenants, files int, limit float64, dir string) error {
	if !flagGiven("n") {
		n = catchupDefaultN
	}
	bin := filepath.Join(dir, "backfill")
	fmt.Println("building the backfill…")
	if err := command("go", "build", "-o", bin, "./pipelines/backfill").Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	var sum catchupSummary
	if !*catchupSkip {
		if err := runCatchup(&sum, bin, filepath.Join(dir, "catchup"), n, tenants, files, limit); err != nil {
			return err
		}
	}
	if *catchupPause > 0 {
		if err := runPause(&sum, bin, filepath.Join(dir, "pause"), *catchupPauseN, files, limit, *catchupPause); err != nil {
			return err
		}
	}
	sum.print()
	return nil
}

// catchupSummary gathers the figures the targets are checked against.
type catchupSummary struct {
	catchup, pause bool
	// Catch-up, worst integration first: the lowest ratio to the ideal events/s, the
	// lowest events per request as a share of what the data allows, the highest 429
	// share.
	minIdeal, minFill, max429       float64
	minIdealID, minFillID, max429ID string
	judged                          int // integrations whose limit binds
	ignored, lost, dups             int
	cpuPer10k                       float64
	killed                          bool
	// Pause.
	pauseCPU                   float64 // share of one core
	pauseIgnored, pauseReqs    int
	pauseLost, pauseDups       int
	pauseFirstAfter, pauseWant time.Duration
	pauseKilled                bool
}

func runCatchup(sum *catchupSummary, bin, dir string, n, tenants, files int, limit float64) error {
	o := gen.Options{N: n, Tenants: tenants, Seed: 12, Span: *catchupSpan}
	fmt.Printf("\n== catch-up: %d impressions over %v of event time, %d tenants × (amplitude, segment, webhook) ==\n", n, o.Span, tenants)
	fmt.Printf("generating the input in %d gzip files…\n", files)
	input, want, err := generate(dir, files, o)
	if err != nil {
		return err
	}

	var dests []*catchDest
	defer func() {
		for _, d := range dests {
			d.sim.Close()
		}
	}()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "dead_letter: %s\nallow_private_destinations: true\nintegrations:\n", filepath.Join(dir, "dead-letter"))
	for i := range tenants {
		tenant := gen.TenantName(i)
		for _, dd := range destDefaults {
			d := &catchDest{id: tenant + "-" + string(dd.kind), tenant: tenant, kind: dd.kind, maxEvents: dd.maxEvents, maxBytes: dd.maxBytes}
			if *catchupMaxBatch > 0 {
				d.maxEvents = min(d.maxEvents, *catchupMaxBatch)
			}
			// Bodies are kept to measure the events' size, which bounds a request by bytes.
			so := destsim.Options{Kind: dd.kind, RateLimit: limit}
			delivery := fmt.Sprintf("delivery: {requests_per_second: %v, max_batch_events: %d, max_batch_bytes: %d}",
				*catchupConfigRate, d.maxEvents, dd.maxBytes)
			var dest string
			switch dd.kind {
			case destsim.Amplitude:
				so.APIKey = "key-" + tenant
				dest = fmt.Sprintf("amplitude: {api_key: %q, endpoint: %%q}", so.APIKey)
			case destsim.Segment:
				so.WriteKey = "wk-" + tenant
				dest = fmt.Sprintf("segment: {write_key: %q, endpoint: %%q}", so.WriteKey)
			default:
				so.Secret, so.Tenant = benchSecret, tenant
				dest = fmt.Sprintf("webhook: {url: %%q, secret: %q}", benchSecret)
			}
			if d.sim, err = destsim.Start(so); err != nil {
				return err
			}
			dests = append(dests, d)
			url := d.sim.URL()
			if dd.kind == destsim.Webhook {
				url += "/hook"
			}
			fmt.Fprintf(&cfg, "  - {id: %s, tenant: %s, type: %s, %s, %s}\n", d.id, tenant, dd.kind, fmt.Sprintf(dest, url), delivery)
		}
	}
	cfgPath := filepath.Join(dir, "catchup.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return err
	}

	burst := max(1, int(math.Ceil(limit))) // destsim's default
	fmt.Printf("each destination: token bucket of %v requests/s (burst %d), 429 + Retry-After beyond it; config requests_per_second: %v\n",
		limit, burst, *catchupConfigRate)
	run, err := startBackfill(bin, cfgPath, filepath.Join(input, "*.gz"), filepath.Join(dir, "report.json"))
	if err != nil {
		return err
	}
	res := run.wait(*catchupTimeout)
	if res.err != nil {
		return res.err
	}
	sum.catchup, sum.killed = true, res.killed
	rep := readReport(filepath.Join(dir, "report.json"))

	fmt.Printf("\nbackfill: %.1fs wall, exit %s, %.1f CPU-s (user+sys), peak RSS %d MiB\n",
		res.elapsed.Seconds(), res.exitString(), res.cpu.Seconds(), res.rssKiB/1024)
	fmt.Printf(`
Definitions, per integration (E = impressions the input routes to it; the destination
is a token bucket of L = %v requests/s and burst b = %d, full when delivery starts):
  cap      most events one request can hold: max_batch_events, or fewer if max_batch_bytes
           is reached first at the mean size of the events received
  span     last accepted request − first accepted request
  ev/s     events delivered / span
  ideal    E / T*, the events/s of a perfect client: R* = ceil(E/cap) full requests, the
           first b at once, then one every 1/L, so T* = (R* − b)/L. "-" when R* <= b:
           the data fits in the burst, the limit never binds and nothing is judged
  ratio    ev/s ÷ ideal = T* / span (target ≥ 0.9)
`, limit, burst)
	fmt.Println(`  ev/req   accepted events / accepted requests; /max its share of max_batch_events, /data
           its share of E/ceil(E/cap), the best mean the data allows (target ≥ 0.9)
  429%     throttled / requests (target ≤ 5%); inRA requests inside a Retry-After the
           destination announced (destsim IgnoredRetryAfter; target 0)
  lost     routed impressions never accepted; dup accepted copies beyond the first;
           stray accepted ids the input does not route there
  first    first acceptance, seconds after the backfill started; learned: rate_limit in
           the report, requests/s`)
	fmt.Printf("\n%-18s %6s %6s %7s %9s %9s %6s %7s %5s %5s %5s %5s %4s %6s %5s %5s %6s %6s %7s\n",
		"integration", "max", "cap", "events", "ev/s", "ideal", "ratio", "ev/req", "/max", "/data",
		"reqs", "429%", "inRA", "lost", "dup", "stray", "first", "span", "learned")
	sum.minIdeal, sum.minFill = math.Inf(1), math.Inf(1)
	var delivered int
	for _, d := range dests {
		st := d.sim.Status()
		evs := d.sim.Events()
		routed := want[d.tenant]
		e := len(routed)
		var lost, stray, bodyBytes int
		for id := range routed {
			if _, ok := evs[id]; !ok {
				lost++
			}
		}
		for id, ev := range evs {
			if _, ok := routed[id]; !ok {
				stray++
			}
			bodyBytes += len(ev.Body) + 1 // and a comma
		}
		got := len(evs) - stray
		delivered += got
		capEv := d.maxEvents
		if len(evs) > 0 {
			// About 100 bytes of envelope around the events.
			capEv = max(1, min(d.maxEvents, (d.maxBytes-100)*len(evs)/bodyBytes))
		}
		best := math.Ceil(float64(e) / float64(capEv))
		span := st.LastAccepted.Sub(st.FirstAccepted)
		rate, ideal, ratio := "-", "-", "-"
		if span > 0 {
			rate = fmt.Sprintf("%.0f", float64(got)/span.Seconds())
		}
		if tIdeal := (best - float64(burst)) / limit; tIdeal > 0 {
			ideal = fmt.Sprintf("%.0f", float64(e)/tIdeal)
			// ev/s ÷ ideal, where what was lost counts as not delivered.
			r := 0.0
			if span > 0 {
				r = float64(got) / span.Seconds() / (float64(e) / tIdeal)
			}
			ratio = fmt.Sprintf("%.2f", r)
			sum.judged++
			if r < sum.minIdeal {
				sum.minIdeal, sum.minIdealID = r, d.id
			}
		}
		perReq := 0.0
		if st.Accepted > 0 {
			perReq = float64(st.UniqueEvents+st.Duplicates) / float64(st.Accepted)
		}
		fill := 1.0
		if e > 0 {
			fill = perReq / (float64(e) / best)
		}
		share429 := 0.0
		if st.Requests > 0 {
			share429 = float64(st.Throttled) / float64(st.Requests)
		}
		first := "-"
		if !st.FirstAccepted.IsZero() {
			first = fmt.Sprintf("%.1f", st.FirstAccepted.Sub(run.start).Seconds())
		}
		learned := "-"
		if r, ok := rep[d.id]; ok && r.RateLimit > 0 {
			learned = fmt.Sprintf("%.1f", r.RateLimit)
		}
		fmt.Printf("%-18s %6d %6d %7d %9s %9s %6s %7.1f %5.2f %5.2f %5d %4.1f%% %4d %6d %5d %5d %6s %5.1fs %7s\n",
			d.id, d.maxEvents, capEv, e, rate, ideal, ratio, perReq, perReq/float64(d.maxEvents), fill,
			st.Requests, 100*share429, st.IgnoredRetryAfter, lost, st.Duplicates, stray, first, span.Seconds(), learned)
		if fill < sum.minFill {
			sum.minFill, sum.minFillID = fill, d.id
		}
		if share429 >= sum.max429 {
			sum.max429, sum.max429ID = share429, d.id
		}
		sum.ignored += st.IgnoredRetryAfter
		sum.lost += lost
		sum.dups += st.Duplicates + stray
	}
	if delivered > 0 {
		sum.cpuPer10k = res.cpu.Seconds() / float64(delivered) * 10000
	}
	fmt.Printf("\nbackfill CPU per 10,000 events delivered: %.3f CPU-s (%.1f CPU-s for %d events, input reading and shuffle included)\n",
		sum.cpuPer10k, res.cpu.Seconds(), delivered)
	return nil
}

func runPause(sum *catchupSummary, bin, dir string, n, files int, limit float64, pause time.Duration) error {
	o := gen.Options{N: n, Tenants: 1, Seed: 13, Span: time.Hour}
	tenant := gen.TenantName(0)
	fmt.Printf("\n== pause: a backlog of %d impressions for one webhook; its first answer is 429 with Retry-After: %.0f ==\n", n, pause.Seconds())
	input, want, err := generate(dir, files, o)
	if err != nil {
		return err
	}
	so := destsim.Options{Kind: destsim.Webhook, Secret: benchSecret, Tenant: tenant, RateLimit: limit, NoBodies: true,
		Status: http.StatusTooManyRequests, RetryAfter: pause}
	sim, err := destsim.Start(so)
	if err != nil {
		return err
	}
	defer sim.Close()
	cfgPath := filepath.Join(dir, "pause.yaml")
	err = writeHookConfig(cfgPath, filepath.Join(dir, "dead-letter"), []hook{{id: tenant + "-hook", tenant: tenant, sim: sim,
		settings: fmt.Sprintf("delivery: {requests_per_second: %v, max_batch_events: 500}", *catchupConfigRate)}})
	if err != nil {
		return err
	}
	run, err := startBackfill(bin, cfgPath, filepath.Join(input, "*.gz"), filepath.Join(dir, "report.json"))
	if err != nil {
		return err
	}

	// The pause starts when the first 429 is answered; from then on the destination
	// would accept, but nothing may be sent before the Retry-After has passed.
	var t0 time.Time
	var c0 time.Duration
	for {
		if sim.Status().Throttled > 0 {
			t0 = time.Now()
			c0, err = procCPU(run.cmd.Process.Pid)
			so.Status = 0
			sim.Set(so)
			break
		}
		if run.exited() {
			res := run.wait(0)
			return fmt.Errorf("the backfill ended (exit %s) before the destination was asked anything", res.exitString())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("reading the backfill's CPU: %w", err)
	}
	reqs0 := sim.Status().Requests
	fmt.Printf("first 429 answered %.1fs after the backfill started; measuring the pause…\n", t0.Sub(run.start).Seconds())
	// Stop sampling a little before the pause ends: the 429 was answered before t0.
	// A second figure over the pause's second half leaves out any work the job still
	// had when the 429 came (reading the rest of the input, say).
	end := t0.Add(pause - min(pause/10, 500*time.Millisecond))
	mid := t0.Add(end.Sub(t0) / 2)
	var tMid time.Time
	var cMid time.Duration
	for now := time.Now(); now.Before(end) && !run.exited(); now = time.Now() {
		if tMid.IsZero() && !now.Before(mid) {
			if c, err := procCPU(run.cmd.Process.Pid); err == nil {
				tMid, cMid = now, c
			}
		}
		next := end
		if tMid.IsZero() {
			next = mid
		}
		time.Sleep(min(100*time.Millisecond, max(time.Millisecond, time.Until(next))))
	}
	c1, err := procCPU(run.cmd.Process.Pid)
	t1 := time.Now()
	if err != nil {
		if !run.exited() {
			return fmt.Errorf("reading the backfill's CPU at the end of the pause: %w", err)
		}
		res := run.wait(0)
		c1 = res.cpu
		fmt.Printf("the backfill ended during the pause (exit %s)\n", res.exitString())
	}
	reqsDuring := sim.Status().Requests - reqs0
	sum.pauseCPU = (c1 - c0).Seconds() / t1.Sub(t0).Seconds()
	secondHalf := "-"
	if !tMid.IsZero() {
		secondHalf = fmt.Sprintf("%.2f%%", 100*(c1-cMid).Seconds()/t1.Sub(tMid).Seconds())
	}

	res := run.wait(*catchupTimeout)
	if res.err != nil {
		return res.err
	}
	st := sim.Status()
	evs := sim.Events()
	routed := want[tenant]
	lost, stray := 0, 0
	for id := range routed {
		if _, ok := evs[id]; !ok {
			lost++
		}
	}
	for id := range evs {
		if _, ok := routed[id]; !ok {
			stray++
		}
	}
	sum.pause, sum.pauseKilled = true, res.killed
	sum.pauseIgnored, sum.pauseReqs = st.IgnoredRetryAfter, reqsDuring
	sum.pauseLost, sum.pauseDups = lost, st.Duplicates+stray
	sum.pauseWant = pause
	if !st.FirstAccepted.IsZero() {
		sum.pauseFirstAfter = st.FirstAccepted.Sub(t0)
	}
	fmt.Printf("backfill: %.1fs wall, exit %s, %.1f CPU-s in all\n", res.elapsed.Seconds(), res.exitString(), res.cpu.Seconds())
	fmt.Printf("during the pause (%.1fs sampled): %.2f CPU-s, %.2f%% of one core (its second half: %s); %d requests arrived (%d inside the Retry-After)\n",
		t1.Sub(t0).Seconds(), (c1 - c0).Seconds(), 100*sum.pauseCPU, secondHalf, reqsDuring, st.IgnoredRetryAfter)
	when := "nothing accepted"
	if !st.FirstAccepted.IsZero() {
		when = fmt.Sprintf("first acceptance %.1fs after the 429, last %.1fs after", sum.pauseFirstAfter.Seconds(), st.LastAccepted.Sub(t0).Seconds())
	}
	fmt.Printf("after it: %s; %d of %d impressions accepted, %d requests in all (%d throttled), lost %d, duplicates %d, stray %d\n",
		when, len(evs)-stray, len(routed), st.Requests, st.Throttled, lost, st.Duplicates, stray)
	return nil
}

func (s *catchupSummary) print() {
	fmt.Printf("\n== summary ==\n  %-46s | measured\n", "target")
	line := func(target, measured string, ok bool) {
		verdict := "MISSED"
		if ok {
			verdict = "ok"
		}
		fmt.Printf("  %-46s | %s  %s\n", target, measured, verdict)
	}
	if s.catchup {
		if s.killed {
			fmt.Println("  (catch-up: the backfill was killed at -timeout; the figures cover what had arrived)")
		}
		if s.judged > 0 {
			line("catch-up events/s ≥ 0.9 of the ideal", fmt.Sprintf("worst %.2f (%s)", s.minIdeal, s.minIdealID), s.minIdeal >= 0.9)
		} else {
			fmt.Printf("  %-46s | not judged: each integration's data fits in its destination's burst (raise -n or lower -rate)\n",
				"catch-up events/s ≥ 0.9 of the ideal")
		}
		line("events per request ≥ 0.9 of what data allows", fmt.Sprintf("worst %.2f (%s)", s.minFill, s.minFillID), s.minFill >= 0.9)
		line("429s ≤ 5% of requests", fmt.Sprintf("worst %.1f%% (%s)", 100*s.max429, s.max429ID), s.max429 <= 0.05)
		line("0 requests inside a Retry-After", fmt.Sprint(s.ignored), s.ignored == 0)
		line("0 lost, 0 duplicated", fmt.Sprintf("%d lost, %d duplicated", s.lost, s.dups), s.lost == 0 && s.dups == 0)
		fmt.Printf("  %-46s | %.3f CPU-s\n", "CPU per 10,000 events delivered (no target)", s.cpuPer10k)
	}
	if s.pause {
		if s.pauseKilled {
			fmt.Println("  (pause: the backfill was killed at -timeout; the figures cover what had arrived)")
		}
		line("pause: CPU < 2% of one core", fmt.Sprintf("%.2f%%", 100*s.pauseCPU), s.pauseCPU < 0.02)
		line(fmt.Sprintf("pause: 0 requests inside the %.0fs Retry-After", s.pauseWant.Seconds()),
			fmt.Sprintf("%d (%d arrived while sampling)", s.pauseIgnored, s.pauseReqs), s.pauseIgnored == 0 && s.pauseReqs == 0)
		line("pause: all delivered after it, 0 lost, 0 dup",
			fmt.Sprintf("first %.1fs after the 429 (Retry-After %.0fs), %d lost, %d duplicated",
				s.pauseFirstAfter.Seconds(), s.pauseWant.Seconds(), s.pauseLost, s.pauseDups),
			s.pauseLost == 0 && s.pauseDups == 0 && s.pauseFirstAfter >= s.pauseWant-50*time.Millisecond)
	}
}

// routedIDs returns the ids of the impressions the generated input holds, by tenant
// (every bench integration takes all of its tenant's impressions).
// generate writes the input of o in gzip files under dir and returns their folder and
// the ids each tenant's impressions have (routedIDs).
func generate(dir string, files int, o gen.Options) (string, map[string]map[string]struct{}, error) {
	input := filepath.Join(dir, "input")
	if err := gen.WriteFiles(input, files, true, o); err != nil {
		return "", nil, fmt.Errorf("generate: %w", err)
	}
	want, err := routedIDs(o)
	return input, want, err
}

func routedIDs(o gen.Options) (map[string]map[string]struct{}, error) {
	ids := map[string]map[string]struct{}{}
	err := gen.Lines(o, func(line []byte, _ string) error {
		imp, err := impression.Parse(line)
		if err != nil {
			return nil // invalid lines are routed nowhere
		}
		m := ids[imp.Tenant]
		if m == nil {
			m = map[string]struct{}{}
			ids[imp.Tenant] = m
		}
		m[imp.ID.String()] = struct{}{}
		return nil
	})
	return ids, err
}

// reportLine is what the bench reads of a --report integration.
type reportLine struct {
	ID        string  `json:"id"`
	RateLimit float64 `json:"rate_limit"`
}

// readReport returns the report's integrations by id, or none if it cannot be read
// (a killed backfill writes none).
func readReport(path string) map[string]reportLine {
	var r struct {
		Integrations []reportLine `json:"integrations"`
	}
	m := map[string]reportLine{}
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &r) == nil {
		for _, l := range r.Integrations {
			m[l.ID] = l
		}
	}
	return m
}

// backfillProc is a backfill running in the background.
type backfillProc struct {
	cmd   *exec.Cmd
	start time.Time
	out   bytes.Buffer
	done  chan error
	res   *procResult // once ended
}

func startBackfill(bin, cfg, glob, report string, args ...string) (*backfillProc, error) {
	p := &backfillProc{done: make(chan error, 1)}
	p.cmd = exec.Command(bin, append([]string{"--config", cfg, "--input", glob, "--report", report}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, os.Stderr
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.done <- p.cmd.Wait() }()
	return p, nil
}

// exited says whether the process has ended (its result stays for wait).
func (p *backfillProc) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// procResult is how a backfill ended.
type procResult struct {
	elapsed time.Duration
	cpu     time.Duration // user + system, the whole process
	rssKiB  int64
	code    int
	killed  bool
	err     error // the process could not be run
}

func (r procResult) exitString() string {
	if r.killed {
		return "killed at -timeout"
	}
	return strconv.Itoa(r.code)
}

// wait waits for the process, killing it after timeout (0: no limit). Once it has
// ended, wait returns the same result again.
func (p *backfillProc) wait(timeout time.Duration) procResult {
	if p.res != nil {
		return *p.res
	}
	var expire <-chan time.Time
	if timeout > 0 {
		expire = time.After(time.Until(p.start.Add(timeout)))
	}
	var r procResult
	var err error
	select {
	case err = <-p.done:
	case <-expire:
		fmt.Fprintf(os.Stderr, "bench: the backfill ran longer than -timeout %v; killing it\n", timeout)
		p.cmd.Process.Kill()
		err = <-p.done
		r.killed = true
	}
	r.elapsed = time.Since(p.start)
	ps := p.cmd.ProcessState
	if ps == nil {
		r.err = err
		return r
	}
	r.cpu = ps.UserTime() + ps.SystemTime()
	r.rssKiB = maxRSSKiB(ps)
	r.code = ps.ExitCode()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		r.err = err
	}
	if !r.killed && r.code != 0 {
		fmt.Fprintf(os.Stderr, "bench: backfill exited with code %d:\n%s", r.code, p.out.Bytes())
	}
	p.res = &r
	return r
}

// maxRSSKiB is an ended process's peak resident set.
func maxRSSKiB(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss
	}
	return 0
}

// procCPU returns the user and system CPU time a running process has used, all its
// threads, from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, b)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// flagGiven says whether the command line set the flag.
func flagGiven(name string) bool {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}
