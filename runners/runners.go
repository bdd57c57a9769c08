// Package runners turns Beam's runner flags into a running pipeline: the one place
// that knows which runners outflow supports.
//
//   - default (no --runner): embedded prism, in this process, nothing to install;
//   - --runner=universal --endpoint=HOST:PORT: a portable job server (Flink's job
//     server, or prism started as one); with a job server on this machine the
//     workers run in this process (--environment_type=LOOPBACK) unless another
//     environment is given;
//   - --runner=dataflow with the usual Dataflow flags (--project, --region,
//     --staging_location, …).
//
// --worker-pool PORT makes a process of the same binary host the SDK workers of jobs
// submitted with --environment_type=EXTERNAL --environment_config=localhost:PORT: the
// workers then run outside the launching process, as on a cluster.
package runners

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners/universal/extworker"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/x/beamx"
)

var workerPool = flag.Int("worker-pool", 0, "host SDK workers on this port (Beam's external worker pool) and run no job")

// ServeWorkerPool, when --worker-pool is given, hosts SDK workers until ctx ends and
// reports true: the caller runs no job. Jobs reach them with
// --environment_type=EXTERNAL --environment_config=localhost:PORT; the workers run the
// DoFns registered in this binary.
func ServeWorkerPool(ctx context.Context) (served bool, err error) {
	if *workerPool == 0 {
		return false, nil
	}
	pool, err := extworker.StartLoopback(ctx, *workerPool)
	if err != nil {
		return true, fmt.Errorf("--worker-pool %d: %w", *workerPool, err)
	}
	<-ctx.Done()
	return true, pool.Stop(context.Background())
}

// Run runs p on the runner named by --runner (embedded prism when none is) and
// returns its result, whose metrics are the committed values. When ctx ends before
// the job does, a job submitted to a job server is cancelled there (see
// runOnJobServer) and Run returns an error: the job's work was not done.
func Run(ctx context.Context, p *beam.Pipeline) (beam.PipelineResult, error) {
	defaultLoopback()
	defaultWorkerBinary()
	noPrismSplits()
	if runner := flag.Lookup("runner"); runner != nil && toJobServer(runner.Value.String()) {
		return runOnJobServer(ctx, p)
	}
	return beamx.RunWithMetrics(ctx, p)
}

// runnerNames are the names Beam's runners register (v2.77) in a binary that imports
// beamx: --runner must be one of them, exactly.
var runnerNames = []string{"prism", "PrismRunner", "universal", "portable", "PortableRunner", "flink", "FlinkRunner",
	"spark", "SparkRunner", "dataflow", "DataflowRunner", "direct", "DirectRunner", "dot", "vet"}

// FlagProblems checks the runner flags before anything runs, for a command to tell
// with its other bad flags (exit 2). Left to Beam, an unknown --runner ends the
// process with exit 1 and no word of why (beam.Run calls log.Exitf, which the
// commands keep quiet) once the command holds its leases, and a job server's runner
// without --endpoint fails every job.
func FlagProblems() []string {
	runner, endpoint := flag.Lookup("runner"), flag.Lookup("endpoint")
	if runner == nil || runner.Value.String() == "" {
		return nil
	}
	switch name := runner.Value.String(); {
	case !slices.Contains(runnerNames, name):
		return []string{fmt.Sprintf("--runner: %q is not a runner: prism (the default), universal or flink (with --endpoint), dataflow", name)}
	case toJobServer(name) && (endpoint == nil || endpoint.Value.String() == ""):
		return []string{fmt.Sprintf("--runner=%s needs --endpoint HOST:PORT, its job server's", name)}
	}
	return nil
}

// toJobServer reports whether the runner named submits jobs to a portable job server
// (Beam's universal runner and its aliases).
func toJobServer(runner string) bool {
	switch strings.ToLower(runner) {
	case "universal", "portable", "portablerunner", "flink", "flinkrunner", "spark", "sparkrunner":
		return true
	}
	return false
}

// defaultWorkerBinary stages this very binary as the SDK workers' program when a job
// goes to a job server whose workers do not run in this process. Left to itself,
// Beam's universal runner `go build`s the program again from its source at every
// submission (with -trimpath and cgo off, so nothing of this binary's build is
// reused): minutes with a cold build cache, per job, and a worker built from whatever
// the source is by then rather than from what the launcher runs. Workers are
// linux/amd64, so only a launcher of that platform can lend itself.
func defaultWorkerBinary() {
	runner, env, bin := flag.Lookup("runner"), flag.Lookup("environment_type"), flag.Lookup("worker_binary")
	if runner == nil || env == nil || bin == nil || bin.Value.String() != "" ||
		runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		return
	}
	if !toJobServer(runner.Value.String()) {
		return
	}
	if strings.EqualFold(env.Value.String(), "LOOPBACK") {
		return // the workers are this process; Beam stages no program
	}
	if self, err := os.Executable(); err == nil {
		bin.Value.Set(self)
	}
}

// noPrismSplits turns off prism's dynamic splitting unless on Dataflow. Prism splits a
// bundle that shows no progress between two polls and re-queues a copy of the rest of
// its input; while other jobs of a backfill share the cores that happens again and
// again. Measured on 5M impressions, two jobs at once: 481 s and 3.5 GiB with
// splitting, 51 s and 2.1 GiB without. Other runners ignore the experiment.
func noPrismSplits() {
	const experiment = "prism_disable_sdf_split"
	runner, experiments := flag.Lookup("runner"), flag.Lookup("experiments")
	if experiments == nil || (runner != nil && strings.EqualFold(runner.Value.String(), "dataflow")) {
		return
	}
	have := experiments.Value.String()
	if slices.Contains(strings.Split(have, ","), experiment) {
		return
	}
	if have != "" {
		have += ","
	}
	experiments.Value.Set(have + experiment)
}

// defaultLoopback runs the workers in this process when a job goes to a job server on
// this machine and no environment is chosen: without it the universal runner would
// ask for a Docker worker image, which a local job server rarely has. A remote job
// server (a Flink cluster) keeps Beam's default.
func defaultLoopback() {
	runner, endpoint, env := flag.Lookup("runner"), flag.Lookup("endpoint"), flag.Lookup("environment_type")
	if runner == nil || endpoint == nil || env == nil || env.Value.String() != "" {
		return
	}
	if !toJobServer(runner.Value.String()) {
		return
	}
	host, _, err := net.SplitHostPort(endpoint.Value.String())
	if err != nil {
		return
	}
	if ip, err := netip.ParseAddr(host); host == "localhost" || (err == nil && ip.IsLoopback()) {
		env.Value.Set("LOOPBACK")
	}
}

// FlagsHelp describes the runner flags for a command's usage message.
const FlagsHelp = `runner flags (Beam's):
  --runner NAME           prism (default: embedded, nothing to install), universal or flink, dataflow
  --endpoint HOST:PORT    job server for --runner=universal (Flink's, or prism's own)
  --environment_type T    LOOPBACK runs workers in this process (local job servers); DOCKER;
                          EXTERNAL with --environment_config HOST:PORT: a worker pool
  --worker_binary PATH    the program remote workers run (default: this binary, linux/amd64)
  --worker-pool PORT      host SDK workers for EXTERNAL jobs on PORT and run no job
  --project, --region, --staging_location, --temp_location …   Dataflow`

// Cause returns the root cause of a failed job in one line. Runners wrap a DoFn's
// error in the job id, the bundle and the whole execution plan; operators need the
// DoFn's own message, which comes last.
func Cause(err error) string {
	msg := strings.TrimSpace(err.Error())
	for _, sep := range []string{"caused by:", "failed:\n"} {
		if i := strings.LastIndex(msg, sep); i >= 0 {
			if rest := strings.TrimSpace(msg[i+len(sep):]); rest != "" {
				msg = rest
			}
		}
	}
	if i := strings.LastIndex(msg, "] failed:\n"); i >= 0 {
		msg = strings.TrimSpace(msg[i+len("] failed:\n"):])
	}
	return strings.Join(strings.Fields(msg), " ")
}

// End ends branches of a pipeline whose last stage runs long, a writer's, by giving
// that stage an output that crosses a shuffle: cols are the writers' outputs (marks,
// empty in a batch job), and must be KV PCollections. Prism v2.77 busy-waits through
// every bundle of a stage that has no outputs: its progress loop keeps selecting a
// channel that is already closed until the bundle's response (stage.go, dataReady).
// In bench -mode s3 five write stages each spun for the 1.2 s of their uploads,
// 440,000-550,000 selects apiece, on a machine of two cores. With an output, prism
// blocks until the bundle ends. Elsewhere End is a shuffle of nothing.
func End(s beam.Scope, cols ...beam.PCollection) {
	s = s.Scope("runners.End")
	for _, col := range cols {
		beam.GroupByKey(s, col)
	}
}
