package main

import (
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/internal/testenv"
)

// The backfill submitted to a portable job server over the Job API, the path a Flink
// job server takes: here prism started as a job server. Without an environment type,
// a local job server gets LOOPBACK workers (no Docker needed).
func TestUniversalRunner(t *testing.T) {
	prism := testenv.Build(t, "github.com/apache/beam/sdks/v2/go/cmd/prism")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	server := exec.Command(prism, fmt.Sprintf("--job_port=%d", port), "--web_port=0")
	var serverLog testenv.SyncBuffer
	server.Stdout, server.Stderr = &serverLog, &serverLog
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Process.Kill(); server.Wait() })
	for deadline := time.Now().Add(90 * time.Second); ; {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the prism job server did not listen on port %d within 90 s:\n%s", port, serverLog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	s3 := testenv.NewS3(t)
	bucket := s3.Bucket(t)
	cfgPath := writeConfig(t, fmt.Sprintf(`
dead_letter: %s
integrations:
  - {id: acme-s3, tenant: acme, type: s3, s3: {bucket: %s, prefix: a, endpoint: %s}}
  - {id: globex-s3, tenant: globex, type: s3, window: 1h, s3: {bucket: %s, prefix: g, endpoint: %s}}
`, t.TempDir(), bucket, s3.Endpoint, bucket, s3.Endpoint))
	cfg, _ := config.Load(cfgPath)
	// A job per integration: the job server takes more than one job of a run.
	r := runBackfill(t, "--config", cfgPath, "--input", sampleGlob, "--jobs-by", "integration",
		"--runner=universal", fmt.Sprintf("--endpoint=localhost:%d", port))
	if r.code != 0 {
		t.Fatalf("exit code %d\n%s", r.code, r.stderr)
	}
	if len(r.report.Jobs) != 2 || strings.Contains(r.stderr, "docker") {
		t.Errorf("jobs %+v\n%s", r.report.Jobs, r.stderr)
	}
	if log := serverLog.String(); strings.Count(log, "pipeline done") != 2 {
		t.Errorf("the job server did not run both jobs:\n%s", log)
	}
	in := readInput(t, sampleGlob)
	for _, ic := range cfg.Integrations {
		got, _ := delivered(t, s3, ic)
		checkExactlyOnce(t, ic.ID, in.want(ic, time.Time{}, time.Time{}), got)
	}
}
