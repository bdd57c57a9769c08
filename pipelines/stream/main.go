// Command stream delivers impressions from a Kafka topic as they arrive (CONTRACT §3):
//
//	stream --config CONFIG --brokers HOST:PORT[,…] --topic TOPIC [--report FILE]
//	       [--group NAME] [--start earliest|latest] [--shutdown-timeout D]
//
// plus Beam's runner flags. It runs until stopped.
//
// Every few seconds it commits the consumer group's offsets as far as every record
// read before them is finished: its impressions delivered, stored or dead-lettered
// (package ack). A restart resumes there, so only what was in flight is read again
// (HTTP destinations may see those impressions again, under the same ids). Before
// the pipeline runs, it commits where it starts each partition the group has no
// offset for (--start), and later the earliest offset of partitions added to the
// topic while it runs, which the pipeline reads too: a restart resumes every
// partition, even one nothing was read from.
//
// SIGINT or SIGTERM drains it: reading stops, what was read is delivered and the
// pipeline finishes, then the offsets are committed where reading stopped. If the
// drain takes longer than --shutdown-timeout the job is cancelled, and what was
// finished by then is committed. A second signal stops at once.
//
// Draining and committing need the pipeline's workers in this process: the embedded
// prism runner, or LOOPBACK workers of a job server. With remote workers (Flink with
// a worker image, Dataflow) a signal cancels the job after --shutdown-timeout, and
// offsets are not committed past the starting ones.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"strings"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/outflow/outflow/internal/ack"
	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/internal/oplog"
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
	if code, served := job.ServeWorkers("stream"); served {
		return code
	}

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
	committer, err := kafkaio.NewCommitter(src)
	if err != nil {
		return job.End("stream", report.New(cfg, time.Now()), job.ExitFailed, err, *reportPath)
	}
	defer committer.Close()
	// Every partition the group has no offset for is committed where this run starts
	// it, so a restart resumes there even if nothing was read from it; and the
	// pipeline reads a partition still without one as one added since (earliest).
	starting, cancelStart := context.WithTimeout(context.Background(), startTimeout)
	started, partitions, err := committer.CommitStarts(starting, src.Start)
	cancelStart()
	if err != nil {
		return job.End("stream", report.New(cfg, time.Now()), job.ExitFailed,
			fmt.Errorf("starting offsets: %w", err), *reportPath)
	}
	src.StartsCommitted = true
	for _, p := range started {
		log.Info("starting offset committed: the group had none", "topic", src.Topic, "partition", p.Partition,
			"offset", p.Start, "start", src.Start)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go drainOnSignal(ctx, cancel)
	ack.Enable(len(windowing.Groups(cfg.Integrations)))
	pr := &progress{c: committer, last: map[int32]int64{}, partitions: partitions}
	stopCommits := job.Every(commitEvery, func() {
		if err := pr.commit(); err != nil {
			log.Warn("commit offsets (tried again shortly)", "error", err)
		}
	})
	rep := report.New(cfg, time.Now())
	stopReports := func() {}
	if *reportPath != "" {
		stopReports = job.Every(reportEvery, func() {
			if err := rep.Snapshot(metricname.Live()).Write(*reportPath); err != nil {
				log.Warn("write the report", "error", err)
			}
		})
	}
	log.Info("stream starting", "brokers", *brokers, "topic", src.Topic, "group", src.Group)
	res, err := runners.Run(ctx, pipeline(cfg, src))
	if ctx.Err() != nil && err != nil {
		log.Warn("stream stopped before all it read was delivered; what was not stays uncommitted, and a restart reads it again",
			"cause", context.Cause(ctx))
		err = nil // stopping is the way a stream job ends
	}
	stopCommits()
	if cerr := pr.commit(); cerr != nil && err == nil {
		err = cerr
	} else if len(pr.last) > 0 {
		log.Info("offsets committed", "next", pr.last)
	} else {
		log.Info("no offsets committed: no record was finished by workers in this process")
	}
	stopReports()
	rep.AddMetrics(res)
	if live := metricname.Live(); len(live) > 0 {
		// This process's workers ran the job: their counts are complete, where a
		// runner's metrics were seen to miss a last bundle, or are absent after a
		// cancel.
		rep.SetCounts(live)
	}
	code := job.ExitOK
	switch {
	case err != nil:
		code, err = job.ExitFailed, job.Failure(ctx, err)
	case rep.DeadLettered() > 0:
		code = job.ExitDeadLettered
	}
	return job.End("stream", rep, code, err, *reportPath)
}

const (
	// commitEvery is how often the group's offsets are committed while the job runs.
	commitEvery = 5 * time.Second
	// reportEvery is how often --report is rewritten while the job runs.
	reportEvery = 10 * time.Second
	// startTimeout bounds reaching the brokers at startup.
	startTimeout = 30 * time.Second
)

// progress commits the group's offsets as far as what was read before them is
// finished (package ack).
type progress struct {
	c          *kafkaio.Committer
	last       map[int32]int64 // what was committed
	partitions int             // the topic's partitions whose start is committed
}

// commit commits the partitions whose position moved, and the starting offset of
// partitions added to the topic since the last call.
func (pr *progress) commit() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	added := pr.commitAdded(ctx)
	next := ack.Committable()
	maps.DeleteFunc(next, func(p int32, o int64) bool { last, ok := pr.last[p]; return ok && last == o })
	if err := pr.c.Commit(ctx, next); err != nil {
		return errors.Join(added, err)
	}
	maps.Copy(pr.last, next)
	return added
}

// commitAdded commits, for partitions added to the topic since the job started, the
// offset the pipeline starts them at (their earliest), unless one is committed
// already: a restart then resumes them there even if nothing was read from them.
func (pr *progress) commitAdded(ctx context.Context) error {
	n, err := pr.c.Partitions(ctx)
	if err != nil || n <= pr.partitions {
		return err
	}
	started, n, err := pr.c.CommitStarts(ctx, "earliest")
	if err != nil {
		return err
	}
	for _, p := range started {
		oplog.L().Info("starting offset committed for a partition added to the topic", "partition", p.Partition, "offset", p.Start)
	}
	pr.partitions = n
	return nil
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
	oplog.L().Info("stopping: delivering what was read", "shutdown_timeout", *shutdown)
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
	deadletterio.WriteLive(s, cfg.DeadLetter, beam.Flatten(s, append(undeliverable, invalid)...))
	return p
}
