// Command replay re-delivers the impressions of a dead-letter store (CONTRACT §3):
//
//	replay --config CONFIG --dead-letter URI [--report FILE]
//
// plus Beam's runner flags. Each impression goes again to the integration that could
// not take it. What fails again, and records replay cannot deliver (invalid input
// lines, integrations no longer configured), is written back to the store; the files
// replayed are archived under replayed/, so a second replay sends nothing twice.
//
// Exit codes: 0 all delivered, 3 some impressions dead-lettered again, 2 bad flags or
// config, 1 the pipeline failed (the files stay under replaying/ and the next replay
// takes them up).
package main

import (
	"context"
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
	configPath = flag.String("config", "", "configuration file (YAML, CONTRACT §2); required")
	store      = flag.String("dead-letter", "", "the dead-letter store to replay: a directory, s3://bucket/prefix or gs://bucket/prefix; required")
	reportPath = flag.String("report", "", "write a JSON report of the run to this file")
)

const usage = "usage: replay --config CONFIG --dead-letter URI [--report FILE] [runner flags]"

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
	log := job.Logger()

	var problems []string
	if flag.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected arguments: %q", flag.Args()))
	}
	if *store == "" {
		problems = append(problems, "--dead-letter is required")
	}
	cfg := job.LoadConfig(*configPath, &problems)
	if len(problems) > 0 {
		return job.UsageError("replay", usage, problems)
	}

	ctx, stop := job.Context()
	defer stop()
	root := deadletterio.Clean(*store)
	rep := report.New(cfg, time.Now())
	rep.DeadLetter = root
	code, err := execute(ctx, log, cfg, root, rep)
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
	log.Info("replay starting", "files", files, "dead_letter", root)

	res, err := runners.Run(ctx, pipeline(cfg, root))
	rep.AddMetrics(res)
	if err != nil {
		return job.ExitFailed, job.Failure(ctx, err)
	}
	if err := archive(ctx, root); err != nil {
		return job.ExitFailed, err
	}
	if rep.DeadLettered() > 0 {
		return job.ExitDeadLettered, nil
	}
	return job.ExitOK, nil
}

// pipeline is the replay's Beam graph: read the staged records, deliver each
// impression to its integration, and write back what is left.
func pipeline(cfg *config.Config, root string) *beam.Pipeline {
	p, s := beam.NewPipelineWithRoot()

	records := deadletterio.Read(s, root+"/"+replaying+"/*/*.ndjson*")
	imps, kept := beam.ParDo2(s, &splitFn{Known: knownIDs(cfg)}, records)
	undeliverable := sinks.Deliver(s, cfg, func(s beam.Scope, targets []route.Target) beam.PCollection {
		return route.Direct(s, targets, imps)
	})
	deadletterio.Write(s, root, beam.Flatten(s, append(undeliverable, kept)...))
	return p
}

func knownIDs(cfg *config.Config) map[string]bool {
	ids := map[string]bool{}
	for _, in := range cfg.Integrations {
		ids[in.ID] = true
	}
	return ids
}

func init() {
	register.DoFn4x1[context.Context, deadletterio.Record, func(beam.EventTime, string, impression.Impression), func(deadletterio.Record), error](&splitFn{})
	register.Emitter3[beam.EventTime, string, impression.Impression]()
}

// splitFn sends impressions of configured integrations on to delivery, timestamped
// with their time, and keeps every other record as it is.
type splitFn struct {
	Known map[string]bool `json:"known"`

	replayed, kept metricname.Counter
}

func (fn *splitFn) Setup() {
	fn.replayed = metricname.NewCounter(metricname.Job, metricname.Replayed)
	fn.kept = metricname.NewCounter(metricname.Job, metricname.Kept)
}

func (fn *splitFn) ProcessElement(ctx context.Context, r deadletterio.Record, emit func(beam.EventTime, string, impression.Impression), keep func(deadletterio.Record)) error {
	if r.Impression == nil || !fn.Known[r.Integration] {
		fn.kept.Inc(ctx, 1)
		keep(r)
		return nil
	}
	raw, err := json.Marshal(r.Impression)
	if err != nil {
		return err
	}
	imp, err := impression.Parse(raw)
	if err != nil {
		r.Reason = "cannot replay: " + err.Error() + "; was: " + r.Reason
		fn.kept.Inc(ctx, 1)
		keep(r)
		return nil
	}
	fn.replayed.Inc(ctx, 1)
	emit(mtime.FromMilliseconds(imp.Time), r.Integration, imp)
	return nil
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
