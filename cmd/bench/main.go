// Command bench measures the backfill against its ceiling, in one run on this machine:
//
//	go run ./cmd/bench -n 1000000
//
// It generates N impressions, then times (1) a plain Go loop that parses, encodes and
// gzips them on one core with no Beam: the ceiling, and (2) the backfill command on
// the embedded prism runner writing them to an S3 API server on loopback; it prints
// both rates, their ratio and the backfill's peak RSS.
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
		n        = flag.Int("n", 1000000, "impressions")
		files    = flag.Int("files", 8, "input files")
		tenants  = flag.Int("tenants", 3, "tenants, one S3 integration each")
		endpoint = flag.String("s3-endpoint", "", "S3-compatible server to write to (default: one started in process); credentials from the AWS environment")
		workDir  = flag.String("dir", "", "working directory (default: a temporary one, removed afterwards)")
	)
	flag.Parse()
	if err := run(*n, *files, *tenants, *endpoint, *workDir); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(n, files, tenants int, endpoint, dir string) error {
	if dir == "" {
		tmp, err := os.MkdirTemp("", "outflow-bench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	input := filepath.Join(dir, "input")
	fmt.Printf("generating %d impressions, %d tenants, in %d gzip files…\n", n, tenants, files)
	if err := command("go", "run", "./cmd/gen", "-n", fmt.Sprint(n), "-tenants", fmt.Sprint(tenants),
		"-files", fmt.Sprint(files), "-seed", "1", "-out", input).Run(); err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	bin := filepath.Join(dir, "backfill")
	if err := command("go", "build", "-o", bin, "./pipelines/backfill").Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}

	loopRate, loopCount, err := plainLoop(filepath.Join(input, "*.gz"))
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
	cmd := exec.Command(bin, "--config", cfg, "--input", filepath.Join(input, "*.gz"), "--report", filepath.Join(dir, "report.json"))
	cmd.Stderr = os.Stderr
	start := time.Now()
	out, err := cmd.Output()
	elapsed := time.Since(start)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("backfill exited with code %d:\n%s", ee.ExitCode(), out)
		}
		return err
	}
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss // KiB on Linux
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

func command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd
}

func numCPU() int { return runtime.GOMAXPROCS(0) }
