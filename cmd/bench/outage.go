package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/gen"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/internal/s3server"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/transforms/encode"
)

// Flags of -mode outage; -rate (default 300 here), -tenants, -window and -warmup
// (default 60 s here) are shared.
var (
	outageLen        = flag.Duration("outage", 30*time.Minute, "outage: how long the down webhook answers -down-status to everything")
	outageRecovery   = flag.Duration("recovery", 2*time.Minute, "outage: input at -rate after the outage, every destination healthy")
	outageDrain      = flag.Duration("drain", 10*time.Minute, "outage: after the input stops, the longest wait for every impression to be delivered or dead-lettered")
	outageMaxPending = flag.Int("max-pending", 0, "outage: max_pending_impressions of every HTTP integration (0: the stream's default, 250000)")
	outageDownStatus = flag.Int("down-status", 503, "outage: what the down webhook answers every request: 503, 500, 502 or 504")
	outageRetryAfter = flag.Duration("down-retry-after", 0, "outage: the Retry-After of the down webhook's 503s, in whole seconds rounded up (0: none)")
)

const (
	// outageDefaultRate is issue 26's run: about 100 impressions/s a tenant, so that
	// the down webhook's backlog after 30 min (180,000) stays under the default
	// max_pending_impressions and nothing need be dead-lettered.
	outageDefaultRate   = 300
	outageDefaultWarmup = 60 * time.Second
	// outageStartLimit bounds the wait for the job's first deliveries everywhere.
	outageStartLimit = 5 * time.Minute
	// outageProgress is how often a progress line is printed.
	outageProgress = 30 * time.Second
	// outageDefaultMaxPending is the stream's max_pending_impressions default
	// (delivery.DefaultMaxPending), for the report.
	outageDefaultMaxPending = 250_000
)

// outageDest is one integration of the outage benchmark: an S3 prefix or an HTTP
// destination simulator.
type outageDest struct {
	id, tenant string
	kind       string // s3, webhook, amplitude or segment
	prefix     string // s3: the objects' prefix in the bucket
	sim        *destsim.Server
	opts       destsim.Options // the simulator's healthy options
	down       bool            // the webhook that answers -down-status during the outage
}

// outageImp is a produced impression: its time (Unix ms) and tenant index.
type outageImp struct {
	ms     int64
	tenant int
}

// outage phases, by impression time; impressions from before the job's first
// deliveries everywhere are in none.
var outagePhases = [3]string{"before", "during", "after"}

// benchOutage runs the stream job at a steady rate while one webhook answers
// -down-status for -outage: the job's memory (bounded by max_pending_impressions,
// beyond which the down webhook's impressions are dead-lettered), the healthy
// destinations' delay and events/s, the down webhook's probes and recovery, and that
// nothing is lost or dead-lettered. See README.md (Benchmarks).
func benchOutage(rate float64, tenants int, dir string) error {
	if !flagGiven("rate") {
		rate = outageDefaultRate
	}
	warmup := *surgeWarmup
	if !flagGiven("warmup") {
		warmup = outageDefaultWarmup
	}
	window := *surgeWindow
	switch {
	case tenants < 2:
		return errors.New("-mode outage needs -tenants ≥ 2 (a healthy webhook beside the down one)")
	case rate < 1:
		return fmt.Errorf("-rate %v impressions/s is too low", rate)
	case *outageLen <= 0 || *outageRecovery <= 0 || warmup <= 0:
		return errors.New("-outage, -recovery and -warmup must be positive")
	}
	if err := outageCheckDownFlags(); err != nil {
		return err
	}
	maxPending := *outageMaxPending
	if maxPending <= 0 {
		maxPending = outageDefaultMaxPending
	}

	binDir := filepath.Join(dir, "bin")
	streamB := filepath.Join(binDir, "stream")
	fmt.Println("building the stream job…")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	if err := command("go", "build", "-o", streamB, "./pipelines/stream").Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	s3, err := s3server.Start(filepath.Join(dir, "s3"))
	if err != nil {
		return err
	}
	defer s3.Close()
	if err := s3.CreateBucket("bench"); err != nil {
		return err
	}
	s3Root := filepath.Join(dir, "s3", "buckets", "bench")
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"} {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "outage"))
	if err != nil {
		return err
	}
	defer kafka.Close()
	producer, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return err
	}
	defer producer.Close()

	ds, down := outageDests(tenants)
	defer func() {
		for _, d := range ds {
			if d.sim != nil {
				d.sim.Close()
			}
		}
	}()
	deadDir := filepath.Join(dir, "outage", "dead-letter")
	cfg, err := outageConfig(ds, s3.Endpoint, deadDir, window)
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "outage.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	reportPath := filepath.Join(dir, "outage-report.json")

	fmt.Printf("\n== outage: %.0f impressions/s; warm-up %v, %s answers %s for %v, recovery %v, then drain (≤ %v); "+
		"window %v; max_pending_impressions %d; %d tenants × (S3, webhook, Amplitude, Segment) ==\n",
		rate, warmup, down.id, outageDownDesc(), *outageLen, *outageRecovery, *outageDrain, window, maxPending, tenants)

	// Every impression produced, by id, and how many each tenant got.
	imps := map[uuid.UUID]outageImp{}
	tenantIdx := map[string]int{}
	for i := range tenants {
		tenantIdx[gen.TenantName(i)] = i
	}
	want := map[string]int{}
	seed := uint64(5000)
	produce := func(from, to time.Time, count int) error {
		seed++
		return produceGenerated(producer, "outage", tenants, seed, from, to, count, func(imp *impression.Impression) {
			if _, seen := imps[imp.ID]; !seen {
				imps[imp.ID] = outageImp{ms: imp.Time, tenant: tenantIdx[imp.Tenant]}
				want[imp.Tenant]++
			}
		})
	}
	run := func(until time.Time, stop func() bool) (int, time.Time, error) {
		return paced(rate, until, stop, produce)
	}

	args := []string{"--config", cfgPath, "--brokers", strings.Join(kafka.ListenAddrs(), ","),
		"--topic", "outage", "--group", "outage", "--shutdown-timeout", "30s", "--report", reportPath}
	if addr := os.Getenv("OUTFLOW_BENCH_METRICS_ADDR"); addr != "" {
		args = append(args, "--metrics-addr", addr) // to scrape or profile the job while it runs
	}
	job, err := startStream(streamB, args...)
	if err != nil {
		return err
	}
	defer job.kill()
	rss := startRSSSampler(job.Process.Pid)
	objs := newS3Watch(s3Root, "outage")
	dead := &deadCounter{dir: filepath.Join(deadDir, down.id), files: map[string]deadFile{}}

	// Start-up: input at the rate until every destination has something.
	jobStart := time.Now()
	fmt.Printf("start-up at %.0f/s until the job delivers everywhere…\n", rate)
	if _, _, err := run(time.Time{}, func() bool {
		objs.scan(false)
		for _, d := range ds {
			if (d.kind == "s3" && objs.objects(d.prefix) == 0) || (d.sim != nil && d.sim.Status().UniqueEvents == 0) {
				return time.Since(jobStart) > outageStartLimit
			}
		}
		return true
	}); err != nil {
		return err
	}
	if time.Since(jobStart) > outageStartLimit {
		return fmt.Errorf("the stream job delivered nothing to some destination within %v", outageStartLimit)
	}
	fmt.Printf("first deliveries everywhere %.1fs after the job started\n", time.Since(jobStart).Seconds())

	// While the input runs: new objects noted every second (their upload times), a
	// progress line now and then.
	var phase string
	lastScan, lastProgress := time.Now(), time.Now()
	var ledger [2]int64 // the offset ledger's bytes and firings at the last progress line
	progress := func() {
		kib, _ := procRSS(job.Process.Pid)
		line := fmt.Sprintf("  %6.0fs  %-8s RSS %5d MiB", time.Since(jobStart).Seconds(), phase, kib/1024)
		if rep, in, ok := readIntegration(reportPath, down.id); ok {
			line += fmt.Sprintf("; %s (report, ≤ 10 s old): pending %d, overflowed %d, delivered %d", down.id, in.Pending, in.Overflowed, in.Delivered)
			if n := rep.LedgerFirings - ledger[1]; n > 0 {
				line += fmt.Sprintf("; ledger state %.0f bytes a firing", float64(rep.LedgerBytes-ledger[0])/float64(n))
			}
			ledger = [2]int64{rep.LedgerBytes, rep.LedgerFirings}
		}
		st := down.sim.Status()
		fmt.Printf("%s; received %d, refused %d requests\n", line, st.UniqueEvents, st.Unavailable+st.Failed)
	}
	tick := func() bool {
		if time.Since(lastScan) >= time.Second {
			objs.scan(false)
			lastScan = time.Now()
		}
		if time.Since(lastProgress) >= outageProgress {
			progress()
			lastProgress = time.Now()
		}
		return false
	}

	// The three phases, back to back: [bounds[i], bounds[i+1]).
	var bounds [4]time.Time
	bounds[0] = time.Now()
	// The job's CPU time at each bound and at the end of the drain.
	var cpu [5]time.Duration
	var cpuAt [5]time.Time
	sampleCPU := func(i int) {
		cpu[i], _ = procCPU(job.Process.Pid)
		cpuAt[i] = time.Now()
	}
	sampleCPU(0)
	lengths := [3]time.Duration{warmup, *outageLen, *outageRecovery}
	probes := startDownSampler(down.sim)
	var downUp [2]time.Time // when the down webhook was set down, and up again: sampled then
	for i := range 3 {
		phase = outagePhases[i]
		rss.mark(i + 1)
		switch i {
		case 1:
			down.sim.Set(outageDownOptions(down.opts))
			downUp[0] = probes.sample()
			fmt.Printf("%s is down: %s to every request\n", down.id, outageDownDesc())
		case 2:
			down.sim.Set(down.opts)
			downUp[1] = probes.sample()
			fmt.Printf("%s is back up\n", down.id)
		}
		k, end, err := run(bounds[i].Add(lengths[i]), tick)
		if err != nil {
			return err
		}
		bounds[i+1] = end
		sampleCPU(i + 1)
		fmt.Printf("  %-6s %8d impressions in %.1fs: %6.0f/s\n", outagePhases[i], k, end.Sub(bounds[i]).Seconds(), float64(k)/end.Sub(bounds[i]).Seconds())
	}

	// Drain: until every healthy destination has its tenant's impressions and the down
	// webhook's are delivered or dead-lettered, or -drain passes.
	phase = "drain"
	fmt.Printf("input stopped; waiting (≤ %v) for every impression to be delivered or dead-lettered…\n", *outageDrain)
	var healthyDone, allDone time.Time
	for {
		objs.scan(true)
		if healthyDone.IsZero() && outageHealthyComplete(ds, objs, want) {
			healthyDone = time.Now()
			fmt.Printf("  healthy destinations complete %.1fs after the input stopped\n", healthyDone.Sub(bounds[3]).Seconds())
		}
		if !healthyDone.IsZero() && down.sim.Status().UniqueEvents+dead.count() >= want[down.tenant] {
			allDone = time.Now()
			break
		}
		if time.Since(bounds[3]) > *outageDrain {
			fmt.Printf("  (gave up after %v: the figures cover what had arrived)\n", *outageDrain)
			break
		}
		if time.Since(lastProgress) >= outageProgress {
			progress()
			lastProgress = time.Now()
		}
		time.Sleep(time.Second)
	}
	if !allDone.IsZero() {
		fmt.Printf("  %s's impressions all delivered or dead-lettered %.1fs after the input stopped\n", down.id, allDone.Sub(bounds[3]).Seconds())
	}
	drainedRSS, _ := procRSS(job.Process.Pid)
	sampleCPU(4)
	samples := probes.finish()
	rssPhase := rss.stop()
	job.Process.Signal(syscall.SIGINT)
	if err := job.Wait(); err != nil {
		fmt.Printf("stream job: %v (exit code 3 is expected: it dead-lettered)\n", err)
	}
	job.stopped = true
	peak := maxRSSKiB(job.ProcessState)
	objs.scan(true)

	return outageReport(outageRun{ds: ds, down: down, objs: objs, imps: imps, want: want, bounds: bounds, window: window,
		rate: rate, maxPending: maxPending, deadDir: deadDir, reportPath: reportPath,
		healthyDone: !healthyDone.IsZero(), rssPhase: rssPhase, rssPeak: peak, rssDrained: drainedRSS,
		cpu: cpu, cpuAt: cpuAt, samples: samples, downUp: downUp})
}

// outageHealthyComplete says whether every destination but the down one has its
// tenant's impressions.
func outageHealthyComplete(ds []*outageDest, objs *s3Watch, want map[string]int) bool {
	for _, d := range ds {
		if d.down {
			continue
		}
		var got int
		if d.kind == "s3" {
			got, _, _ = objs.count(d.prefix)
		} else {
			got = d.sim.Status().UniqueEvents
		}
		if got < want[d.tenant] {
			return false
		}
	}
	return true
}

// deadCounter counts the lines of the dead-letter files in a folder, reading each
// file again only when its size changes.
type deadCounter struct {
	dir   string
	files map[string]deadFile
}

type deadFile struct {
	size  int64
	lines int
}

func (c *deadCounter) count() int {
	paths, _ := filepath.Glob(filepath.Join(c.dir, "*.ndjson"))
	n := 0
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			continue
		}
		f, ok := c.files[p]
		if !ok || f.size != info.Size() {
			b, err := os.ReadFile(p)
			if err != nil {
				continue
			}
			f = deadFile{size: int64(len(b)), lines: bytes.Count(b, []byte{'\n'})}
			c.files[p] = f
		}
		n += f.lines
	}
	return n
}

// readStreamReport reads a stream report; nil if it cannot.
func readStreamReport(path string) *report.Report {
	var rep report.Report
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &rep) != nil {
		return nil
	}
	return &rep
}

// readIntegration reads a stream report, and an integration's counts in it.
func readIntegration(path, id string) (*report.Report, report.Integration, bool) {
	if rep := readStreamReport(path); rep != nil {
		for _, in := range rep.Integrations {
			if in.ID == id {
				return rep, in, true
			}
		}
	}
	return nil, report.Integration{}, false
}

// outageRun is what the outage benchmark measured, for its report.
type outageRun struct {
	ds          []*outageDest
	down        *outageDest
	objs        *s3Watch
	imps        map[uuid.UUID]outageImp
	want        map[string]int
	bounds      [4]time.Time
	window      time.Duration
	rate        float64
	maxPending  int
	deadDir     string
	reportPath  string
	healthyDone bool
	rssPhase    [4]int64 // KiB: start-up, before, during, after and drain
	rssPeak     int64
	rssDrained  int64
	cpu         [5]time.Duration // the job's CPU time at bounds[0..3] and the end of the drain
	cpuAt       [5]time.Time
	samples     []downSample // the down simulator's counts, once a second and at downUp
	downUp      [2]time.Time // when the down webhook was set down, and up again
}

// outageReport prints the delays, the down webhook's accounting, the memory and the
// targets.
func outageReport(r outageRun) error {
	limit := r.window + 10*time.Second
	phaseOf := func(ms int64) int {
		for i := range 3 {
			// The last tick's impressions may carry the input's end time.
			if ms >= r.bounds[i].UnixMilli() && (ms < r.bounds[i+1].UnixMilli() || i == 2 && ms == r.bounds[3].UnixMilli()) {
				return i
			}
		}
		return -1
	}
	type figures struct {
		delays          [3][]time.Duration
		got, lost, dups int
		stray           int
		byArrival       [4]int // down webhook: received before, during, after the outage, after the input stopped
		lastAt          time.Time
		ids             map[uuid.UUID]struct{}
	}
	fig := map[string]*figures{}
	for _, d := range r.ds {
		f := &figures{ids: map[uuid.UUID]struct{}{}}
		fig[d.id] = f
		add := func(id uuid.UUID, at time.Time) {
			imp, ok := r.imps[id]
			if !ok || gen.TenantName(imp.tenant) != d.tenant {
				f.stray++
				return
			}
			if _, dup := f.ids[id]; dup {
				f.dups++
				return
			}
			f.ids[id] = struct{}{}
			if p := phaseOf(imp.ms); p >= 0 {
				f.delays[p] = append(f.delays[p], at.Sub(time.UnixMilli(imp.ms)))
			}
			switch {
			case at.Before(r.bounds[1]):
				f.byArrival[0]++
			case at.Before(r.bounds[2]):
				f.byArrival[1]++
			case at.Before(r.bounds[3]):
				f.byArrival[2]++
			default:
				f.byArrival[3]++
			}
			if at.After(f.lastAt) {
				f.lastAt = at
			}
		}
		if d.kind == "s3" {
			for path, o := range r.objs.objs {
				if !strings.HasPrefix(path, r.objs.under(d.prefix)) {
					continue
				}
				err := readObject(path, func(line []byte) error {
					var rec encode.Record
					if err := json.Unmarshal(line, &rec); err != nil {
						return err
					}
					imp := rec.Impression(d.tenant)
					add(imp.ComputeID(), o.first)
					return nil
				})
				if err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
			}
		} else {
			for id, e := range d.sim.Events() {
				u, err := uuid.Parse(id)
				if err != nil {
					f.stray++
					continue
				}
				add(u, e.First)
			}
			f.dups += d.sim.Status().Duplicates
		}
		f.got = len(f.ids)
		f.lost = r.want[d.tenant] - f.got
	}

	// The down webhook's dead letters, by impression id.
	recs, err := deadletterio.ReadLocal(filepath.Join(r.deadDir, r.down.id, "*.ndjson"))
	if err != nil {
		return fmt.Errorf("reading the dead letters: %w", err)
	}
	deadIDs := map[uuid.UUID]struct{}{}
	reasons := map[string]int{}
	deadDups, deadStray := 0, 0
	var deadByPhase [4]int // by the impression's phase: start-up, before, during, after
	var deadFirst, deadLast int64
	for _, rec := range recs {
		reason := "other: " + rec.Reason
		if strings.Contains(rec.Reason, "max_pending_impressions") {
			reason = "max_pending_impressions"
		}
		reasons[reason]++
		if rec.Impression == nil {
			deadStray++
			continue
		}
		imp := rec.Impression.Record.Impression(rec.Impression.Tenant)
		id := imp.ComputeID()
		if imp, ok := r.imps[id]; !ok || gen.TenantName(imp.tenant) != r.down.tenant {
			deadStray++
			continue
		}
		if _, dup := deadIDs[id]; dup {
			deadDups++
			continue
		}
		deadIDs[id] = struct{}{}
		deadByPhase[phaseOf(r.imps[id].ms)+1]++
		if deadFirst == 0 || r.imps[id].ms < deadFirst {
			deadFirst = r.imps[id].ms
		}
		deadLast = max(deadLast, r.imps[id].ms)
	}
	otherDead, _ := filepath.Glob(filepath.Join(r.deadDir, "*", "*.ndjson"))
	otherDeadFiles := 0
	for _, p := range otherDead {
		if filepath.Base(filepath.Dir(p)) != r.down.id {
			otherDeadFiles++
		}
	}

	// The down webhook: what was neither delivered nor dead-lettered is lost.
	df := fig[r.down.id]
	routed := r.want[r.down.tenant]
	both := 0
	for id := range deadIDs {
		if _, ok := df.ids[id]; ok {
			both++
		}
	}
	lost := routed - (df.got + len(deadIDs) - both)
	df.lost = lost

	// Delays.
	fmt.Printf("\ndelivery delay (receive time − impression time; S3: the object's upload) by the impression's phase, seconds;\n" +
		"lost: not received (the down webhook: neither received nor dead-lettered)\n")
	fmt.Printf("%-20s %8s %6s %5s", "destination", "received", "lost", "dups")
	for _, name := range outagePhases {
		fmt.Printf(" | %-19s", fmt.Sprintf("%s (%.0f/s)", name, r.rate))
	}
	fmt.Printf(" | %6s\n", "max")
	fmt.Printf("%-20s %8s %6s %5s", "", "", "", "")
	for range outagePhases {
		fmt.Printf(" | %5s %6s %6s", "p50", "p95", "p99")
	}
	fmt.Println(" |")
	var worst [3]time.Duration
	var worstID [3]string
	healthyMissing, healthyLost, healthyDups := 0, 0, 0
	for _, d := range r.ds {
		f := fig[d.id]
		name := d.id
		if d.down {
			name += " (down)"
		}
		fmt.Printf("%-20s %8d %6d %5d", name, f.got, f.lost, f.dups)
		var mx time.Duration
		for i := range 3 {
			dl := f.delays[i]
			slices.Sort(dl)
			if len(dl) == 0 {
				fmt.Printf(" | %5s %6s %6s", "-", "-", "-")
				if !d.down {
					healthyMissing++
				}
				continue
			}
			mx = max(mx, dl[len(dl)-1])
			q95 := quantile(dl, 0.95)
			fmt.Printf(" | %5.1f %6.1f %6.1f", quantile(dl, 0.5).Seconds(), q95.Seconds(), quantile(dl, 0.99).Seconds())
			if !d.down && q95 >= worst[i] {
				worst[i], worstID[i] = q95, d.id
			}
		}
		fmt.Printf(" | %6.1f", mx.Seconds())
		if f.stray > 0 {
			fmt.Printf("  (%d stray)", f.stray)
		}
		fmt.Println()
		if !d.down {
			healthyLost += max(0, f.lost)
			healthyDups += f.dups + f.stray
		}
	}

	st := r.down.sim.Status()
	fmt.Printf("\n%s, down for %v (%s to every request):\n", r.down.id, r.bounds[2].Sub(r.bounds[1]).Round(time.Second), outageDownDesc())
	fmt.Printf("  routed to it          %8d impressions (%d produced during the outage)\n", routed, countTenantIn(r.imps, r.down.tenant, r.bounds[1], r.bounds[2]))
	fmt.Printf("  delivered             %8d (received before the outage %d, during it %d, in the recovery %d, after the input stopped %d)\n",
		df.got, df.byArrival[0], df.byArrival[1], df.byArrival[2], df.byArrival[3])
	if !df.lastAt.IsZero() && df.lastAt.After(r.bounds[2]) {
		fmt.Printf("  last arrival          %.1fs after the outage ended\n", df.lastAt.Sub(r.bounds[2]).Seconds())
	}
	fmt.Printf("  dead-lettered         %8d impressions in %d records under %s", len(deadIDs), len(recs), filepath.Join(r.deadDir, r.down.id))
	var rk []string
	for k := range reasons {
		rk = append(rk, k)
	}
	sort.Strings(rk)
	for _, k := range rk {
		fmt.Printf("; %s: %d", k, reasons[k])
	}
	fmt.Println()
	if len(deadIDs) > 0 {
		fmt.Printf("  dead-lettered by the impression's phase: start-up %d, before %d, during %d, after %d; "+
			"impression times from %+.1fs to %+.1fs of the outage's start, %+.1fs of its end\n",
			deadByPhase[0], deadByPhase[1], deadByPhase[2], deadByPhase[3],
			time.UnixMilli(deadFirst).Sub(r.bounds[1]).Seconds(), time.UnixMilli(deadLast).Sub(r.bounds[1]).Seconds(),
			time.UnixMilli(deadLast).Sub(r.bounds[2]).Seconds())
	}
	if deadDups > 0 || deadStray > 0 {
		fmt.Printf("  dead letters repeated %d, not its impressions %d\n", deadDups, deadStray)
	}
	fmt.Printf("  both delivered and dead-lettered %d\n", both)
	fmt.Printf("  lost = routed − delivered − dead-lettered (+ both) = %d\n", lost)
	if rep, in, ok := readIntegration(r.reportPath, r.down.id); ok {
		fmt.Printf("  stream's report: impressions %d, delivered %d, dead_lettered %d, overflowed %d, requests %d, throttled %d, retries %d\n",
			in.Impressions, in.Delivered, in.DeadLettered, in.Overflowed, in.Requests, in.Throttled, in.Retries)
		if rep.LedgerFirings > 0 {
			fmt.Printf("  offset ledger: %d bytes of state written in %d firings, %.0f a firing (the progress lines give it per phase)\n",
				rep.LedgerBytes, rep.LedgerFirings, float64(rep.LedgerBytes)/float64(rep.LedgerFirings))
		}
	}
	fmt.Printf("  simulator: %d requests, %d answered 503, %d another 5xx, %d accepted, %d duplicates\n",
		st.Requests, st.Unavailable, st.Failed, st.Accepted, st.Duplicates)
	if otherDeadFiles > 0 {
		fmt.Printf("  (!) %d dead-letter files of other integrations\n", otherDeadFiles)
	}

	fmt.Printf("\nstream job RSS: peak %d MiB (getrusage); sampled peak: start-up %d, before %d, during %d, after and drain %d MiB; at the end of the drain %d MiB\n",
		r.rssPeak/1024, r.rssPhase[0]/1024, r.rssPhase[1]/1024, r.rssPhase[2]/1024, r.rssPhase[3]/1024, r.rssDrained/1024)

	fmt.Printf("stream job CPU, cores used on average (the machine has %d): ", numCPU())
	for i, name := range []string{"before", "during", "after", "drain"} {
		if d := r.cpuAt[i+1].Sub(r.cpuAt[i]); d > 0 && r.cpu[i+1] > 0 {
			fmt.Printf("%s %.2f  ", name, r.cpu[i+1].Seconds()/d.Seconds())
		}
	}
	fmt.Println()

	issue, err := outageIssueFigures(r)
	if err != nil {
		return err
	}

	// Targets.
	fmt.Printf("\n== summary ==\n  %-62s | measured\n", "target")
	line := func(target, measured string, ok bool) {
		verdict := "FAIL"
		if ok {
			verdict = "PASS"
		}
		fmt.Printf("  %-62s | %s  %s\n", target, measured, verdict)
	}
	for i, name := range outagePhases {
		line(fmt.Sprintf("healthy destinations: p95 delay ≤ window + 10 s = %v, %s", limit, name),
			fmt.Sprintf("worst %.1fs (%s)", worst[i].Seconds(), worstID[i]), worst[i] <= limit && healthyMissing == 0)
	}
	line("healthy destinations: every impression exactly once",
		fmt.Sprintf("%d lost, %d duplicated or stray", healthyLost, healthyDups), healthyLost == 0 && healthyDups == 0 && r.healthyDone)
	line(fmt.Sprintf("%s: nothing lost (delivered or dead-lettered)", r.down.id),
		fmt.Sprintf("%d lost of %d (%d delivered, %d dead-lettered)", lost, routed, df.got, len(deadIDs)), lost == 0)
	issue.summary(line)
	overflow := "none"
	if reasons["max_pending_impressions"] > 0 {
		overflow = fmt.Sprintf("%d dead-lettered beyond max_pending_impressions %d, as designed", reasons["max_pending_impressions"], r.maxPending)
	}
	fmt.Printf("  %-62s | %s\n", "overflow (no target)", overflow)
	fmt.Printf("  %-62s | %d MiB (before the outage %d MiB, during %d MiB)\n", "stream job's peak RSS (no target)",
		r.rssPeak/1024, r.rssPhase[1]/1024, r.rssPhase[2]/1024)
	return nil
}

// countTenantIn counts the impressions of tenant with times in [from, to).
func countTenantIn(imps map[uuid.UUID]outageImp, tenant string, from, to time.Time) int {
	n := 0
	for _, imp := range imps {
		if gen.TenantName(imp.tenant) == tenant && imp.ms >= from.UnixMilli() && imp.ms < to.UnixMilli() {
			n++
		}
	}
	return n
}
