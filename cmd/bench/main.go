// Command bench measures outflow on this machine, each figure beside its reference
// from the same run:
//
//	go run ./cmd/bench -mode s3 -n 1000000   # backfill to S3 vs a plain Go loop (the ceiling)
//	go run ./cmd/bench -mode goodput         # HTTP delivery vs a destination's rate limit
//	go run ./cmd/bench -mode isolation       # healthy destinations with and without a throttled one
//	go run ./cmd/bench -mode stream -n 200000 -seconds 20   # the stream job: catch-up rate, live delay
//	go run ./cmd/bench -mode catchup         # catch-up to 9 rate-limited HTTP destinations, then a Retry-After pause
//	go run ./cmd/bench -mode surge           # the stream job through R, 10 × R, R: delay, drain, RSS, catch-up vs backfill
//	go run ./cmd/bench -mode outage          # the stream job while one webhook answers 503 for 10 min: RSS, healthy delay, nothing lost
//
// s3 generates N impressions, then times (1) a plain Go loop that parses, encodes and
// gzips them on one core with no Beam, and (2) the backfill command on the embedded
// prism runner writing them to an S3 API server on loopback; it prints both rates,
// their ratio and the backfill's peak RSS. The HTTP modes are in http.go, the stream
// mode (catch-up rate, then delivery delay at half and all of it) in stream.go, the
// catchup mode (issue 12: full requests at a learned limit, CPU while paused) in
// catchup.go, the surge mode (issue 13: delay through a tenfold surge, the time to
// drain it, catch-up against the backfill) in surge.go, the outage mode (bounded
// memory under an outage: one webhook answering 503 for -outage at -rate, default
// 2,000 impressions/s; peak RSS, the healthy destinations' delay before, during and
// after it, and the down webhook's impressions delivered, dead-lettered past
// max_pending_impressions, or lost) in outage.go.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/outflow/outflow/internal/gen"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/s3server"
	"github.com/outflow/outflow/transforms/encode"
)

func main() {
	var (
		mode     = flag.String("mode", "s3", "s3, goodput, isolation, stream, catchup, surge or outage")
		rate     = flag.Float64("rate", 20, "goodput, catchup: the destination's limit, requests per second; outage: impressions/s produced (default 2000)")
		seconds  = flag.Int("seconds", 60, "goodput: about how long to keep the destination busy; stream: how long each live phase lasts")
		n        = flag.Int("n", 1000000, "s3: impressions; stream, surge: the backlog to catch up on (surge: default 200000); catchup: the catch-up's impressions (default 200000)")
		files    = flag.Int("files", 8, "input files")
		tenants  = flag.Int("tenants", 3, "tenants, one S3 integration each (catchup: amplitude, segment and webhook each)")
		endpoint = flag.String("s3-endpoint", "", "S3-compatible server to write to (default: one started in process); credentials from the AWS environment")
		workDir  = flag.String("dir", "", "working directory (default: a temporary one, removed afterwards)")
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
		err = benchS3(*n, *files, *tenants, *endpoint, dir)
	case "goodput":
		err = benchGoodput(*rate, *seconds, dir)
	case "isolation":
		err = benchIsolation(dir)
	case "stream":
		err = benchStream(*n, *tenants, *seconds, dir)
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

func benchS3(n, files, tenants int, endpoint, dir string) error {
	glob, bin, err := prepare(dir, gen.Options{N: n, Tenants: tenants, Seed: 1}, files)
	if err != nil {
		return err
	}

	loopRate, loopCount, err := plainLoop(glob)
	if err != nil {
		return err
	}

	if endpoint == "" {
		srv, err := s3server.Start("")
		if err != nil {
			return err
		}
		defer srv.Close()
		endpoint = srv.Endpoint
		if err := srv.CreateBucket("bench"); err != nil {
			return err
		}
		for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"} {
			if os.Getenv(k) == "" {
				os.Setenv(k, v)
			}
		}
	}
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	cfg := filepath.Join(dir, "bench.yaml")
	var sb strings.Builder
	fmt.Fprintf(&sb, "dead_letter: %s\nintegrations:\n", filepath.Join(dir, "dead-letter"))
	for i := range tenants {
		fmt.Fprintf(&sb, "  - {id: %s-s3, tenant: %s, type: s3, s3: {bucket: bench, prefix: %s, endpoint: %q}}\n",
			gen.TenantName(i), gen.TenantName(i), gen.TenantName(i), endpoint)
	}
	if err := os.WriteFile(cfg, []byte(sb.String()), 0o644); err != nil {
		return err
	}
	run, err := backfill(bin, cfg, glob, 0)
	if err != nil {
		return err
	}
	out, elapsed, rss := run.out, run.elapsed, run.rssKiB
	beamRate := float64(n) / elapsed.Seconds()

	fmt.Printf("\nplain Go loop, 1 core, parse+encode+gzip, no Beam:  %8.0f impressions/s  (%d in %.2fs)\n", loopRate, loopCount, float64(loopCount)/loopRate)
	fmt.Printf("backfill, prism, %d cores, to S3 on loopback:       %8.0f impressions/s  (%d in %.2fs wall, whole command)\n",
		numCPU(), beamRate, n, elapsed.Seconds())
	fmt.Printf("ratio backfill / plain loop: %.2f\n", beamRate/loopRate)
	fmt.Printf("backfill peak RSS: %d MiB\n", rss/1024)
	fmt.Printf("\nbackfill output:\n%s", out)
	return nil
}

// plainLoop is the ceiling: the same files read, parsed, encoded as NDJSON and
// gzipped per tenant, in one goroutine.
func plainLoop(glob string) (rate float64, count int, err error) {
	paths, err := filepath.Glob(glob)
	if err != nil {
		return 0, 0, err
	}
	type sink struct {
		zw  *gzip.Writer
		buf []byte
	}
	sinks := map[string]*sink{}
	enc := encode.NewEncoder(encode.NDJSON)
	start := time.Now()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return 0, 0, err
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			return 0, 0, err
		}
		br := bufio.NewReaderSize(zr, 256<<10)
		for {
			line, err := br.ReadSlice('\n')
			if len(line) > 0 {
				if imp, perr := impression.Parse(line); perr == nil {
					s := sinks[imp.Tenant]
					if s == nil {
						s = &sink{zw: gzip.NewWriter(io.Discard)}
						sinks[imp.Tenant] = s
					}
					// Chunks of about 64 KiB, as the pipeline compresses them.
					if s.buf = enc.Append(s.buf, &imp); len(s.buf) >= 64<<10 {
						s.zw.Write(s.buf)
						s.buf = s.buf[:0]
					}
					count++
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return 0, 0, fmt.Errorf("%s: %w", p, err)
			}
		}
		f.Close()
	}
	for _, s := range sinks {
		s.zw.Write(s.buf)
		s.zw.Close()
	}
	return float64(count) / time.Since(start).Seconds(), count, nil
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
