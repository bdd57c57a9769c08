// Command backfill delivers the impressions in a set of files to every matching
// integration (CONTRACT §3):
//
//	backfill --config CONFIG --input GLOB [--since RFC3339] [--until RFC3339] [--report FILE] [--metrics-addr HOST:PORT]
//
// plus Beam's runner flags; the embedded prism runner is the default.
//
// Exit codes: 0 all delivered, 3 some impressions dead-lettered, 2 bad flags or
// config, 1 the pipeline failed.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path"
	"runtime/debug"
	"slices"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/io/filesystem"
	"golang.org/x/sync/errgroup"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/ops"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/io/impressionio"
	"github.com/outflow/outflow/pipelines/internal/job"
	"github.com/outflow/outflow/pipelines/internal/sinks"
	"github.com/outflow/outflow/runners"
	"github.com/outflow/outflow/transforms/route"
)

var (
	configPath  = flag.String("config", "", "configuration file (YAML, CONTRACT §2); required")
	input       = flag.String("input", "", "impression files: a local glob, s3://bucket/prefix/*.ndjson.gz or gs://…; required")
	since       = flag.String("since", "", "deliver only impressions at or after this time (RFC 3339)")
	until       = flag.String("until", "", "deliver only impressions before this time (RFC 3339)")
	reportPath  = flag.String("report", "", "write a JSON report of the run to this file")
	metricsAddr = job.MetricsAddr()

	planOnly     = flag.Bool("plan", false, "print the plan (jobs, estimated sizes, order) and exit")
	parallelJobs = flag.Int("parallel-jobs", 2, "object store (s3, gcs) jobs to run at once")
	parallelHTTP = flag.Int("parallel-http-jobs", 0, "HTTP destination (amplitude, segment, webhook) jobs to run at once, in slots of their own, never two of one destination; 0: one slot per destination")
	slice        = flag.Duration("slice", 24*time.Hour, "time slice of a job (UTC-aligned); 0: the whole range in one")
	jobsBy       = flag.String("jobs-by", "group", "group: one job for all object store integrations; integration: a job each (HTTP integrations always have a job each)")
	breakLease   = job.BreakLease()
	restart      = flag.Bool("restart", false, "ignore what an earlier run of the same backfill finished, and do it all")
	maxJob       = flag.Int64("max-job-impressions", 4_000_000, "cut slices so that no job is estimated above this many impressions (bounds a job's memory on the embedded runner); 0: no bound")
)

const usage = "usage: backfill --config CONFIG --input GLOB [--since RFC3339] [--until RFC3339] [--report FILE]\n" +
	"                [--plan] [--parallel-jobs N] [--parallel-http-jobs N] [--slice DURATION] [--jobs-by group|integration] [--max-job-impressions N] [--restart] [--break-lease]\n" +
	"                [--metrics-addr HOST:PORT] [runner flags]"

func main() { os.Exit(run()) }

func run() int {
	flag.Usage = printUsage
	flag.Parse()
	beam.Init()
	if code, served := job.ServeWorkers("backfill"); served {
		return code
	}
	if os.Getenv("GOGC") == "" {
		// The embedded runner holds a job's shuffle in memory several times over:
		// collecting at 75% growth rather than 100% took a million impressions from
		// about 590 to 530 MiB of peak RSS for about 4% more CPU (bench -mode s3).
		debug.SetGCPercent(75)
	}
	log := job.Logger()

	// Flags and configuration: every problem at once, exit 2.
	opts, problems := readFlags()
	cfg := job.LoadConfig(*configPath, &problems)
	if len(problems) > 0 {
		return job.UsageError("backfill", usage, problems)
	}

	ctx, stop := job.Context()
	defer stop()
	rep := report.New(cfg, time.Now())
	// The report of the jobs finished so far, and what those running did so far;
	// reportMu guards both while jobs run.
	srv, err := job.ServeOps(*metricsAddr, func() *report.Report {
		reportMu.Lock()
		defer reportMu.Unlock()
		c := rep.Clone()
		c.AddCounts(live.running())
		return c
	})
	if err != nil {
		return job.End("backfill", rep, job.ExitFailed, err, *reportPath)
	}
	srv.NotReady("checking the input and the object stores")
	code, err := execute(ctx, log, cfg, opts, rep, srv)
	srv.Close() // before the report is completed
	if *planOnly && err == nil {
		return code
	}
	return job.End("backfill", rep, code, err, *reportPath)
}

// execute checks the input and destinations, plans the jobs, and runs them.
func execute(ctx context.Context, log *slog.Logger, cfg *config.Config, o planOptions, rep *report.Report, srv *ops.Server) (int, error) {
	files, err := matchInput(ctx, *input)
	if err != nil {
		return job.ExitUsage, err
	}
	cfg.Since, cfg.Until = o.From, o.Until
	if !*planOnly {
		if err := job.CheckStores(ctx, cfg); err != nil {
			return job.ExitFailed, err
		}
	}
	jobs, lines, err := makePlan(ctx, cfg, files, o) // sizes the shards left to the data
	if err != nil {
		return job.ExitFailed, err
	}
	if !*planOnly {
		if code, err := job.CheckObjects(ctx, cfg); err != nil {
			return code, err
		}
	}
	if *planOnly {
		printPlan(os.Stdout, jobs, len(files), lines, o)
		return job.ExitOK, nil
	}

	expanded, err := json.Marshal(cfg) // after ${VAR} expansion: a changed bucket is another backfill
	if err != nil {
		return job.ExitFailed, err
	}
	inputs, err := json.Marshal(files) // a new or changed file is another backfill
	if err != nil {
		return job.ExitFailed, err
	}
	st := &state{Done: map[string]doneJob{}}
	st.path = statePath(cfg.DeadLetter, string(expanded), string(inputs), *since, *until, slice.String(), *jobsBy, fmt.Sprint(*maxJob))
	if !*restart {
		if st, err = loadState(ctx, st.path); err != nil {
			return job.ExitFailed, err
		}
	}
	// One writer a prefix: a run of another backfill, or a stream, holding one is exit 2.
	ctx, lose := context.WithCancelCause(ctx)
	defer lose(nil)
	leases, code, err := job.HoldLeases(ctx, cfg, "backfill", "backfill "+path.Base(st.path), *breakLease, lose)
	if err != nil {
		return code, err
	}
	defer leases.Release()
	srv.Ready()
	log.Info("backfill starting", "files", len(files), "jobs", len(jobs), "parallel_jobs", *parallelJobs,
		"parallel_http_jobs", *parallelHTTP, "estimated_lines", lines, "dead_letter", cfg.DeadLetter, "state", st.path)
	return runPlan(ctx, log, cfg, *input, files, jobs, o, parallelism(), st, rep, lines)
}

// parallelism is how many jobs of each pool run at once.
func parallelism() [numPools]int {
	var p [numPools]int
	p[objectPool], p[httpPool] = *parallelJobs, *parallelHTTP
	return p
}

// printPlan shows the jobs in the order they would run: largest first within each
// pool, each pool in its own slots.
func printPlan(w io.Writer, jobs []planJob, files int, lines int64, o planOptions) {
	httpSlots := "a slot per destination"
	if *parallelHTTP > 0 {
		httpSlots = fmt.Sprintf("at most %d at a time", *parallelHTTP)
	}
	fmt.Fprintf(w, "plan: %d jobs over %d files (~%d lines), slices of %v, largest first: "+
		"object store jobs %d at a time, HTTP jobs one at a time per destination, %s\n",
		len(jobs), files, lines, o.Slice, *parallelJobs, httpSlots)
	shards := map[string]int{}
	for i, j := range jobs {
		fmt.Fprintf(w, "%3d  %-6s  %-60s ~%d impressions\n", i+1, poolOf(j), j.ID, j.Estimate)
		for _, in := range j.Integrations {
			if in.Type.IsObjectStore() {
				shards[in.ID] = in.Shards
			}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(shards)) {
		fmt.Fprintf(w, "objects a window: %-40s %d\n", id, shards[id])
	}
}

// pipeline is the backfill's Beam graph: read, then route, window and write to each
// integration; whatever cannot be delivered ends in the dead-letter store. For
// object stores the reader itself routes and encodes, and only chunks cross the
// shuffle. run names this execution of the job in the dead-letter store's receipts.
func pipeline(cfg *config.Config, glob string, opts []impressionio.ReadOptionFn, run string) *beam.Pipeline {
	p, s := beam.NewPipelineWithRoot()
	objects, others := sinks.Objects(cfg)
	var dead []beam.PCollection
	if len(objects.Integrations) > 0 {
		chunks, invalid := impressionio.ReadObjects(s, glob, sinks.ReadTargets(objects), opts...)
		sinks.DeliverObjects(s, objects, chunks)
		dead = append(dead, invalid)
		// The plan never mixes the two in a job; if a job did, its second read would
		// count nothing again.
		opts = append(slices.Clip(opts), impressionio.Shared(false, false))
	}
	if len(others.Integrations) > 0 {
		imps, invalid := impressionio.Read(s, glob, opts...)
		out := sinks.Deliver(s, others, func(s beam.Scope, targets []route.Target) beam.PCollection {
			return route.Fanout(s, targets, imps)
		})
		dead = append(append(dead, out.Dead...), invalid)
	}
	deadletterio.Write(s, cfg.DeadLetter, beam.Flatten(s, dead...), deadletterio.Receipts(run))
	return p
}

// readFlags checks the flags and returns the plan they ask for.
func readFlags() (planOptions, []string) {
	var problems []string
	if flag.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected arguments: %q", flag.Args()))
	}
	if *input == "" {
		problems = append(problems, "--input is required")
	}
	var from, to time.Time
	for _, f := range []struct {
		name, value string
		t           *time.Time
	}{{"since", *since, &from}, {"until", *until, &to}} {
		if f.value == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, f.value)
		if err != nil {
			problems = append(problems, fmt.Sprintf("--%s: %q is not an RFC 3339 time like 2026-01-01T00:00:00Z", f.name, f.value))
			continue
		}
		if t.Nanosecond() != 0 {
			// Object names carry whole seconds: a window cut within a second could be
			// written by two runs under one name.
			problems = append(problems, fmt.Sprintf("--%s: %q must be a whole second", f.name, f.value))
			continue
		}
		*f.t = t
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		problems = append(problems, "--since must be before --until")
	}
	if *parallelJobs < 1 {
		problems = append(problems, fmt.Sprintf("--parallel-jobs must be at least 1; got %d", *parallelJobs))
	}
	if *parallelHTTP < 0 {
		problems = append(problems, fmt.Sprintf("--parallel-http-jobs must be 0 (a slot per destination) or more; got %d", *parallelHTTP))
	}
	if *slice < 0 || (*slice > 0 && *slice < time.Minute) {
		problems = append(problems, fmt.Sprintf("--slice must be 0 or at least 1m; got %v", *slice))
	}
	if *jobsBy != "group" && *jobsBy != "integration" {
		problems = append(problems, fmt.Sprintf("--jobs-by must be group or integration; got %q", *jobsBy))
	}
	if *maxJob < 0 {
		problems = append(problems, fmt.Sprintf("--max-job-impressions must be >= 0; got %d", *maxJob))
	}
	problems = append(problems, runners.FlagProblems()...)
	return planOptions{From: from, Until: to, Slice: *slice, ByIntegration: *jobsBy == "integration", MaxJobImpressions: *maxJob}, problems
}

// matchInput lists the input files; it fails when the glob matches none: a typo
// should not look like an empty, successful backfill.
func matchInput(ctx context.Context, glob string) ([]impressionio.File, error) {
	fs, err := filesystem.New(ctx, glob)
	if err != nil {
		return nil, fmt.Errorf("--input %s: %w", glob, err)
	}
	defer fs.Close()
	paths, err := fs.List(ctx, glob)
	if err != nil {
		return nil, fmt.Errorf("--input %s: %w", glob, err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("--input %s: no files match", glob)
	}
	slices.Sort(paths)
	files := make([]impressionio.File, len(paths))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, p := range paths {
		g.Go(func() error {
			f := &files[i]
			f.Path = p
			var err error
			if f.Size, err = fs.Size(gctx, p); err != nil {
				return fmt.Errorf("--input %s: %w", p, err)
			}
			if lm, ok := fs.(filesystem.LastModifiedGetter); ok {
				if f.Modified, err = lm.LastModified(gctx, p); err != nil {
					return fmt.Errorf("--input %s: %w", p, err)
				}
			}
			return nil
		})
	}
	return files, g.Wait()
}

// printUsage lists backfill's own flags; Beam registers dozens more, of which
// runners documents the ones that choose a runner.
func printUsage() {
	fmt.Fprintln(os.Stderr, usage)
	for _, name := range []string{"config", "input", "since", "until", "report", "plan", "parallel-jobs", "parallel-http-jobs", "slice", "jobs-by", "max-job-impressions", "restart", "break-lease"} {
		f := flag.Lookup(name)
		fmt.Fprintf(os.Stderr, "  --%-20s %s\n", f.Name, f.Usage)
	}
	fmt.Fprintln(os.Stderr, runners.FlagsHelp)
}
