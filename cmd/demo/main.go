// Command demo shows outflow end to end on this machine, with nothing to install:
//
//	go run ./cmd/demo
//
// It starts an S3 API server on loopback that keeps objects as files under
// out/demo/s3, builds the backfill pipeline, runs it on the embedded prism runner over
// testdata/sample with testdata/demo.yaml, then shows where the objects are and
// prints the report.
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

	"github.com/outflow/outflow/internal/config"
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
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	for _, in := range cfg.Integrations {
		if err := srv.CreateBucket(in.S3.Bucket); err != nil {
			return err
		}
	}
	fmt.Printf("S3 API server: %s (objects kept as files under %s/buckets)\n\n", srv.Endpoint, storeDir)

	bin := filepath.Join(out, "bin", "backfill")
	fmt.Println("$ go build -o", bin, "./pipelines/backfill    # the first build of Beam takes a few minutes")
	if err := command("go", "build", "-o", bin, "./pipelines/backfill").Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	reportPath := filepath.Join(out, "report.json")
	args := []string{"--config", cfgPath, "--input", input, "--report", reportPath}
	fmt.Printf("\n$ OUTFLOW_DEMO_S3_ENDPOINT=%s %s %s\n", srv.Endpoint, bin, strings.Join(quote(args), " "))
	runErr := command(bin, args...).Run()
	var ee *exec.ExitError
	if runErr != nil && !errors.As(runErr, &ee) {
		return runErr
	}

	fmt.Println("\nObjects written (each a gzip file; zcat one to read it):")
	if err := listObjects(storeDir, cfg); err != nil {
		return err
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
