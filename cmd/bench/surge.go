package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/klauspost/compress/gzip"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/gen"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/s3server"
	"github.com/outflow/outflow/io/objectio"
)

// Flags of -mode surge; -n (the catch-up backlog), -tenants and -files are shared.
var (
	surgePhase     = flag.Duration("phase", 60*time.Second, "surge: how long each phase (before, during and after the surge) lasts")
	surgeRate      = flag.Float64("surge-rate", 0, "surge: R, the steady input in impressions/s (0: a tenth of the measured catch-up rate)")
	surgeFactor    = flag.Float64("surge-factor", 10, "surge: the surge's input as a multiple of R")
	surgeWindow    = flag.Duration("window", 10*time.Second, "surge: every integration's window")
	surgeWarmup    = flag.Duration("warmup", 15*time.Second, "surge: steady input at R after the job's first deliveries, before the first phase")
	surgeThrottled = flag.Bool("throttled", true, "surge: add a second Amplitude for tenant 0 whose destination takes 1 request/s; stream: a second webhook for tenant 0 that takes 1 request/s")
)

const (
	// surgeDefaultN is -n for -mode surge when the flag is not given.
	surgeDefaultN = 200_000
	// surgeBacklogSpan is the event time the catch-up backlog covers: the job was down
	// this long.
	surgeBacklogSpan = 5 * time.Minute
	// surgeTick is how often the live input is produced.
	surgeTick = 100 * time.Millisecond
	// surgeDrainLimit is the drain target: back within window + 10 s this soon after the
	// surge ends.
	surgeDrainLimit = 2 * time.Minute
)

// Destination limits: generous for the healthy ones (above the config's defaults, 20
// requests/s for a webhook and 100 for Amplitude, so they never answer 429), one
// request a second for the throttled Amplitude.
const (
	surgeHookLimit      = 100
	surgeAmpLimit       = 200
	surgeThrottledLimit = 1
)

// surgeDest is one integration of the surge benchmark: an S3 prefix or an HTTP
// destination simulator.
type surgeDest struct {
	id, tenant string
	kind       string // s3, webhook or amplitude
	prefix     string // s3: the objects' prefix in the bucket
	sim        *destsim.Server
	throttled  bool
}

// surgeBench is what the surge benchmark's runs share.
type surgeBench struct {
	dir      string
	tenants  int
	window   time.Duration
	s3       *s3server.Server
	s3Root   string // where the S3 server keeps the bucket's objects as files
	kafka    *kfake.Cluster
	producer *kgo.Client
	streamB  string // binaries
	backB    string
}

// benchSurge runs the issue 13 surge benchmark; see README.md (Benchmarks).
func benchSurge(n, tenants, files int, dir string) error {
	if !flagGiven("n") {
		n = surgeDefaultN
	}
	b := &surgeBench{dir: dir, tenants: tenants, window: *surgeWindow}
	// Not in dir itself: the runs' folders (dead letters, the backfill's job records)
	// are named after them.
	binDir := filepath.Join(dir, "bin")
	b.streamB, b.backB = filepath.Join(binDir, "stream"), filepath.Join(binDir, "backfill")
	fmt.Println("building the stream job and the backfill…")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return err
	}
	if err := command("go", "build", "-o", binDir+string(filepath.Separator), "./pipelines/stream", "./pipelines/backfill").Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	var err error
	if b.s3, err = s3server.Start(filepath.Join(dir, "s3")); err != nil {
		return err
	}
	defer b.s3.Close()
	if err := b.s3.CreateBucket("bench"); err != nil {
		return err
	}
	b.s3Root = filepath.Join(dir, "s3", "buckets", "bench")
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"} {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	if b.kafka, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "backlog", "surge")); err != nil {
		return err
	}
	defer b.kafka.Close()
	if b.producer, err = kgo.NewClient(kgo.SeedBrokers(b.kafka.ListenAddrs()...),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.ProducerLinger(5*time.Millisecond)); err != nil {
		return err
	}
	defer b.producer.Close()

	var sum surgeSummary
	if err := b.catchup(&sum, n, files); err != nil {
		return err
	}
	r := *surgeRate
	if r <= 0 {
		r = math.Round(sum.streamRate / 10)
		fmt.Printf("\nR = a tenth of the stream's catch-up rate: %.0f impressions/s\n", r)
	}
	if r < 1 {
		return fmt.Errorf("R = %v impressions/s is too low", r)
	}
	if err := b.surge(&sum, r); err != nil {
		return err
	}
	sum.print(b.window)
	return nil
}

// surgeSummary gathers the figures the targets are checked against.
type surgeSummary struct {
	// Catch-up: impressions/s from the command's start to the last arrival.
	streamRate, backfillRate float64
	streamRSS, backfillRSS   int64 // KiB
	// Surge.
	r, surgeX          float64
	worstBefore        time.Duration
	worstBeforeID      string
	healthyMissing     int // healthy destinations with no impressions in a phase
	neighbour          string
	neighbourRatio     [3]float64 // per phase; NaN when not measured
	worstDrain         time.Duration
	worstDrainID       string
	drainUnknown       bool // some healthy destination was still behind at the end
	rssPhase           [4]int64
	rssPeak            int64
	throttledDelivered string
}

// dests creates the integrations of a run (S3, webhook and Amplitude per tenant, and
// the throttled Amplitude if asked) under label, and writes their config.
func (b *surgeBench) dests(label string, throttled bool) ([]*surgeDest, string, error) {
	var ds []*surgeDest
	for i := range b.tenants {
		t := gen.TenantName(i)
		ds = append(ds, &surgeDest{id: t + "-s3", tenant: t, kind: "s3", prefix: label + "/" + t},
			&surgeDest{id: t + "-hook", tenant: t, kind: "webhook"},
			&surgeDest{id: t + "-amplitude", tenant: t, kind: "amplitude"})
	}
	if throttled {
		t := gen.TenantName(0)
		ds = append(ds, &surgeDest{id: t + "-amplitude-throttled", tenant: t, kind: "amplitude", throttled: true})
	}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "dead_letter: %s\nallow_private_destinations: true\nintegrations:\n", filepath.Join(b.dir, label, "dead-letter"))
	for _, d := range ds {
		var err error
		switch d.kind {
		case "s3":
			fmt.Fprintf(&cfg, "  - {id: %s, tenant: %s, type: s3, window: %s, s3: {bucket: bench, prefix: %s, endpoint: %q}}\n",
				d.id, d.tenant, b.window, d.prefix, b.s3.Endpoint)
		case "webhook":
			if d.sim, err = destsim.Start(destsim.Options{Kind: destsim.Webhook, Secret: benchSecret, Tenant: d.tenant,
				RateLimit: surgeHookLimit, NoBodies: true}); err != nil {
				return ds, "", err
			}
			fmt.Fprintf(&cfg, "  - {id: %s, tenant: %s, type: webhook, window: %s, webhook: {url: %q, secret: %q}}\n",
				d.id, d.tenant, b.window, d.sim.URL()+"/hook", benchSecret)
		case "amplitude":
			key, limit := "key-"+d.id, float64(surgeAmpLimit)
			if d.throttled {
				limit = surgeThrottledLimit
			}
			if d.sim, err = destsim.Start(destsim.Options{Kind: destsim.Amplitude, APIKey: key, RateLimit: limit, NoBodies: true}); err != nil {
				return ds, "", err
			}
			fmt.Fprintf(&cfg, "  - {id: %s, tenant: %s, type: amplitude, window: %s, amplitude: {api_key: %q, endpoint: %q}}\n",
				d.id, d.tenant, b.window, key, d.sim.URL())
		}
	}
	path := filepath.Join(b.dir, label+".yaml")
	return ds, path, os.WriteFile(path, []byte(cfg.String()), 0o644)
}

func closeDests(ds []*surgeDest) {
	for _, d := range ds {
		if d.sim != nil {
			d.sim.Close()
		}
	}
}

// arrivals says, for each destination but the throttled one, whether it has received
// want[tenant] impressions, and the first and last arrival across them (zero if none).
func arrivals(ds []*surgeDest, objs *s3Watch, want map[string]int) (complete bool, first, last time.Time) {
	complete = true
	note := func(f, l time.Time) {
		if !f.IsZero() && (first.IsZero() || f.Before(first)) {
			first = f
		}
		if l.After(last) {
			last = l
		}
	}
	for _, d := range ds {
		if d.throttled {
			continue
		}
		var got int
		if d.kind == "s3" {
			var f, l time.Time
			got, f, l = objs.count(d.prefix)
			note(f, l)
		} else {
			st := d.sim.Status()
			got = st.UniqueEvents
			note(st.FirstAccepted, st.LastAccepted)
		}
		if got < want[d.tenant] {
			complete = false
		}
	}
	return complete, first, last
}

// catchup measures how fast the stream job catches up on a backlog of n impressions
// produced before it starts, then the backfill on the same impressions written to
// files, both to the same (fresh) destinations, the throttled one left out.
func (b *surgeBench) catchup(sum *surgeSummary, n, files int) error {
	o := gen.Options{N: n, Tenants: b.tenants, Seed: 13, Start: time.Now().Add(-surgeBacklogSpan - time.Minute).Truncate(time.Second),
		Span: surgeBacklogSpan}
	fmt.Printf("\n== catch-up: a backlog of %d impressions (%v of event time, %d tenants), then the backfill on the same impressions ==\n",
		n, o.Span, b.tenants)
	want := map[string]int{}
	var recs []*kgo.Record
	flush := func() error {
		err := b.producer.ProduceSync(context.Background(), recs...).FirstErr()
		recs = recs[:0]
		return err
	}
	err := gen.Lines(o, func(line []byte, _ string) error {
		imp, err := impression.Parse(line)
		if err != nil {
			return err
		}
		want[imp.Tenant]++
		recs = append(recs, &kgo.Record{Topic: "backlog", Value: line, Timestamp: time.UnixMilli(imp.Time)})
		if len(recs) == 10000 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("producing the backlog: %w", err)
	}
	input := filepath.Join(b.dir, "input")
	if err := gen.WriteFiles(input, files, true, o); err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	fmt.Printf("produced to the topic (record times = impression times, 4 partitions) and written to %d gzip files\n", files)

	// The stream job.
	ds, cfg, err := b.dests("catchup", false)
	defer closeDests(ds)
	if err != nil {
		return err
	}
	objs := newS3Watch(b.s3Root, "catchup")
	job := exec.Command(b.streamB, "--config", cfg, "--brokers", strings.Join(b.kafka.ListenAddrs(), ","),
		"--topic", "backlog", "--group", "catchup", "--shutdown-timeout", "10s")
	job.Stderr = os.Stderr
	start := time.Now()
	if err := job.Start(); err != nil {
		return err
	}
	var first, last time.Time
	for done := false; !done; {
		time.Sleep(500 * time.Millisecond)
		objs.scan(true)
		done, first, last = arrivals(ds, objs, want)
		if !done && time.Since(start) > 10*time.Minute {
			job.Process.Kill()
			job.Wait()
			return errors.New("the stream job did not deliver the backlog within 10 minutes")
		}
	}
	job.Process.Signal(syscall.SIGINT)
	job.Wait()
	sum.streamRSS = maxRSSKiB(job.ProcessState)
	took := last.Sub(start)
	sum.streamRate = float64(n) / took.Seconds()
	fmt.Printf("stream job:  %7d impressions to %d destinations in %5.1fs from its start: %6.0f impressions/s (first arrival to last: %.1fs, %.0f/s); peak RSS %d MiB\n",
		n, len(ds), took.Seconds(), sum.streamRate, last.Sub(first).Seconds(), float64(n)/last.Sub(first).Seconds(), sum.streamRSS/1024)
	if err := duplicates(ds, objs, want); err != nil {
		return fmt.Errorf("stream catch-up: %w", err)
	}

	// The backfill, on the same impressions, to fresh destinations.
	bds, bcfg, err := b.dests("backfill", false)
	defer closeDests(bds)
	if err != nil {
		return err
	}
	run, err := startBackfill(b.backB, bcfg, filepath.Join(input, "*.gz"), filepath.Join(b.dir, "backfill-report.json"))
	if err != nil {
		return err
	}
	res := run.wait(10 * time.Minute)
	if res.err != nil {
		return res.err
	}
	if res.killed || res.code != 0 {
		return fmt.Errorf("backfill: exit %s", res.exitString())
	}
	bobjs := newS3Watch(b.s3Root, "backfill")
	var done bool
	var bfirst, blast time.Time
	for wait := time.Now().Add(5 * time.Second); !done && time.Now().Before(wait); {
		time.Sleep(400 * time.Millisecond) // the newest objects settle (s3Watch.scan)
		bobjs.scan(true)
		done, bfirst, blast = arrivals(bds, bobjs, want)
	}
	if !done {
		return errors.New("the backfill exited 0 but did not deliver every impression")
	}
	sum.backfillRSS = res.rssKiB
	btook := blast.Sub(run.start)
	sum.backfillRate = float64(n) / btook.Seconds()
	fmt.Printf("backfill:    %7d impressions to %d destinations in %5.1fs from its start: %6.0f impressions/s (first arrival to last: %.1fs, %.0f/s; whole command %.1fs); peak RSS %d MiB\n",
		n, len(bds), btook.Seconds(), sum.backfillRate, blast.Sub(bfirst).Seconds(), float64(n)/blast.Sub(bfirst).Seconds(),
		res.elapsed.Seconds(), sum.backfillRSS/1024)
	fmt.Printf("stream / backfill: %.2f\n", sum.streamRate/sum.backfillRate)
	// S3 mtimes of the backfill's objects are read after it ended: they are still the
	// upload times, the files are not touched again.
	return duplicates(bds, bobjs, want)
}

// duplicates fails if a destination received more than its tenant's impressions.
func duplicates(ds []*surgeDest, objs *s3Watch, want map[string]int) error {
	for _, d := range ds {
		if d.throttled {
			continue
		}
		if d.kind == "s3" {
			if got, _, _ := objs.count(d.prefix); got != want[d.tenant] {
				return fmt.Errorf("%s holds %d impressions, want %d", d.id, got, want[d.tenant])
			}
		} else if st := d.sim.Status(); st.Duplicates > 0 || st.UniqueEvents != want[d.tenant] {
			return fmt.Errorf("%s received %d impressions and %d duplicates, want %d", d.id, st.UniqueEvents, st.Duplicates, want[d.tenant])
		}
	}
	return nil
}

// phase names, in order; warm-up impressions are in none.
var surgePhases = [3]string{"before", "during", "after"}

// surge runs the stream job on a fresh topic at R, then surgeX × R, then R again, and
// reports the delay each destination saw in each phase.
func (b *surgeBench) surge(sum *surgeSummary, r float64) error {
	x, phase := *surgeFactor, *surgePhase
	sum.r, sum.surgeX = r, x
	fmt.Printf("\n== surge: %.0f impressions/s, then %.0f/s, then %.0f/s, %v each; window %v; %d tenants × (S3, webhook, Amplitude)",
		r, r*x, r, phase, b.window, b.tenants)
	if *surgeThrottled {
		fmt.Printf(" + %s-amplitude-throttled (1 request/s)", gen.TenantName(0))
	}
	fmt.Println(" ==")
	ds, cfg, err := b.dests("surge", *surgeThrottled)
	defer closeDests(ds)
	if err != nil {
		return err
	}
	objs := newS3Watch(b.s3Root, "surge")

	// Every impression produced: its id and time, and how many each tenant got.
	times := map[uuid.UUID]int64{}
	want := map[string]int{}
	seed := uint64(1000)
	produce := func(from, to time.Time, count int) error {
		seed++
		return produceGenerated(b.producer, "surge", b.tenants, seed, from, to, count, func(imp *impression.Impression) {
			times[imp.ID] = imp.Time
			want[imp.Tenant]++
		})
	}
	run := func(rate float64, until time.Time, stop func() bool) (int, time.Time, error) {
		return paced(rate, until, stop, produce)
	}

	job, err := startStream(b.streamB, "--config", cfg, "--brokers", strings.Join(b.kafka.ListenAddrs(), ","),
		"--topic", "surge", "--group", "surge", "--shutdown-timeout", "5s")
	if err != nil {
		return err
	}
	defer job.kill()
	rss := startRSSSampler(job.Process.Pid)

	// Warm-up: R until every healthy destination has something, then -warmup more.
	jobStart := time.Now()
	fmt.Printf("warm-up at %.0f/s until the job delivers everywhere, then %v…\n", r, *surgeWarmup)
	if _, _, err := run(r, time.Time{}, func() bool {
		objs.scan(false)
		for _, d := range ds {
			if d.throttled {
				continue
			}
			if (d.kind == "s3" && objs.objects(d.prefix) == 0) || (d.sim != nil && d.sim.Status().UniqueEvents == 0) {
				return time.Since(jobStart) > 5*time.Minute
			}
		}
		return true
	}); err != nil {
		return err
	}
	if time.Since(jobStart) > 5*time.Minute {
		return errors.New("the stream job delivered nothing to some destination within 5 minutes")
	}
	fmt.Printf("first deliveries everywhere %.1fs after the job started\n", time.Since(jobStart).Seconds())
	// While the input runs, new objects are noted every second (their upload times).
	lastScan := time.Now()
	scan := func() bool {
		if time.Since(lastScan) >= time.Second {
			objs.scan(false)
			lastScan = time.Now()
		}
		return false
	}
	if _, _, err := run(r, time.Now().Add(*surgeWarmup), scan); err != nil {
		return err
	}

	// The three phases, back to back: [bounds[i], bounds[i+1]).
	var bounds [4]time.Time
	bounds[0] = time.Now()
	rss.mark(1)
	for i, rate := range []float64{r, r * x, r} {
		k, end, err := run(rate, bounds[i].Add(phase), scan)
		if err != nil {
			return err
		}
		bounds[i+1] = end
		rss.mark(i + 2)
		fmt.Printf("  %-6s %7d impressions in %.1fs: %6.0f/s\n", surgePhases[i], k, end.Sub(bounds[i]).Seconds(), float64(k)/end.Sub(bounds[i]).Seconds())
	}
	fmt.Println("input stopped; waiting for the healthy destinations to receive everything…")
	var healthyDone time.Time
	for {
		objs.scan(true)
		if done, _, _ := arrivals(ds, objs, want); done {
			healthyDone = time.Now()
			break
		}
		if time.Since(bounds[3]) > 10*time.Minute {
			fmt.Println("  (gave up after 10 minutes: figures cover what had arrived)")
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !healthyDone.IsZero() {
		fmt.Printf("healthy destinations complete %.1fs after the input stopped\n", healthyDone.Sub(bounds[3]).Seconds())
	}
	rssPhase := rss.stop()
	job.Process.Signal(syscall.SIGINT)
	job.Wait()
	job.stopped = true
	sum.rssPeak = maxRSSKiB(job.ProcessState)
	sum.rssPhase = rssPhase
	objs.scan(false)

	// Delays per destination and phase, and the drain: the last arrival of an
	// impression later than window + 10 s, from the surge's end.
	limit := b.window + 10*time.Second
	phaseOf := func(ms int64) int {
		for i := range 3 {
			if ms >= bounds[i].UnixMilli() && ms < bounds[i+1].UnixMilli() {
				return i
			}
		}
		return -1
	}
	type figures struct {
		delays   [3][]time.Duration
		lastLate time.Time
		got      int
		stray    int
		dups     int
	}
	fig := map[string]*figures{}
	for _, d := range ds {
		f := &figures{}
		fig[d.id] = f
		add := func(ms int64, at time.Time) {
			p := phaseOf(ms)
			if p < 0 {
				return
			}
			delay := at.Sub(time.UnixMilli(ms))
			f.delays[p] = append(f.delays[p], delay)
			if delay > limit && at.After(f.lastLate) {
				f.lastLate = at
			}
		}
		if d.kind == "s3" {
			err := objs.lines(d.prefix, func(ms int64, at time.Time) {
				f.got++
				add(ms, at)
			})
			if err != nil {
				return err
			}
			f.dups = max(0, f.got-want[d.tenant])
			continue
		}
		for id, e := range d.sim.Events() {
			u, err := uuid.Parse(id)
			ms, ok := times[u]
			if err != nil || !ok {
				f.stray++
				continue
			}
			f.got++
			add(ms, e.First)
		}
		f.dups = d.sim.Status().Duplicates
	}

	fmt.Printf("\ndelivery delay (receive time − impression time; S3: the object's upload) by the impression's phase, seconds;\n" +
		"drain: the last arrival later than window + 10 s, after the surge's end (-: none after it)\n")
	fmt.Printf("%-26s %-9s", "destination", "received")
	for i, name := range surgePhases {
		rate := r
		if i == 1 {
			rate = r * x
		}
		fmt.Printf(" | %-19s", fmt.Sprintf("%s (%.0f/s)", name, rate))
	}
	fmt.Printf(" | %7s %6s\n", "drain", "max")
	fmt.Printf("%-26s %-9s", "", "")
	for range surgePhases {
		fmt.Printf(" | %5s %6s %6s", "p50", "p95", "p99")
	}
	fmt.Printf(" | %7s %6s\n", "", "")
	p95 := map[string][3]time.Duration{}
	sum.neighbourRatio = [3]float64{math.NaN(), math.NaN(), math.NaN()}
	for _, d := range ds {
		f := fig[d.id]
		fmt.Printf("%-26s %-9s", d.id, fmt.Sprintf("%.3f", float64(f.got)/float64(max(1, want[d.tenant]))))
		var q95 [3]time.Duration
		var worst time.Duration
		for i := range 3 {
			dl := f.delays[i]
			slices.Sort(dl)
			if len(dl) == 0 {
				fmt.Printf(" | %5s %6s %6s", "-", "-", "-")
				if !d.throttled {
					sum.healthyMissing++
				}
				continue
			}
			worst = max(worst, dl[len(dl)-1])
			q95[i] = quantile(dl, 0.95)
			fmt.Printf(" | %5.1f %6.1f %6.1f", quantile(dl, 0.5).Seconds(), q95[i].Seconds(), quantile(dl, 0.99).Seconds())
		}
		p95[d.id] = q95
		drain := "-"
		if f.lastLate.After(bounds[2]) {
			drain = fmt.Sprintf("%.1fs", f.lastLate.Sub(bounds[2]).Seconds())
		}
		if (!d.throttled && healthyDone.IsZero()) || (d.throttled && f.got < want[d.tenant]) {
			drain = "behind" // the last late arrivals are still to come
		}
		fmt.Printf(" | %7s %6.1f", drain, worst.Seconds())
		if f.stray > 0 || f.dups > 0 {
			fmt.Printf("  (%d duplicates, %d stray)", f.dups, f.stray)
		}
		fmt.Println()
		if d.throttled {
			sum.throttledDelivered = fmt.Sprintf("%s: %d of %d impressions delivered by the end (%.0f%%), max delay %.0fs",
				d.id, f.got, want[d.tenant], 100*float64(f.got)/float64(max(1, want[d.tenant])), worst.Seconds())
			continue
		}
		if q95[0] >= sum.worstBefore {
			sum.worstBefore, sum.worstBeforeID = q95[0], d.id
		}
		if healthyDone.IsZero() {
			sum.drainUnknown = true
		} else if dr := f.lastLate.Sub(bounds[2]); f.lastLate.After(bounds[2]) && dr >= sum.worstDrain {
			sum.worstDrain, sum.worstDrainID = dr, d.id
		}
	}
	// The throttled Amplitude's neighbour: the healthy Amplitude of the next tenant,
	// against the mean of the other healthy Amplitudes.
	if *surgeThrottled && b.tenants >= 2 {
		sum.neighbour = gen.TenantName(1) + "-amplitude"
		for i := range 3 {
			var others []time.Duration
			for _, d := range ds {
				if d.kind == "amplitude" && !d.throttled && d.id != sum.neighbour {
					others = append(others, p95[d.id][i])
				}
			}
			var mean time.Duration
			for _, o := range others {
				mean += o / time.Duration(len(others))
			}
			if len(others) > 0 && mean > 0 {
				sum.neighbourRatio[i] = p95[sum.neighbour][i].Seconds() / mean.Seconds()
			}
		}
	}
	fmt.Printf("\nstream job RSS: peak %d MiB (getrusage); sampled peak per phase: warm-up %d, before %d, during %d, after and drain %d MiB\n",
		sum.rssPeak/1024, rssPhase[0]/1024, rssPhase[1]/1024, rssPhase[2]/1024, rssPhase[3]/1024)
	return nil
}

func quantile(sorted []time.Duration, p float64) time.Duration {
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

func (s *surgeSummary) print(window time.Duration) {
	limit := window + 10*time.Second
	fmt.Printf("\n== summary ==\n  %-62s | measured\n", "target")
	line := func(target, measured string, ok bool) {
		verdict := "MISSED"
		if ok {
			verdict = "ok"
		}
		fmt.Printf("  %-62s | %s  %s\n", target, measured, verdict)
	}
	line(fmt.Sprintf("healthy destinations: p95 delay ≤ window + 10 s = %v at R", limit),
		fmt.Sprintf("worst %.1fs (%s) at R = %.0f/s before the surge", s.worstBefore.Seconds(), s.worstBeforeID, s.r),
		s.worstBefore <= limit && s.healthyMissing == 0)
	if s.neighbour != "" {
		ok, parts := true, make([]string, 3)
		for i, v := range s.neighbourRatio {
			parts[i] = fmt.Sprintf("%s %.2f", surgePhases[i], v)
			ok = ok && v <= 1.2
		}
		line(fmt.Sprintf("throttled's neighbour %s: p95 ≤ 1.2× the others'", s.neighbour),
			strings.Join(parts, ", ")+" (÷ mean p95 of the other healthy Amplitudes)", ok)
	}
	switch {
	case s.drainUnknown:
		line(fmt.Sprintf("back within %v ≤ %v after the surge ends", limit, surgeDrainLimit), "still behind at the end", false)
	case s.worstDrainID == "":
		line(fmt.Sprintf("back within %v ≤ %v after the surge ends", limit, surgeDrainLimit), "never later than that after the surge's end", true)
	default:
		line(fmt.Sprintf("back within %v ≤ %v after the surge ends", limit, surgeDrainLimit),
			fmt.Sprintf("worst %.1fs (%s)", s.worstDrain.Seconds(), s.worstDrainID), s.worstDrain <= surgeDrainLimit)
	}
	line("stream catch-up ≥ 0.5 × the backfill's rate",
		fmt.Sprintf("%.0f/s vs %.0f/s: %.2f", s.streamRate, s.backfillRate, s.streamRate/s.backfillRate), s.streamRate >= 0.5*s.backfillRate)
	fmt.Printf("  %-62s | %d MiB (%.0f/s then %.0f/s; the catch-up job %d MiB, the backfill %d MiB)\n",
		"stream job's peak RSS in the surge (no target)", s.rssPeak/1024, s.r, s.r*s.surgeX, s.streamRSS/1024, s.backfillRSS/1024)
	if s.throttledDelivered != "" {
		fmt.Printf("  %-62s | %s\n", "throttled destination (not judged)", s.throttledDelivered)
	}
}

// s3Watch follows the objects the S3 server keeps as files: the first time each was
// seen (its modification time then: when its upload ended) and its impressions.
type s3Watch struct {
	root, walk string               // the bucket's folder, the part of it scanned
	objs       map[string]*s3Object // by path
}

type s3Object struct {
	first time.Time
	lines int // -1 until read
}

// newS3Watch follows the objects under label/ in the bucket kept in root.
func newS3Watch(root, label string) *s3Watch {
	return &s3Watch{root: root, walk: filepath.Join(root, label), objs: map[string]*s3Object{}}
}

// scan notes new objects and, if read, counts the impressions of those not written to
// for 300 ms (an upload may still be writing the newest).
func (w *s3Watch) scan(read bool) {
	now := time.Now()
	filepath.WalkDir(w.walk, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || e.Name() == objectio.LeaseName { // the job's lease is no data
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return nil
		}
		o := w.objs[path]
		if o == nil {
			o = &s3Object{first: info.ModTime(), lines: -1}
			w.objs[path] = o
		}
		if read && o.lines < 0 && now.Sub(info.ModTime()) > 300*time.Millisecond {
			n := 0
			if readObject(path, func([]byte) error { n++; return nil }) == nil {
				o.lines = n
			}
		}
		return nil
	})
}

func (w *s3Watch) under(prefix string) string {
	return filepath.Join(w.root, filepath.FromSlash(prefix)) + string(filepath.Separator)
}

// objects is how many objects there are under prefix.
func (w *s3Watch) objects(prefix string) int {
	n := 0
	for path := range w.objs {
		if strings.HasPrefix(path, w.under(prefix)) {
			n++
		}
	}
	return n
}

// count is how many impressions the read objects under prefix hold, and the first and
// last of their upload times.
func (w *s3Watch) count(prefix string) (n int, first, last time.Time) {
	for path, o := range w.objs {
		if !strings.HasPrefix(path, w.under(prefix)) || o.lines < 0 {
			continue
		}
		n += o.lines
		if first.IsZero() || o.first.Before(first) {
			first = o.first
		}
		if o.first.After(last) {
			last = o.first
		}
	}
	return n, first, last
}

// lines calls f with each impression's time (Unix ms) under prefix and its object's
// upload time.
func (w *s3Watch) lines(prefix string, f func(ms int64, at time.Time)) error {
	for path, o := range w.objs {
		if !strings.HasPrefix(path, w.under(prefix)) {
			continue
		}
		err := readObject(path, func(line []byte) error {
			var rec struct {
				Time int64 `json:"time"`
			}
			if err := json.Unmarshal(line, &rec); err != nil {
				return err
			}
			f(rec.Time, o.first)
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}

// readObject calls f with each line of a gzipped NDJSON object.
func readObject(path string, f func([]byte) error) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	zr, err := gzip.NewReader(file)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		if err := f(sc.Bytes()); err != nil {
			return err
		}
	}
	return sc.Err()
}

// rssSampler samples a process's resident set every 250 ms and keeps the peak of each
// stretch between marks.
type rssSampler struct {
	mu    sync.Mutex
	cur   int
	peak  [4]int64 // KiB
	done  chan struct{}
	ended chan struct{}
}

func startRSSSampler(pid int) *rssSampler {
	s := &rssSampler{done: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(s.ended)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if kib, err := procRSS(pid); err == nil {
				s.mu.Lock()
				s.peak[s.cur] = max(s.peak[s.cur], kib)
				s.mu.Unlock()
			}
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// mark starts stretch i (0: warm-up, 1-3: the phases; the last runs to stop).
func (s *rssSampler) mark(i int) {
	s.mu.Lock()
	s.cur = min(i, len(s.peak)-1)
	s.mu.Unlock()
}

func (s *rssSampler) stop() [4]int64 {
	close(s.done)
	<-s.ended
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// procRSS is a running process's resident set in KiB, from /proc/<pid>/status.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// paced produces rate impressions/s from now until until (or until stop says so):
// each tick, the impressions of the interval since the last one, with times in it.
// It returns how many it produced and when it stopped.
func paced(rate float64, until time.Time, stop func() bool, produce func(from, to time.Time, n int) error) (int, time.Time, error) {
	prev, carry, total := time.Now(), 0.0, 0
	t := time.NewTicker(surgeTick)
	defer t.Stop()
	for {
		<-t.C
		now := time.Now()
		if !until.IsZero() && now.After(until) {
			now = until
		}
		due := rate*now.Sub(prev).Seconds() + carry
		k := int(due)
		carry = due - float64(k)
		if err := produce(prev, now, k); err != nil {
			return total, now, err
		}
		total += k
		prev = now
		if (!until.IsZero() && !now.Before(until)) || (stop != nil && stop()) {
			return total, now, nil
		}
	}
}

// streamJob is the stream job a bench runs, as a process of its own.
type streamJob struct {
	*exec.Cmd
	stopped bool // waited for: kill has nothing to do
}

// startStream starts the stream binary with args, its log on this one's stderr.
func startStream(bin string, args ...string) (*streamJob, error) {
	j := &streamJob{Cmd: exec.Command(bin, args...)}
	j.Stderr = os.Stderr
	return j, j.Start()
}

// kill ends the job if it is still running.
func (j *streamJob) kill() {
	if !j.stopped {
		j.Process.Kill()
		j.Wait()
	}
}

// produceGenerated produces count generated impressions of tenants, timed within
// [from, to), to topic, showing each to seen first.
func produceGenerated(p *kgo.Client, topic string, tenants int, seed uint64, from, to time.Time, count int,
	seen func(*impression.Impression)) error {
	if count <= 0 {
		return nil
	}
	if to.Sub(from) < time.Millisecond {
		to = from.Add(time.Millisecond) // gen takes a span of 0 for a day
	}
	recs := make([]*kgo.Record, 0, count)
	err := gen.Lines(gen.Options{N: count, Tenants: tenants, Seed: seed, Start: from, Span: to.Sub(from)}, func(line []byte, _ string) error {
		imp, err := impression.Parse(line)
		if err != nil {
			return err
		}
		seen(&imp)
		recs = append(recs, &kgo.Record{Topic: topic, Value: line, Timestamp: time.UnixMilli(imp.Time)})
		return nil
	})
	if err != nil {
		return err
	}
	return p.ProduceSync(context.Background(), recs...).FirstErr()
}
