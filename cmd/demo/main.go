// Command demo shows outflow end to end on this machine, with nothing to install:
//
//	go run ./cmd/demo
//
// It starts an S3 API server on loopback that keeps objects as files under
// out/demo/s3, and an Amplitude and a webhook simulator that rate-limit (429 with
// Retry-After); builds the backfill pipeline, runs it on the embedded prism runner
// over testdata/sample with testdata/demo.yaml while showing the simulators' counts
// live, then shows where the objects are, what the destinations received and the
// report.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/s3server"
	"github.com/outflow/outflow/transforms/encode"
)

func main() {
	out := flag.String("out", "out/demo", "directory for the demo's objects, dead letters, report and binary")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	const cfgPath, input = "testdata/demo.yaml", "testdata/sample/*"
	if _, err := os.Stat(cfgPath); err != nil {
		return fmt.Errorf("run the demo from the repository root: %w", err)
	}
	storeDir := filepath.Join(out, "s3")
	srv, err := s3server.Start(storeDir)
	if err != nil {
		return err
	}
	defer srv.Close()
	os.Setenv("OUTFLOW_DEMO_S3_ENDPOINT", srv.Endpoint)
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo-secret", "AWS_EC2_METADATA_DISABLED": "true"} {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	sims, err := startSimulators()
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range sims {
			s.sim.Close()
		}
	}()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	for _, in := range cfg.Integrations {
		if in.S3 != nil {
			if err := srv.CreateBucket(in.S3.Bucket); err != nil {
				return err
			}
		}
	}
	fmt.Printf("S3 API server: %s (objects kept as files under %s/buckets)\n", srv.Endpoint, storeDir)
	for _, s := range sims {
		fmt.Printf("%s simulator: %s, limited to %v requests/s (answers 429 with Retry-After beyond)\n", s.name, s.sim.URL(), s.rate)
	}
	fmt.Println()

	bin := filepath.Join(out, "bin", "backfill")
	fmt.Println("$ go build -o", bin, "./pipelines/backfill    # the first build of Beam takes a few minutes")
	if err := command("go", "build", "-o", bin, "./pipelines/backfill").Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	reportPath := filepath.Join(out, "report.json")
	args := []string{"--config", cfgPath, "--input", input, "--report", reportPath}
	fmt.Printf("\n$ %s %s\n", bin, strings.Join(quote(args), " "))
	stopLive := showLive(sims)
	runErr := command(bin, args...).Run()
	stopLive()
	var ee *exec.ExitError
	if runErr != nil && !errors.As(runErr, &ee) {
		return runErr
	}

	fmt.Println("\nObjects in the buckets (each a gzip file; zcat one to read it):")
	if err := listObjects(storeDir, cfg); err != nil {
		return err
	}
	fmt.Println("\nWhat the HTTP destinations received:")
	for _, s := range sims {
		st := s.sim.Status()
		fmt.Printf("  %-9s %d unique events, %d duplicates; %d requests: %d accepted, %d answered 429; %d sent before a Retry-After had passed\n",
			s.name, st.UniqueEvents, st.Duplicates, st.Requests, st.Accepted, st.Throttled, st.IgnoredRetryAfter)
	}
	fmt.Printf("\nDead-lettered input lines: %s/invalid/\n", cfg.DeadLetter)
	rep, err := os.ReadFile(reportPath)
	if err != nil {
		return err
	}
	fmt.Printf("\nReport (%s):\n%s", reportPath, rep)
	if runErr != nil {
		return fmt.Errorf("backfill exited with code %d", ee.ExitCode())
	}
	return nil
}

func command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd
}

func quote(args []string) []string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = a
		if strings.ContainsAny(a, "* ") {
			q[i] = "'" + a + "'"
		}
	}
	return q
}

// listObjects prints each data object with its impression count, and the first
// record of one of them.
func listObjects(dir string, cfg *config.Config) error {
	var paths []string
	err := filepath.WalkDir(filepath.Join(dir, "buckets"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".gz") {
			paths = append(paths, p)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	var sample string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		f := encode.NDJSON
		if strings.HasSuffix(p, ".csv.gz") {
			f = encode.CSV
		}
		recs, err := encode.ReadObject(bytes.NewReader(b), f)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		fmt.Printf("  %-110s %4d impressions\n", p, len(recs))
		if sample == "" && f == encode.NDJSON && len(recs) > 0 {
			line, _ := json.Marshal(recs[0])
			sample = fmt.Sprintf("  %s:\n    %s", filepath.Base(p), line)
		}
	}
	if sample != "" {
		fmt.Printf("\nFirst record of one object:\n%s\n", sample)
	}
	return nil
}

// simulator is a destination simulator the demo runs.
type simulator struct {
	name string
	rate float64
	sim  *destsim.Server
}

// startSimulators starts the Amplitude and webhook simulators of testdata/demo.yaml
// and points its variables at them.
func startSimulators() ([]simulator, error) {
	specs := []struct {
		name, env string
		o         destsim.Options
	}{
		{"amplitude", "OUTFLOW_DEMO_AMPLITUDE", destsim.Options{Kind: destsim.Amplitude, APIKey: "demo-amplitude-key", RateLimit: 3}},
		{"webhook", "OUTFLOW_DEMO_WEBHOOK", destsim.Options{Kind: destsim.Webhook, Tenant: "globex",
			Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", RateLimit: 2}},
	}
	var sims []simulator
	for _, sp := range specs {
		// Requests already on their way when a 429 goes out could not know it.
		sp.o.RetryAfterGrace = 100 * time.Millisecond
		s, err := destsim.Start(sp.o)
		if err != nil {
			return nil, err
		}
		os.Setenv(sp.env, s.URL())
		sims = append(sims, simulator{name: sp.name, rate: sp.o.RateLimit, sim: s})
	}
	return sims, nil
}

// showLive prints the simulators' counts every second while the backfill runs.
func showLive(sims []simulator) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				var parts []string
				for _, s := range sims {
					st := s.sim.Status()
					parts = append(parts, fmt.Sprintf("%s: %d events, %d requests, %d throttled", s.name, st.UniqueEvents, st.Requests, st.Throttled))
				}
				fmt.Printf("  [live] %s\n", strings.Join(parts, " | "))
			}
		}
	}()
	return func() { close(done); <-finished }
}
