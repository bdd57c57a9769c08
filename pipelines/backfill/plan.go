package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/linefile"
	"github.com/outflow/outflow/io/impressionio"
	"github.com/outflow/outflow/pipelines/internal/sinks"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
)

// A backfill runs as independent Beam jobs, so that a slow destination's job never
// holds up the others (the incident this project answers: one queue of batch work,
// one slow job, 36 hours behind). A job is the object store integrations (or one of
// them, with --jobs-by integration), or one HTTP integration, over one time slice
// (jobGroups). Jobs run largest first, object store jobs --parallel-jobs at a time,
// HTTP jobs one at a time per destination, in slots of their own (poolOf, dispatch).

// planJob is one job of the plan.
type planJob struct {
	ID           string
	Integrations []config.Integration
	From, Until  time.Time // zero: unbounded
	Estimate     int64     // impressions expected
	// Every job reads the whole input; for the report to count each line once, one
	// job of each slice counts its valid lines, and one job of all counts (and
	// dead-letters) invalid lines, lines out of range and unreadable files.
	OwnLines, OwnRest bool
}

// planOptions shape the plan.
type planOptions struct {
	From, Until   time.Time     // --since, --until; zero: unbounded
	Slice         time.Duration // 0: the whole range is one slice
	ByIntegration bool
	// SampleBytes bounds how much of each file is read to estimate (uncompressed
	// bytes); what is not read is extrapolated from what was.
	SampleBytes int64
	// MaxJobImpressions cuts a slice into hour-aligned parts until each job is
	// estimated below it: the embedded runner keeps a job's shuffle in memory, so this
	// bounds a job's memory. 0: no bound.
	MaxJobImpressions int64
}

// defaultSampleBytes reads small files whole, and the first 4 MiB (about 12,000
// impressions) of larger ones: enough to see which tenants and hours a file holds.
const defaultSampleBytes = 4 << 20

// makePlan estimates how many impressions each job will deliver and orders the jobs
// largest first.
// It also returns the estimated lines of the whole input.
func makePlan(ctx context.Context, cfg *config.Config, files []impressionio.File, o planOptions) ([]planJob, int64, error) {
	targets := sinks.Targets(cfg.Integrations)
	est := newEstimate()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for _, f := range files {
		g.Go(func() error { return est.sample(gctx, f.Path, f.Size, targets, o) })
	}
	if err := g.Wait(); err != nil {
		return nil, 0, err
	}
	sizeShards(cfg, est)
	groups := jobGroups(cfg, o.ByIntegration)
	var jobs []planJob
	hours := est.times()
	for gi, g := range groups {
		var ids []string
		for _, in := range g {
			ids = append(ids, in.ID)
		}
		count := func(from, until time.Time) (n int64) {
			for _, id := range ids {
				n += est.count(id, from, until)
			}
			return n
		}
		cuts := alignCuts(splitLarge(timeSlices(o, hours), hours, count, o.MaxJobImpressions), commonWindow(g))
		for si, sl := range cuts {
			jobs = append(jobs, planJob{ID: strings.Join(ids, "+") + "@" + sliceName(sl[0], sl[1]),
				Integrations: g, From: sl[0], Until: sl[1], Estimate: count(sl[0], sl[1]),
				OwnLines: gi == 0, OwnRest: gi == 0 && si == 0})
		}
	}
	slices.SortStableFunc(jobs, func(a, b planJob) int { return cmp.Compare(b.Estimate, a.Estimate) })
	return jobs, int64(est.lines + 0.5), nil
}

// sizeShards gives each object store integration that leaves its shards to the data
// as many shards (objects a window) as its largest estimated window needs at its
// object_bytes: one for most, more for a tenant whose windows are large, so that
// objects are neither tiny nor too large for a worker to hold. Other input may size
// them otherwise: the objects of a prefix need not agree on their shards.
func sizeShards(cfg *config.Config, est *estimate) {
	for i := range cfg.Integrations {
		in := &cfg.Integrations[i]
		if in.Shards != 0 || !in.Type.IsObjectStore() {
			continue
		}
		var spec encode.ObjectSpec
		switch {
		case in.S3 != nil:
			spec = in.S3.ObjectSpec
		case in.GCS != nil:
			spec = in.GCS.ObjectSpec
		}
		bytes := est.largestWindow(in.ID, in.Window.D()) * est.bytesPerImpression()
		in.Shards = int(min(max(1, math.Ceil(bytes/float64(max(1, spec.ObjectBytes)))), config.MaxShards))
	}
}

// jobGroups returns the integrations of each job: all object store integrations in
// one, which reads and parses the input once for all of them (the reader routes and
// encodes as it parses: impressionio.ReadObjects); each HTTP integration a job of its
// own, so that a slow or down destination holds up only its own jobs, never those of
// another destination of its type. With byIntegration, object stores too get a job
// per integration.
func jobGroups(cfg *config.Config, byIntegration bool) [][]config.Integration {
	var out, objects [][]config.Integration
	for _, in := range cfg.Integrations {
		switch {
		case !in.Type.IsObjectStore() || byIntegration:
			out = append(out, []config.Integration{in})
		case objects == nil:
			objects = [][]config.Integration{{in}}
		default:
			objects[0] = append(objects[0], in)
		}
	}
	return append(objects, out...)
}

// commonWindow is the shortest duration that the window of every object store
// integration of ints divides (their least common multiple), 0 if there are none:
// fixed windows start at multiples of their size since the Unix epoch, so a cut at a
// multiple of it falls on a boundary of every window. Past maxCommonWindow it is
// that: windows that far apart leave no cut anyway.
func commonWindow(ints []config.Integration) time.Duration {
	var l int64 // ms
	for _, in := range ints {
		if !in.Type.IsObjectStore() {
			continue
		}
		w := in.Window.D().Milliseconds()
		if l == 0 {
			l = w
			continue
		}
		a, b := l, w
		for b != 0 {
			a, b = b, a%b
		}
		if l/a > maxCommonWindow.Milliseconds()/w {
			return maxCommonWindow
		}
		l = l / a * w
	}
	return time.Duration(min(l, maxCommonWindow.Milliseconds())) * time.Millisecond
}

// maxCommonWindow bounds commonWindow: about 30 years, past any backfill's range.
const maxCommonWindow = 30 * 365 * 24 * time.Hour

// timeSlices cuts the range into slices aligned to the slice length (UTC), one for
// each slice the sample saw impressions in; a slice with none seen is merged into the
// one before (or after), so together they still cover the whole range. Without
// --since (--until), the first (last) slice is unbounded: impressions beyond the
// sampled times are delivered too.
func timeSlices(o planOptions, seen []time.Time) [][2]time.Time {
	if o.Slice <= 0 || len(seen) == 0 {
		return [][2]time.Time{{o.From, o.Until}}
	}
	var starts []time.Time // distinct slice starts with data, in order
	for _, t := range seen {
		st := t.Truncate(o.Slice)
		if len(starts) == 0 || !st.Equal(starts[len(starts)-1]) {
			starts = append(starts, st)
		}
	}
	out := make([][2]time.Time, len(starts))
	for i, st := range starts {
		out[i][0] = st
		if i+1 < len(starts) {
			out[i][1] = starts[i+1] // a gap without data belongs to the slice before it
		} else {
			out[i][1] = st.Add(o.Slice)
		}
	}
	out[0][0], out[len(out)-1][1] = o.From, o.Until // open ends, or the range asked for
	if !o.From.IsZero() && out[0][1].Before(o.From) || !o.Until.IsZero() && !out[len(out)-1][0].Before(o.Until) {
		return [][2]time.Time{{o.From, o.Until}}
	}
	return out
}

// splitLarge cuts slices whose estimate exceeds max at hour boundaries, each part as
// large as it can be while under max (one hour may exceed it alone). hours are the
// sampled hours with impressions, in order. Open ends stay open.
func splitLarge(slices [][2]time.Time, hours []time.Time, count func(from, until time.Time) int64, max int64) [][2]time.Time {
	if max <= 0 {
		return slices
	}
	within := func(sl [2]time.Time, t time.Time) bool {
		return (sl[0].IsZero() || !t.Before(sl[0])) && (sl[1].IsZero() || t.Before(sl[1]))
	}
	var out [][2]time.Time
	for _, sl := range slices {
		from := sl[0]
		for _, h := range hours {
			if within(sl, h) && (from.IsZero() || h.After(from)) && count(from, h.Add(time.Hour)) > max && count(from, h) > 0 {
				out = append(out, [2]time.Time{from, h})
				from = h
			}
		}
		out = append(out, [2]time.Time{from, sl[1]})
	}
	return out
}

// alignCuts moves every cut between two slices down to a window boundary of the
// job's windows, multiples of d (commonWindow; 0 for HTTP jobs, whose cuts stay), and
// merges the slices left empty. An object store writes one object per window and
// shard: a window cut between two jobs would be written by both under one name, the
// second upload replacing the first. The outer ends (--since, --until, or open) stay:
// a window they cut is named by the part of it the run covers (objectio.Target).
func alignCuts(slices [][2]time.Time, d time.Duration) [][2]time.Time {
	if d <= 0 || len(slices) < 2 {
		return slices
	}
	out := [][2]time.Time{slices[0]}
	for _, sl := range slices[1:] {
		cut := encode.WindowStart(sl[0], d)
		last := &out[len(out)-1]
		if !last[0].IsZero() && !cut.After(last[0]) {
			last[1] = sl[1] // the cut falls in the previous slice's first window: one slice
			continue
		}
		last[1] = cut
		out = append(out, [2]time.Time{cut, sl[1]})
	}
	return out
}

func sliceName(from, until time.Time) string {
	f, u := "start", "end"
	if !from.IsZero() {
		f = from.UTC().Format("20060102T150405Z")
	}
	if !until.IsZero() {
		u = until.UTC().Format("20060102T150405Z")
	}
	return f + "-" + u
}

// estimate counts sampled impressions per integration and hour.
type estimate struct {
	mu      sync.Mutex
	perHour map[string]map[int64]float64 // integration -> hour (Unix) -> impressions
	hours   map[int64]bool               // hours any sampled impression in range falls in
	lines   float64                      // lines of the input
	// Valid lines sampled, and their bytes.
	sampled, sampledBytes float64
}

// bytesPerImpression is the sampled impressions' average size: about what each
// takes in an object before compression.
func (e *estimate) bytesPerImpression() float64 {
	if e.sampled == 0 {
		return 0
	}
	return e.sampledBytes / e.sampled
}

// largestWindow is the estimated impressions of an integration's fullest window of
// size w: within an hour they are taken to be spread evenly.
func (e *estimate) largestWindow(id string, w time.Duration) float64 {
	perWindow := map[int64]float64{}
	for h, n := range e.perHour[id] {
		if w < time.Hour {
			perWindow[h] = n * w.Hours()
			continue
		}
		perWindow[encode.WindowStart(time.Unix(h*3600, 0), w).Unix()] += n
	}
	most := 0.0
	for _, n := range perWindow {
		most = max(most, n)
	}
	return most
}

// times returns the start of each hour the sample saw impressions in, in order.
func (e *estimate) times() []time.Time {
	var ts []time.Time
	for h := range e.hours {
		ts = append(ts, time.Unix(h*3600, 0).UTC())
	}
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	return ts
}

func newEstimate() *estimate {
	return &estimate{perHour: map[string]map[int64]float64{}, hours: map[int64]bool{}}
}

// sample reads the start of a file of size bytes (as matchInput found it), counts its
// impressions by integration and hour, and scales the counts up to the whole file by
// the share of its bytes read.
func (e *estimate) sample(ctx context.Context, path string, size int64, targets []route.Target, o planOptions) error {
	// Size 0: a body that ends early is still a sample, scaled up like one cut by the limit.
	f, err := linefile.Open(ctx, path, 0)
	if err != nil {
		return fmt.Errorf("estimate %s: %w", path, err)
	}
	defer f.Close()
	limit := o.SampleBytes
	if limit <= 0 {
		limit = defaultSampleBytes
	}
	r := io.LimitReader(f, limit)
	counts := map[string]map[int64]float64{}
	hours := map[int64]bool{}
	var lines, valid, validBytes float64
	// A line over the parser's limit is passed cut, and refused by it, as the job
	// reading the file will: an invalid line, not the end of the sample.
	err = linefile.Scan(r, linefile.Options{MaxLine: impression.MaxLineBytes}, func(line []byte) error {
		lines++
		imp, err := impression.Parse(line)
		if err != nil {
			return nil
		}
		valid++
		validBytes += float64(len(line))
		t := time.UnixMilli(imp.Time)
		if (!o.From.IsZero() && t.Before(o.From)) || (!o.Until.IsZero() && !t.Before(o.Until)) {
			return nil
		}
		hours[t.Unix()/3600] = true
		for i := range targets {
			if targets[i].Matches(&imp) {
				if counts[targets[i].ID] == nil {
					counts[targets[i].ID] = map[int64]float64{}
				}
				counts[targets[i].ID][t.Unix()/3600]++
			}
		}
		return nil
	})
	if err != nil {
		return nil // not gzip, damaged or unreadable: the job reading the file says why
	}
	scale := 1.0
	if n := f.RawBytes(); n > 0 && n < size {
		scale = float64(size) / float64(n)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lines += lines * scale
	e.sampled += valid
	e.sampledBytes += validBytes
	for h := range hours {
		e.hours[h] = true
	}
	for id, hours := range counts {
		if e.perHour[id] == nil {
			e.perHour[id] = map[int64]float64{}
		}
		for h, n := range hours {
			e.perHour[id][h] += n * scale
		}
	}
	return nil
}

// count is the estimated impressions of an integration in [from, until).
func (e *estimate) count(id string, from, until time.Time) int64 {
	var n float64
	for h, c := range e.perHour[id] {
		t := time.Unix(h*3600, 0)
		if (from.IsZero() || !t.Before(from.Truncate(time.Hour))) && (until.IsZero() || t.Before(until)) {
			n += c
		}
	}
	return int64(n + 0.5)
}
