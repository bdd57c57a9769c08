// Command stream delivers impressions from a Kafka topic as they arrive (CONTRACT §3):
//
//	stream --config CONFIG --brokers HOST:PORT[,…] --topic TOPIC [--report FILE]
//	       [--group NAME] [--start earliest|latest] [--shutdown-timeout D]
//
// plus Beam's runner flags. It runs until stopped. SIGINT or SIGTERM drains it:
// reading stops, what was read is delivered (or dead-lettered) and the pipeline
// finishes; then the consumer group's offsets are committed where reading stopped,
// so a restart resumes there. If the drain takes longer than --shutdown-timeout the
// job is cancelled and commits nothing: a restart reads that part again, and HTTP
// destinations see those impressions again under the same ids. A second signal
// stops at once.
//
// Draining and committing need the readers in this process: the embedded prism
// runner, or LOOPBACK workers of a job server. With remote workers (Flink with a
// worker image, Dataflow) a signal cancels the job after --shutdown-timeout, and
// offsets are not committed.
package main

import (
	"context"
	"errors"
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
	shutdown   = flag.Duration("shutdown-timeout", time.Minute, "on SIGINT/SIGTERM, how long to deliver what was read before giving up")
)

const usage = `usage: stream --config CONFIG --brokers HOST:PORT[,…] --topic TOPIC [--report FILE]
              [--group NAME] [--start earliest|latest] [--shutdown-timeout D] [runner flags]`

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
	case *shutdown <= 0:
		problems = append(problems, fmt.Sprintf("--shutdown-timeout must be positive, not %v", *shutdown))
	}
	cfg := job.LoadConfig(*configPath, &problems)
	if len(problems) > 0 {
		return job.UsageError("stream", usage, problems)
	}

	cfg.Live = true // late data accepted, delay alerts on
	log := job.Logger()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go drainOnSignal(ctx, cancel)
	rep := report.New(cfg, time.Now())
	log.Info("stream starting", "brokers", *brokers, "topic", src.Topic, "group", src.Group)
	res, err := runners.Run(ctx, pipeline(cfg, src))
	switch {
	case err == nil: // drained: everything read was delivered or dead-lettered
		reached := kafkaio.Reached()
		if err = kafkaio.Commit(context.Background(), src, reached); err == nil {
			log.Info("stream stopped; offsets committed", "group", src.Group, "next", reached)
		}
	case ctx.Err() != nil:
		log.Warn("stream stopped before all it read was delivered; offsets not committed, a restart reads that part again",
			"cause", context.Cause(ctx))
		err = nil // stopping is the way a stream job ends
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

// drainOnSignal drains the pipeline on SIGINT or SIGTERM (kafkaio.Drain), and cancels
// it if the drain has not finished within --shutdown-timeout or on a second signal.
func drainOnSignal(ctx context.Context, cancel context.CancelCauseFunc) {
	sig, stop := job.Context()
	defer stop()
	select {
	case <-ctx.Done():
		return
	case <-sig.Done():
	}
	job.Logger().Info("stopping: delivering what was read", "shutdown_timeout", *shutdown)
	kafkaio.Drain()
	again, stopAgain := job.Context()
	defer stopAgain()
	select {
	case <-ctx.Done():
	case <-again.Done():
		cancel(errors.New("stopped by a second signal"))
	case <-time.After(*shutdown):
		cancel(fmt.Errorf("--shutdown-timeout %v passed", *shutdown))
	}
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
