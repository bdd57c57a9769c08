// Command stream delivers impressions from a Kafka topic as they arrive (CONTRACT §3):
//
//	stream --config CONFIG --brokers HOST:PORT[,…] --topic TOPIC [--report FILE]
//	       [--group NAME] [--start earliest|latest] [--start-timeout D] [--shutdown-timeout D] [--metrics-addr HOST:PORT]
//
// plus Beam's runner flags. It runs until stopped.
//
// The pipeline commits the consumer group's offsets itself, every 5 s, as
// far as every record read before them is finished: its impressions delivered,
// stored or dead-lettered. The stages that finish them say so as marks, and a
// committer keyed by partition folds them into a ledger (packages ack and kafkaio).
// So it holds wherever the workers run, and a restart resumes there: only what was
// in flight is read again (HTTP destinations may see those impressions again, under
// the same ids; object stores leave out what an object holds already). Before the
// pipeline runs, the launcher commits where it starts each partition the group has
// no offset for (--start): a restart resumes every partition, even one nothing was
// read from. A pipeline reads the partitions listed when it starts; when the topic
// has more, the launcher drains it as below and runs a new one, which reads the new
// partitions from their earliest offsets (runGrowing). It does the same every
// --restart-every, for Flink job servers that keep state for every checkpoint a
// reader takes until the job ends.
//
// Kafka flags beyond CONTRACT §3: TLS (--kafka-tls, --kafka-ca, --kafka-cert,
// --kafka-key), SASL (--kafka-sasl, --kafka-user, the password in
// $OUTFLOW_KAFKA_PASSWORD), --isolation (read_committed by default) and
// --offset-out-of-range (fail by default, or earliest).
//
// SIGINT or SIGTERM drains it: reading stops, what was read is delivered, the last
// offsets are committed and the pipeline finishes. If the drain takes longer than
// --shutdown-timeout the job is cancelled; what was finished by then is committed.
// A second signal stops at once. Draining reaches the readers of workers in this
// process (the embedded prism runner, LOOPBACK); with remote workers a signal cancels
// the job after --shutdown-timeout, which loses nothing either: the offsets
// committed are where a restart resumes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/internal/oplog"
	"github.com/outflow/outflow/internal/ops"
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
	configPath  = flag.String("config", "", "configuration file (YAML, CONTRACT §2); required")
	brokers     = flag.String("brokers", "", "Kafka bootstrap brokers, HOST:PORT[,…]; required")
	topic       = flag.String("topic", "", "the topic to read impressions from; required")
	group       = flag.String("group", "outflow", "consumer group whose committed offsets say where to start")
	start       = flag.String("start", "earliest", "where a partition with no committed offset starts: earliest or latest")
	reportPath  = flag.String("report", "", "write a JSON report of the run to this file")
	startWait   = flag.Duration("start-timeout", 30*time.Second, "how long to keep trying to reach the brokers and buckets at startup before failing")
	breakLease  = job.BreakLease()
	shutdown    = flag.Duration("shutdown-timeout", time.Minute, "on SIGINT/SIGTERM, how long to deliver what was read before giving up")
	metricsAddr = job.MetricsAddr()

	kafkaTLS  = flag.Bool("kafka-tls", false, "reach the brokers over TLS")
	kafkaCA   = flag.String("kafka-ca", "", "PEM file of the certificates that sign the brokers' (implies --kafka-tls); default: the system's")
	kafkaCert = flag.String("kafka-cert", "", "PEM file of this client's certificate, for brokers that authenticate clients by certificate (with --kafka-key)")
	kafkaKey  = flag.String("kafka-key", "", "PEM file of the key of --kafka-cert")
	kafkaSASL = flag.String("kafka-sasl", "", "SASL mechanism: plain, scram-sha-256 or scram-sha-512, with --kafka-user and the password in $"+kafkaPasswordEnv)
	kafkaUser = flag.String("kafka-user", "", "SASL user")
	isolation = flag.String("isolation", kafkaio.ReadCommitted, "which records are read: "+kafkaio.ReadCommitted+
		" (records of aborted or open transactions never are) or "+kafkaio.ReadUncommitted)
	restartEvery = flag.Duration("restart-every", 0, "start a new pipeline this often, as when partitions are added (0: never). "+
		"For Flink job servers without apache/beam#39191 (2.73 and older), which keep state for every checkpoint a Kafka reader takes until the job ends (apache/beam#27648)")
	outOfRange = flag.String("offset-out-of-range", kafkaio.FailLost, "when the offset to read next is no longer in the log "+
		"(retention passed it): "+kafkaio.FailLost+" (exit 1, naming the records lost) or "+kafkaio.SkipLost+
		" (go on from the earliest offset held, with an ERROR line)")
)

// kafkaPasswordEnv holds the SASL password: in the environment, not on the command
// line, where ps would show it.
const kafkaPasswordEnv = "OUTFLOW_KAFKA_PASSWORD"

const usage = `usage: stream --config CONFIG --brokers HOST:PORT[,…] --topic TOPIC [--report FILE]
              [--group NAME] [--start earliest|latest] [--start-timeout D] [--shutdown-timeout D] [--break-lease]
              [--kafka-tls] [--kafka-ca PEM] [--kafka-cert PEM --kafka-key PEM]
              [--kafka-sasl plain|scram-sha-256|scram-sha-512 --kafka-user NAME]
              [--isolation read_committed|read_uncommitted] [--offset-out-of-range fail|earliest]
              [--restart-every D] [--metrics-addr HOST:PORT] [runner flags]`

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
	src := kafkaio.Config{Topic: *topic, Group: *group, Start: *start, Isolation: *isolation, OffsetOutOfRange: *outOfRange}
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
	case src.Isolation != kafkaio.ReadCommitted && src.Isolation != kafkaio.ReadUncommitted:
		problems = append(problems, fmt.Sprintf("--isolation: %q is neither %s nor %s", src.Isolation, kafkaio.ReadCommitted, kafkaio.ReadUncommitted))
	case src.OffsetOutOfRange != kafkaio.FailLost && src.OffsetOutOfRange != kafkaio.SkipLost:
		problems = append(problems, fmt.Sprintf("--offset-out-of-range: %q is neither %s nor %s", src.OffsetOutOfRange, kafkaio.FailLost, kafkaio.SkipLost))
	case *startWait <= 0:
		problems = append(problems, fmt.Sprintf("--start-timeout must be positive, not %v", *startWait))
	case *shutdown <= 0:
		problems = append(problems, fmt.Sprintf("--shutdown-timeout must be positive, not %v", *shutdown))
	case *restartEvery < 0 || (*restartEvery > 0 && *restartEvery < 10*time.Second):
		problems = append(problems, fmt.Sprintf("--restart-every must be 0 (never) or at least 10s, not %v", *restartEvery))
	}
	src.Security = kafkaio.Security{TLS: *kafkaTLS || *kafkaCA != "" || *kafkaCert != "", SASL: *kafkaSASL, User: *kafkaUser,
		Password: os.Getenv(kafkaPasswordEnv)}
	unread := false // a file that could not be read: its problem is said already
	for _, f := range []struct {
		name, path string
		pem        *string
	}{{"--kafka-ca", *kafkaCA, &src.Security.CAPEM}, {"--kafka-cert", *kafkaCert, &src.Security.CertPEM}, {"--kafka-key", *kafkaKey, &src.Security.KeyPEM}} {
		if f.path == "" {
			continue
		}
		pem, err := os.ReadFile(f.path)
		if err != nil {
			problems, unread = append(problems, fmt.Sprintf("%s: %v", f.name, err)), true
		}
		*f.pem = string(pem)
	}
	if err := src.Security.Validate(); err != nil && !unread {
		problems = append(problems, fmt.Sprintf("--kafka-tls, --kafka-ca, --kafka-cert, --kafka-key, --kafka-sasl, --kafka-user, $%s: %v", kafkaPasswordEnv, err))
	}
	problems = append(problems, runners.FlagProblems()...)
	cfg := job.LoadConfig(*configPath, &problems)
	if len(problems) > 0 {
		return job.UsageError("stream", usage, problems)
	}

	cfg.Live = true // late data accepted, delay alerts on
	log := job.Logger()
	rep := report.New(cfg, time.Now())
	committer, err := kafkaio.NewCommitter(src)
	if err != nil {
		return job.End("stream", rep, job.ExitFailed, err, *reportPath)
	}
	defer committer.Close()
	// The report is only read until the job ends (ops.Close below), then completed.
	srv, err := job.ServeOps(*metricsAddr, func() *report.Report { return rep.Snapshot(metricname.Live()) },
		ops.KafkaLag(committer.Lag))
	if err != nil {
		return job.End("stream", rep, job.ExitFailed, err, *reportPath)
	}
	defer srv.Close()
	srv.NotReady("reaching the Kafka brokers " + *brokers)
	// Every partition the group has no offset for is committed where this run starts
	// it, so a restart resumes there even if nothing was read from it; and the
	// pipeline reads a partition still without one as one added since (earliest).
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	starting, cancelStart := context.WithTimeout(context.Background(), *startWait)
	started, partitions, err := commitStarts(starting, committer, src.Start, srv)
	code := job.ExitFailed
	if err == nil {
		srv.NotReady("reaching the object stores")
		err = job.CheckStores(starting, cfg)
	}
	if err == nil {
		code, err = job.CheckObjects(starting, cfg) // exit 2: objects it cannot write beside
	}
	if err == nil { // exit 2: another job writes there
		var leases *job.Leases
		leases, code, err = job.HoldLeases(starting, cfg, "stream",
			fmt.Sprintf("stream of topic %s for group %s", src.Topic, src.Group), *breakLease, cancel)
		if err == nil {
			defer leases.Release()
		}
	}
	cancelStart()
	if err != nil {
		srv.Close() // before the report is completed
		return job.End("stream", rep, code, err, *reportPath)
	}
	src.StartsCommitted = true
	for _, p := range started {
		log.Info("starting offset committed: the group had none", "topic", src.Topic, "partition", p.Partition,
			"offset", p.Start, "start", src.Start)
	}
	// What the job dead-letters decides exit 3 even when the runner returns no
	// metrics (a job cancelled on remote workers): each file written leaves a receipt.
	runID := fmt.Sprintf("stream-%d", time.Now().UnixNano())
	go drainOnSignal(ctx, cancel)
	stopReports := func() {}
	if *reportPath != "" {
		stopReports = job.Every(reportEvery, func() {
			if err := rep.Snapshot(metricname.Live()).Write(*reportPath); err != nil {
				log.Warn("write the report", "error", err)
			}
		})
	}
	log.Info("stream starting", "brokers", *brokers, "topic", src.Topic, "group", src.Group)
	srv.Ready()
	results, err := runGrowing(ctx, cfg, src, committer, partitions, runID)
	srv.Close()
	lostLease := errors.Is(context.Cause(ctx), job.ErrLeaseLost) // another run writes there now
	if ctx.Err() != nil && err != nil && !lostLease {
		log.Warn("stream stopped before all it read was delivered; what was not stays uncommitted, and a restart reads it again",
			"cause", context.Cause(ctx))
		err = nil // stopping is the way a stream job ends
	}
	logCommitted(committer)
	stopReports()
	tally, terr := countDeadLettered(rep, results, cfg.DeadLetter, runID)
	code = job.ExitOK
	switch {
	case lostLease:
		code, err = job.ExitFailed, context.Cause(ctx)
	case err != nil:
		code, err = job.ExitFailed, job.Failure(ctx, err)
	case terr != nil:
		code, err = job.ExitFailed, terr
	case rep.DeadLettered() > 0 || tally.Impressions() > 0:
		code = job.ExitDeadLettered
	}
	return job.End("stream", rep, code, err, *reportPath)
}

// countDeadLettered fills the report's counts once the pipelines have ended, and
// returns what the run wrote to the dead-letter store (its receipts). Counts come
// from this process's workers if they ran the job (complete, where a runner's
// metrics were seen to miss a last bundle), else from the runner. A runner that
// returned none for a pipeline (a job cancelled on remote workers) leaves the
// store's counts, and the report says the others miss its work. An error means the
// counts were needed from the store and could not be read.
func countDeadLettered(rep *report.Report, results []beam.PipelineResult, deadLetter, run string) (deadletterio.Tally, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tally, err := deadletterio.ReadTally(ctx, deadLetter, run)
	if err == nil {
		if err := deadletterio.ClearReceipts(ctx, deadLetter, run); err != nil {
			oplog.L().Warn("could not remove this run's dead-letter receipts; they are harmless", "run", run, "error", err)
		}
	}
	complete := len(results) > 0 // every pipeline's counts known
	for _, res := range results {
		if !rep.AddMetrics(res) {
			complete = false
		}
	}
	if live := metricname.Live(); len(live) > 0 {
		rep.SetCounts(live)
		complete = true
	}
	switch {
	case complete:
		if err != nil {
			oplog.L().Warn("could not read this run's dead-letter receipts; the counts are the workers'", "error", err)
		}
		return tally, nil
	case err != nil:
		return tally, fmt.Errorf("the runner returned no metrics, and what the job dead-lettered cannot be counted from the store %s: %w", deadLetter, err)
	}
	rep.InvalidLines, rep.FileErrors = tally.InvalidLines, tally.FileErrors
	for i := range rep.Integrations {
		rep.Integrations[i].DeadLettered = tally.DeadLettered[rep.Integrations[i].ID]
	}
	rep.Incomplete = "the runner returned no metrics for a pipeline (a job cancelled on remote workers): dead_lettered and " +
		"invalid_lines come from the dead-letter store; the other counts miss that pipeline's work (unknown, not zero)"
	return tally, nil
}

const (
	// reportEvery is how often --report is rewritten while the job runs.
	reportEvery = 10 * time.Second
)

// commitStarts commits the starting offsets, trying again every second until ctx
// ends: brokers that start with the job are waited for, and /readyz says why not yet
// (srv, if not nil). It returns the partitions it committed and how many the topic has.
func commitStarts(ctx context.Context, c *kafkaio.Committer, start string, srv *ops.Server) ([]kafkaio.Partition, int, error) {
	for {
		started, partitions, err := c.CommitStarts(ctx, start)
		if lost := (*kafkaio.LostError)(nil); err == nil || errors.As(err, &lost) {
			return started, partitions, err // records lost: trying again changes nothing
		}
		if srv != nil {
			srv.NotReady("reaching the Kafka brokers: " + err.Error())
		}
		select {
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("starting offsets: %w (gave up after --start-timeout %v)", err, *startWait)
		case <-time.After(time.Second):
		}
	}
}

// partitionsEvery is how often the topic is looked at for partitions added to it.
const partitionsEvery = 10 * time.Second

// errRestart ends a pipeline whose drain for a restart took longer than restartDrain
// (or --shutdown-timeout, if shorter).
var errRestart = errors.New("restarting the pipeline")

// restartDrain bounds how long a restart waits for the pipeline to drain before it
// cancels it: while it drains, nothing is read, and a destination that is behind
// would hold every other one up to --shutdown-timeout. What a cancel leaves
// uncommitted the next pipeline reads again.
const restartDrain = 10 * time.Second

// runGrowing runs the pipeline until ctx ends or the pipeline fails, and returns each
// run's result. A pipeline reads the partitions listed when it starts: when the topic
// has more, or when the pipeline has run for --restart-every, runGrowing drains the
// pipeline as a signal would (cancelling it if that takes longer than restartDrain
// or --shutdown-timeout), commits the new partitions' earliest offsets and runs a new
// pipeline, which reads them from there and the others from their commits.
// --restart-every bounds what Beam's Flink runner keeps for the Kafka readers'
// checkpoints up to 2.73 at least (apache/beam#27648, fixed by apache/beam#39191): a state
// descriptor for each, every second or two per partition, until the job ends.
func runGrowing(ctx context.Context, cfg *config.Config, src kafkaio.Config, c *kafkaio.Committer, partitions int, runID string) ([]beam.PipelineResult, error) {
	var results []beam.PipelineResult
	for {
		running, cancelRun := context.WithCancelCause(ctx)
		var restart atomic.Bool
		were := partitions
		go func() {
			n, ok := waitForRestart(running, c, were, *restartEvery)
			if !ok {
				return
			}
			restart.Store(true)
			if n > were {
				oplog.L().Info("partitions added to the topic: draining the pipeline to start one that reads them",
					"topic", src.Topic, "partitions", n, "were", were)
			} else {
				oplog.L().Info("the pipeline has run for --restart-every: draining it to start a new one",
					"restart_every", *restartEvery)
			}
			kafkaio.Drain()
			select {
			case <-running.Done():
			case <-time.After(min(*shutdown, restartDrain)):
				cancelRun(errRestart)
			}
		}()
		res, err := runners.Run(running, pipeline(cfg, src, runID))
		cause := context.Cause(running)
		cancelRun(nil)
		results = append(results, res)
		if !restart.Load() || ctx.Err() != nil || (err != nil && !errors.Is(cause, errRestart)) {
			return results, err
		}
		if err != nil {
			oplog.L().Warn("the pipeline did not drain in time: what it had not delivered stays uncommitted, and the next one reads it again",
				"waited", min(*shutdown, restartDrain))
		}
		kafkaio.Resume()
		if stopping.Load() {
			kafkaio.Drain()
			return results, nil
		}
		starting, cancelStart := context.WithTimeout(ctx, *startWait)
		started, n, err := commitStarts(starting, c, "earliest", nil)
		cancelStart()
		if err != nil {
			return results, err
		}
		for _, p := range started {
			oplog.L().Info("reading a partition added to the topic", "topic", src.Topic, "partition", p.Partition, "from", p.Start)
		}
		partitions = n
	}
}

// waitForRestart waits until the topic has more than partitions partitions, or every
// has passed (if > 0), and returns how many partitions it has then (as many, for
// the latter), or false when ctx ends first.
func waitForRestart(ctx context.Context, c *kafkaio.Committer, partitions int, every time.Duration) (int, bool) {
	tick := time.NewTicker(partitionsEvery)
	defer tick.Stop()
	var due <-chan time.Time
	if every > 0 {
		timer := time.NewTimer(every)
		defer timer.Stop()
		due = timer.C
	}
	for {
		select {
		case <-ctx.Done():
			return 0, false
		case <-due:
			return partitions, true
		case <-tick.C:
		}
		if n, err := c.Partitions(ctx); err == nil && n > partitions {
			return n, true
		}
	}
}

// stopping says that a signal asked the job to stop (drainOnSignal): no new pipeline
// starts after it.
var stopping atomic.Bool

// logCommitted logs where the group's offsets are as the job ends: where a restart
// resumes.
func logCommitted(c *kafkaio.Committer) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	next, err := c.Committed(ctx)
	if err != nil {
		oplog.L().Warn("could not read the offsets committed", "error", err)
		return
	}
	oplog.L().Info("offsets committed: a restart resumes there", "next", next)
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
	stopping.Store(true)
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
// deliver, dead-letter what cannot be, and commit the offsets of what is finished.
func pipeline(cfg *config.Config, src kafkaio.Config, runID string) *beam.Pipeline {
	p, s := beam.NewPipelineWithRoot()

	parts := kafkaio.Partitions(s, src)
	imps, invalid, read := impressionio.FromRecords(s, kafkaio.ReadPartitions(s, src, parts),
		windowing.AllowedLateness/2, sinks.Targets(cfg.Integrations))
	out := sinks.Deliver(s, cfg, func(s beam.Scope, targets []route.Target) beam.PCollection {
		return route.Fanout(s, targets, imps)
	})
	stored := deadletterio.WriteLive(s, cfg.DeadLetter, beam.Flatten(s, append(out.Dead, invalid)...),
		deadletterio.Receipts(runID))
	// Every stage that finishes what was read says so; the offsets follow.
	kafkaio.Commit(s, src, parts, append(out.Marks, read, stored)...)
	return p
}
