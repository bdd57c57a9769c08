// Command bench measures outflow on this machine, each figure beside its reference
// from the same run:
//
//	go run ./cmd/bench -mode s3 -n 1000000   # backfill to S3 vs a plain Go loop (the ceiling); -runner-args: and on another runner
//	go run ./cmd/bench -mode goodput         # HTTP delivery vs a destination's rate limit
//	go run ./cmd/bench -mode isolation       # healthy destinations with and without a throttled one
//	go run ./cmd/bench -mode stream -n 200000 -seconds 20   # the stream job: catch-up rate, live delay beside a throttled webhook
//	go run ./cmd/bench -mode catchup         # catch-up to 9 rate-limited HTTP destinations, then a Retry-After pause
//	go run ./cmd/bench -mode surge           # the stream job through R, 10 × R, R: delay, drain, RSS, catch-up vs backfill
//	go run ./cmd/bench -mode outage          # the stream job while one webhook answers 503 for 30 min: probes, recovery, others' events/s, dead letters
//
// s3 generates N impressions, then in each of -rounds rounds times (1) a plain Go
// loop that parses, encodes and gzips them per integration on every core with no
// Beam, and (2) the backfill command on the embedded prism runner writing them to an
// S3 API server on loopback (s3.go); it checks every impression was delivered and
// prints both rates, their ratio, CPU per million, the backfill's peak RSS and the
// targets. The HTTP modes are in http.go, the stream
// mode (catch-up rate, then delivery delay at half and all of it) in stream.go, the
// catchup mode (issue 12: full requests at a learned limit, CPU while paused) in
// catchup.go, the surge mode (issue 13: delay through a tenfold surge, the time to
// drain it, catch-up against the backfill) in surge.go, the outage mode (issue 26:
// one webhook answering -down-status, 503 without Retry-After by default, for
// -outage, 30 min, at -rate, default 300 impressions/s; its probes a minute and its
// recovery to its limit, the other HTTP destinations' events/s against their ideal,
// the impressions dead-lettered, peak RSS, the healthy destinations' delay before,
// during and after it, and the down webhook's impressions delivered, dead-lettered or
// lost) in outage.go and outageissue.go.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/outflow/outflow/internal/gen"
)

func main() {
	var (
		mode     = flag.String("mode", "s3", "s3, goodput, isolation, stream, catchup, surge or outage")
		rate     = flag.Float64("rate", 20, "goodput, catchup: the destination's limit, requests per second; outage: impressions/s produced (default 300); stream: one live phase at this many impressions/s")
		seconds  = flag.Int("seconds", 60, "goodput: about how long to keep the destination busy; stream: how long each live phase lasts")
		n        = flag.Int("n", 1000000, "s3: impressions; stream, surge: the backlog to catch up on (surge: default 200000); catchup: the catch-up's impressions (default 200000)")
		files    = flag.Int("files", 8, "input files (s3: default 12, half of them gzip)")
		tenants  = flag.Int("tenants", 3, "tenants, one S3 integration each (s3: default 20, and a CSV integration; catchup: amplitude, segment and webhook each)")
		rounds   = flag.Int("rounds", 3, "s3: rounds, each timing the plain loop and the backfill")
		endpoint = flag.String("s3-endpoint", "", "S3-compatible server to write to (default: one started in process); credentials from the AWS environment")
		workDir  = flag.String("dir", "", "working directory (default: a temporary one, removed afterwards)")
		runner   = flag.String("runner-args", "", "s3: also run each round's backfill with these runner flags, space-separated (e.g. --runner=flink --endpoint=localhost:8099), beside the one on prism; stream: run the stream job with them")
		jobPID   = flag.Int("job-server-pid", 0, "s3: the job server's process (e.g. scripts/flink-job-server's java): its CPU counts with the backfill's, and its peak RSS is printed")
	)
	flag.Parse()
	dir, cleanup, err := workdir(*workDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer cleanup()
	switch *mode {
	case "s3":
		if !flagGiven("files") {
			*files = 12
		}
		if !flagGiven("tenants") {
			*tenants = 20
		}
		err = benchS3(*n, *files, *tenants, max(1, *rounds), *endpoint, dir, strings.Fields(*runner), *jobPID)
	case "goodput":
		err = benchGoodput(*rate, *seconds, dir)
	case "isolation":
		err = benchIsolation(dir)
	case "stream":
		live := 0.0
		if flagGiven("rate") {
			live = *rate
		}
		err = benchStream(*n, *tenants, *seconds, live, *surgeThrottled, dir, strings.Fields(*runner))
	case "catchup":
		err = benchCatchup(*n, *tenants, *files, *rate, dir)
	case "surge":
		err = benchSurge(*n, *tenants, *files, dir)
	case "outage":
		err = benchOutage(*rate, *tenants, dir)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// workdir returns the directory to work in and how to clean it up.
func workdir(dir string) (string, func(), error) {
	if dir != "" {
		return dir, func() {}, os.MkdirAll(dir, 0o755)
	}
	tmp, err := os.MkdirTemp("", "outflow-bench")
	return tmp, func() { os.RemoveAll(tmp) }, err
}

// prepare generates the input and builds the backfill, returning the input glob and
// the binary.
func prepare(dir string, o gen.Options, files int) (glob, bin string, err error) {
	input := filepath.Join(dir, "input")
	fmt.Printf("generating %d impressions, %d tenants, in %d gzip files…\n", o.N, o.Tenants, files)
	if err := gen.WriteFiles(input, files, true, o); err != nil {
		return "", "", fmt.Errorf("generate: %w", err)
	}
	bin = filepath.Join(dir, "backfill")
	if err := command("go", "build", "-o", bin, "./pipelines/backfill").Run(); err != nil {
		return "", "", fmt.Errorf("build: %w", err)
	}
	return filepath.Join(input, "*.gz"), bin, nil
}

// backfillRun is how a backfill run went.
type backfillRun struct {
	out     []byte
	elapsed time.Duration
	rssKiB  int64
	code    int
}

// backfill runs the backfill binary; an exit code other than 0 or allowCode fails.
func backfill(bin, cfg, glob string, allowCode int) (backfillRun, error) {
	cmd := exec.Command(bin, "--config", cfg, "--input", glob)
	cmd.Stderr = os.Stderr
	start := time.Now()
	out, err := cmd.Output()
	r := backfillRun{out: out, elapsed: time.Since(start)}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return r, err
		}
		if r.code = ee.ExitCode(); r.code != allowCode {
			return r, fmt.Errorf("backfill exited with code %d:\n%s", r.code, out)
		}
	}
	r.rssKiB = cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss
	return r, nil
}

func command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd
}

func numCPU() int { return runtime.GOMAXPROCS(0) }
