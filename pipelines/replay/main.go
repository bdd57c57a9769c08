// Command replay re-delivers the impressions of a dead-letter store (CONTRACT §3):
//
//	replay --config CONFIG --dead-letter URI [--report FILE] [--break-lease] [--metrics-addr HOST:PORT]
//
// plus Beam's runner flags. Each impression goes again to the integration that could
// not take it, if that integration still takes it: same tenant, and inside its current
// environments and splits filters (route.Target.Matches). What fails again, and records
// replay does not deliver (invalid input lines, file errors, integrations no longer
// configured, impressions the integration does not take), is written back to the
// store, the last with a reason saying why; the files replayed are archived under
// replayed/, so a second replay sends nothing twice. Replay never sends an impression
// to an integration of another tenant, whatever the store says.
//
// Exit codes: 0 every impression delivered (invalid lines and file errors written back
// do not count, as in CONTRACT §3); 3 some impressions were left in the store:
// dead-lettered again, or kept (an impression kept is not delivered); 2 bad flags or
// config; 1 the pipeline failed, or what it wrote back could not be counted (the files
// stay under replaying/ and the next replay takes them up). The code comes from the
// receipts the run wrote beside what it wrote back (deadletterio.Receipts), so it
// holds when the runner returns no metrics; the report's counts then come from them
// too.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/mtime"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/pipelines/internal/job"
	"github.com/outflow/outflow/pipelines/internal/sinks"
	"github.com/outflow/outflow/runners"
	"github.com/outflow/outflow/transforms/route"
)

var (
	configPath  = flag.String("config", "", "configuration file (YAML, CONTRACT §2); required")
	store       = flag.String("dead-letter", "", "the dead-letter store to replay: a directory, s3://bucket/prefix or gs://bucket/prefix; required")
	breakLease  = job.BreakLease()
	reportPath  = flag.String("report", "", "write a JSON report of the run to this file")
	metricsAddr = job.MetricsAddr()
)

const usage = "usage: replay --config CONFIG --dead-letter URI [--report FILE] [--break-lease] [--metrics-addr HOST:PORT] [runner flags]"

// Layout of the store while replaying.
const (
	replaying = "replaying" // files being replayed
	replayed  = "replayed"  // files replayed, archived by run
)

func main() { os.Exit(run()) }

func run() int {
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, usage)
		fmt.Fprintln(os.Stderr, runners.FlagsHelp)
	}
	flag.Parse()
	beam.Init()
	if code, served := job.ServeWorkers("replay"); served {
		return code
	}
	log := job.Logger()

	var problems []string
	if flag.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected arguments: %q", flag.Args()))
	}
	if *store == "" {
		problems = append(problems, "--dead-letter is required")
	}
	problems = append(problems, runners.FlagProblems()...)
	cfg := job.LoadConfig(*configPath, &problems)
	if len(problems) > 0 {
		return job.UsageError("replay", usage, problems)
	}

	ctx, stop := job.Context()
	defer stop()
	root := deadletterio.Clean(*store)
	rep := report.New(cfg, time.Now())
	rep.DeadLetter = root
	// The counts of this process's workers while the job runs, on a report of their own.
	live := report.New(cfg, rep.Started)
	srv, err := job.ServeOps(*metricsAddr, func() *report.Report { return live.Snapshot(metricname.Live()) })
	if err != nil {
		return job.End("replay", rep, job.ExitFailed, err, *reportPath)
	}
	srv.Ready()
	code, err := execute(ctx, log, cfg, root, rep)
	srv.Close()
	return job.End("replay", rep, code, err, *reportPath)
}

// execute stages the store's files under replaying/, replays them, and archives them.
func execute(ctx context.Context, log *slog.Logger, cfg *config.Config, root string, rep *report.Report) (int, error) {
	files, err := stage(ctx, root)
	if err != nil {
		return job.ExitFailed, err
	}
	if files == 0 {
		log.Info("nothing to replay", "dead_letter", root)
		return job.ExitOK, nil
	}
	// Object stores: reachable, and holding nothing a replay cannot add to (another
	// format, a larger window); it adds objects beside theirs, as a backfill does.
	if err := job.CheckStores(ctx, cfg); err != nil {
		return job.ExitFailed, err
	}
	if code, err := job.CheckObjects(ctx, cfg); err != nil {
		return code, err
	}
	ctx, lose := context.WithCancelCause(ctx)
	defer lose(nil)
	leases, code, err := job.HoldLeases(ctx, cfg, "replay", "replay of "+root, *breakLease, lose)
	if err != nil {
		return code, err
	}
	defer leases.Release()
	log.Info("replay starting", "files", files, "dead_letter", root)

	run, err := newRun()
	if err != nil {
		return job.ExitFailed, err
	}
	defer func() {
		if err := deadletterio.ClearReceipts(context.WithoutCancel(ctx), root, run); err != nil {
			log.Warn("could not remove this run's receipts; they are harmless", "run", run, "error", err)
		}
	}()
	res, err := runners.Run(ctx, pipeline(cfg, root, run))
	rep.AddMetrics(res)
	if err != nil {
		return job.ExitFailed, job.Failure(ctx, err)
	}
	tally, err := deadletterio.ReadTally(ctx, root, run)
	if err != nil {
		return job.ExitFailed, fmt.Errorf("replay finished, but what it wrote back to the store cannot be counted (the files stay under %s/): %w", replaying, err)
	}
	if rep.Replayed+rep.Kept == 0 { // every record read is one or the other: no metrics
		countFromTally(rep, tally)
	}
	if held := pendingOf(rep); held > 0 {
		// The runner ended the job while the delivery core held impressions (its
		// timers dropped): archiving the files would lose them. They stay staged, and
		// the next replay takes them up again (destinations drop repeats by id).
		return job.ExitDeadLettered, fmt.Errorf("the replay ended holding %d impressions it had neither delivered nor dead-lettered; "+
			"the files stay under %s/%s/, and the next replay sends them again", held, root, replaying)
	}
	if err := archive(ctx, root); err != nil {
		return job.ExitFailed, err
	}
	if rep.DeadLettered() > 0 || tally.Impressions() > 0 {
		return job.ExitDeadLettered, nil
	}
	return job.ExitOK, nil
}

// pendingOf is how many impressions the delivery core still held at the end
// (report.HeldAtEnd).
func pendingOf(rep *report.Report) int64 {
	var n int64
	for _, in := range rep.Integrations {
		if !config.Type(in.Type).IsObjectStore() {
			n += report.HeldAtEnd(in.Impressions, in.Delivered, in.DeadLettered)
		}
	}
	return n
}

// newRun returns an id for this replay's receipts, unique to this execution.
func newRun() (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("replay: run id: %w", err)
	}
	return fmt.Sprintf("replay-%s-%x", time.Now().UTC().Format("20060102T150405Z"), b), nil
}

// countFromTally fills the report of a run whose runner returned no metrics from what
// it wrote back to the store: an integration's dead_lettered is every impression left
// in the store for it (those kept included, which metrics count under kept), and kept
// every other record written back (invalid lines, file errors, impressions of
// integrations no longer configured). What was replayed is not known.
func countFromTally(rep *report.Report, t deadletterio.Tally) {
	rep.Kept = t.Records()
	for i := range rep.Integrations {
		in := &rep.Integrations[i]
		in.DeadLettered = t.DeadLettered[in.ID]
		rep.Kept -= in.DeadLettered
	}
}

// pipeline is the replay's Beam graph: read the staged records, deliver each
// impression to its integration, and write back what is left.
func pipeline(cfg *config.Config, root, run string) *beam.Pipeline {
	p, s := beam.NewPipelineWithRoot()

	records := deadletterio.Read(s, root+"/"+replaying+"/*/*.ndjson*")
	imps, kept := beam.ParDo2(s, &splitFn{Targets: sinks.Targets(cfg.Integrations)}, records)
	out := sinks.Deliver(s, cfg, func(s beam.Scope, targets []route.Target) beam.PCollection {
		return route.Direct(s, targets, imps)
	})
	deadletterio.Write(s, root, beam.Flatten(s, append(out.Dead, kept)...), deadletterio.Receipts(run))
	return p
}

func init() {
	register.DoFn4x1[context.Context, deadletterio.Record, func(beam.EventTime, string, impression.Impression), func(deadletterio.Record), error](&splitFn{})
	register.Emitter3[beam.EventTime, string, impression.Impression]()
}

// splitFn sends on to delivery, timestamped with their time, the impressions their
// integration still takes (route.Target.Matches: tenant, environments, splits), and
// keeps every other record: as it is, or with the reason it was not replayed put in
// front of its own.
type splitFn struct {
	Targets []route.Target `json:"targets"`

	byID           map[string]*route.Target
	replayed, kept metricname.Counter
}

func (fn *splitFn) Setup() {
	fn.byID = map[string]*route.Target{}
	for i, t := range fn.Targets {
		fn.byID[t.ID] = &fn.Targets[i]
	}
	fn.replayed = metricname.NewCounter(metricname.Job, metricname.Replayed)
	fn.kept = metricname.NewCounter(metricname.Job, metricname.Kept)
}

func (fn *splitFn) ProcessElement(ctx context.Context, r deadletterio.Record, emit func(beam.EventTime, string, impression.Impression), keep func(deadletterio.Record)) error {
	t := fn.byID[r.Integration]
	if r.Impression == nil || t == nil {
		fn.kept.Inc(ctx, 1)
		keep(r)
		return nil
	}
	raw, err := json.Marshal(r.Impression)
	if err != nil {
		return fmt.Errorf("replay: encode the impression of %s: %w", r.Source, err)
	}
	imp, err := impression.Parse(raw)
	if err != nil {
		r.Reason = because("cannot replay: "+err.Error(), r.Reason)
		fn.kept.Inc(ctx, 1)
		keep(r)
		return nil
	}
	// A reused id or an edited store must not send one tenant's impressions to another
	// tenant's destination, nor past the integration's current filters.
	if why := t.Mismatch(&imp); why != "" {
		r.Reason = because(fmt.Sprintf("not replayed: integration %s does not take this impression of tenant %q: %s",
			t.ID, imp.Tenant, why), r.Reason)
		fn.kept.Inc(ctx, 1)
		keep(r)
		return nil
	}
	fn.replayed.Inc(ctx, 1)
	emit(mtime.FromMilliseconds(imp.Time), r.Integration, imp)
	return nil
}

// because puts why a record is kept in front of its reason, once: a record kept again
// for the same reason by a later replay is written back unchanged.
func because(why, reason string) string {
	why += "; was: "
	if strings.HasPrefix(reason, why) {
		return reason
	}
	return why + reason
}

// stage moves the store's files, and none already staged by a failed replay, under
// replaying/, and says how many are staged.
func stage(ctx context.Context, root string) (int, error) {
	active, err := deadletterio.List(ctx, root+"/*/*.ndjson*")
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", root, err)
	}
	for _, f := range active {
		rel := strings.TrimPrefix(f, root+"/")
		if err := deadletterio.Move(ctx, f, root+"/"+replaying+"/"+rel); err != nil {
			return 0, err
		}
	}
	staged, err := deadletterio.List(ctx, root+"/"+replaying+"/*/*.ndjson*")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	return len(staged), nil
}

// archive moves the replayed files under replayed/<time>/.
func archive(ctx context.Context, root string) error {
	staged, err := deadletterio.List(ctx, root+"/"+replaying+"/*/*.ndjson*")
	if err != nil {
		return err
	}
	dir := root + "/" + replayed + "/" + time.Now().UTC().Format("20060102T150405Z")
	for _, f := range staged {
		rel := strings.TrimPrefix(f, root+"/"+replaying+"/")
		if err := deadletterio.Move(ctx, f, dir+"/"+rel); err != nil {
			return err
		}
	}
	return nil
}
