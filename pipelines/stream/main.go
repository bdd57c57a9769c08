// Command stream delivers impressions from a Kafka topic as they arrive (CONTRACT §3):
//
//	stream --config CONFIG --brokers HOST:PORT[,…] --topic TOPIC [--report FILE]
//	       [--group NAME] [--start earliest|latest]
//
// plus Beam's runner flags. It runs until stopped (SIGINT/SIGTERM).
//
// This first version delivers to the HTTP integrations (Amplitude, Segment,
// webhooks) through the same delivery core as the backfill; it refuses a
// configuration with object-store integrations rather than risk a late pane
// overwriting an object. It does not commit consumer offsets yet: a restarted job
// reads the topic again from the group's last commit (or --start), and destinations
// dedupe by impression id.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/report"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/io/impressionio"
	"github.com/outflow/outflow/io/kafkaio"
	"github.com/outflow/outflow/pipelines/internal/job"
	"github.com/outflow/outflow/pipelines/internal/sinks"
	"github.com/outflow/outflow/runners"
	"github.com/outflow/outflow/transforms/route"
	"github.com/outflow/outflow/transforms/windowing"
)

var (
	configPath = flag.String("config", "", "configuration file (YAML, CONTRACT §2); required")
	brokers    = flag.String("brokers", "", "Kafka bootstrap brokers, HOST:PORT[,…]; required")
	topic      = flag.String("topic", "", "the topic to read impressions from; required")
	group      = flag.String("group", "outflow", "consumer group whose committed offsets say where to start")
	start      = flag.String("start", "earliest", "where a partition with no committed offset starts: earliest or latest")
	reportPath = flag.String("report", "", "write a JSON report of the run to this file")
)

const usage = `usage: stream --config CONFIG --brokers HOST:PORT[,…] --topic TOPIC [--report FILE]
              [--group NAME] [--start earliest|latest] [runner flags]`

func main() { os.Exit(run()) }

func run() int {
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, usage)
		fmt.Fprintln(os.Stderr, runners.FlagsHelp)
	}
	flag.Parse()
	beam.Init()

	var problems []string
	if flag.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected arguments: %q", flag.Args()))
	}
	src := kafkaio.Config{Topic: *topic, Group: *group, Start: *start}
	for _, b := range strings.Split(*brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			src.Brokers = append(src.Brokers, b)
		}
	}
	switch {
	case len(src.Brokers) == 0:
		problems = append(problems, "--brokers is required")
	case src.Topic == "":
		problems = append(problems, "--topic is required")
	case src.Group == "":
		problems = append(problems, "--group must not be empty")
	case src.Start != "earliest" && src.Start != "latest":
		problems = append(problems, fmt.Sprintf("--start: %q is neither earliest nor latest", src.Start))
	}
	cfg := job.LoadConfig(*configPath, &problems)
	if cfg != nil {
		for _, in := range cfg.Integrations {
			if in.Type == config.S3 || in.Type == config.GCS {
				problems = append(problems, fmt.Sprintf("integration %q: type %s is not delivered by the stream pipeline yet; run it with backfill", in.ID, in.Type))
			}
		}
	}
	if len(problems) > 0 {
		return job.UsageError("stream", usage, problems)
	}

	cfg.Live = true // late data accepted, delay alerts on
	ctx, stop := job.Context()
	defer stop()
	rep := report.New(cfg, time.Now())
	job.Logger().Info("stream starting", "brokers", *brokers, "topic", src.Topic, "group", src.Group)
	res, err := runners.Run(ctx, pipeline(cfg, src))
	if err != nil && ctx.Err() != nil {
		err = nil // stopped by a signal: the way a stream job ends
	}
	rep.AddMetrics(res)
	code := job.ExitOK
	switch {
	case err != nil:
		code, err = job.ExitFailed, job.Failure(ctx, err)
	case rep.DeadLettered() > 0:
		code = job.ExitDeadLettered
	}
	return job.End("stream", rep, code, err, *reportPath)
}

// pipeline is the stream's Beam graph: read the topic, parse, route, window and
// deliver, and dead-letter what cannot be.
func pipeline(cfg *config.Config, src kafkaio.Config) *beam.Pipeline {
	p, s := beam.NewPipelineWithRoot()

	imps, invalid := impressionio.FromRecords(s, kafkaio.Read(s, src), windowing.AllowedLateness/2)
	undeliverable := sinks.Deliver(s, cfg, func(s beam.Scope, targets []route.Target) beam.PCollection {
		return route.Fanout(s, targets, imps)
	})
	deadletterio.Write(s, cfg.DeadLetter, beam.Flatten(s, append(undeliverable, invalid)...))
	return p
}
