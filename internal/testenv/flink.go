package testenv

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jobpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/jobmanagement_v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// SkipFlinkEnv, when set, skips the tests on Flink (.ci/run's second pass, against
// MinIO, which they ran in already).
const SkipFlinkEnv = "OUTFLOW_SKIP_FLINK"

// FlinkEndpointEnv names a running Beam Flink job server (HOST:PORT) to test against
// instead of starting one.
const FlinkEndpointEnv = "OUTFLOW_TEST_FLINK_ENDPOINT"

// RequireJavaEnv, set, makes a test fail rather than skip when a server that runs on
// Java (the Flink job server, Kafka) cannot be started for want of Java: CI sets it.
const RequireJavaEnv = "OUTFLOW_REQUIRE_JAVA"

// flinkStartLimit bounds the wait for a job server: the first start fetches its
// jars (about 150 MB) from Maven Central.
const flinkStartLimit = 5 * time.Minute

var flink struct {
	sync.Mutex
	endpoint string
	server   *script
	err      error
	log      SyncBuffer // the job server's output, for a failure's message
	dir      string     // its --flink-conf-dir
}

// flinkConf is the Flink configuration the tests' job server runs every job with, as
// an operator would (scripts/flink-job-server --flink-conf-dir): a failed job is
// restarted, twice at most, a second apart, and reads on from the commits
// (TestStreamRecoversOnFlink). No checkpointing: the stream's checkpoints cannot
// complete on Beam 2.62's Flink runner (README, Running on Flink), and nothing of
// outflow's progress lives in Flink's state.
const flinkConf = `restart-strategy.type: fixed-delay
restart-strategy.fixed-delay.attempts: 2
restart-strategy.fixed-delay.delay: 1 s
`

// FlinkJobServer returns the endpoint of a Beam portable Flink job server with an
// embedded Flink cluster: $OUTFLOW_TEST_FLINK_ENDPOINT, or one scripts/flink-job-server
// starts for the test process, shared by its tests and stopped by Main. Without
// Java or Maven the test is skipped, saying so, unless $OUTFLOW_REQUIRE_JAVA is set.
func FlinkJobServer(t testing.TB) string {
	t.Helper()
	if os.Getenv(SkipFlinkEnv) != "" {
		t.Skipf("the tests on Flink are skipped: $%s is set", SkipFlinkEnv)
	}
	if ep := os.Getenv(FlinkEndpointEnv); ep != "" {
		return ep
	}
	flink.Lock()
	defer flink.Unlock()
	if flink.endpoint == "" && flink.err == nil {
		flink.endpoint, flink.err = startFlink()
	}
	if flink.err != nil {
		if _, err := exec.LookPath("java"); err != nil && os.Getenv(RequireJavaEnv) == "" {
			t.Skipf("no Flink job server (set %s to fail instead): %v", RequireJavaEnv, flink.err)
		}
		t.Fatalf("Flink job server: %v\n%s", flink.err, flink.log.String())
	}
	return flink.endpoint
}

// FlinkFlags are the runner flags that send a pipeline to FlinkJobServer's job
// server, with its workers in the launching process (LOOPBACK).
func FlinkFlags(t testing.TB) []string {
	t.Helper()
	return []string{"--runner=flink", "--endpoint=" + FlinkJobServer(t), "--environment_type=LOOPBACK"}
}

func startFlink() (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	if flink.dir, err = os.MkdirTemp("", "outflow-flink-"); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(flink.dir, "config.yaml"), []byte(flinkConf), 0o644); err != nil {
		return "", err
	}
	var endpoint string
	flink.server, err = startScript(&flink.log, nil, flinkStartLimit, func(line string) bool {
		var ok bool
		endpoint, ok = strings.CutPrefix(line, "endpoint ")
		return ok
	}, "flink-job-server", "--port", strconv.Itoa(port), "--flink-conf-dir", flink.dir)
	return endpoint, err
}

// stopFlink stops a job server FlinkJobServer started.
func stopFlink() {
	if flink.server != nil {
		flink.server.stop()
		flink.server = nil
	}
	if flink.dir != "" {
		os.RemoveAll(flink.dir)
	}
}

// SyncBuffer is a bytes.Buffer a subprocess may write while a test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *SyncBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *SyncBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// PortableJob is a job as a portable job server (Flink's, prism's) tells it.
type PortableJob struct {
	ID, Name string
	State    jobpb.JobState_Enum
}

// PortableJobs asks the job service at endpoint for the jobs it knows whose names
// begin with prefix: a launcher's --job_name, which Flink's job server keeps the
// letters and digits of, followed by the user and the time.
func PortableJobs(t testing.TB, endpoint, prefix string) []PortableJob {
	t.Helper()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := jobpb.NewJobServiceClient(conn).GetJobs(ctx, &jobpb.GetJobsRequest{})
	if err != nil {
		t.Fatalf("the job service at %s lists no jobs: %v", endpoint, err)
	}
	var jobs []PortableJob
	for _, j := range resp.GetJobInfo() {
		if strings.HasPrefix(j.GetJobName(), prefix) {
			jobs = append(jobs, PortableJob{ID: j.GetJobId(), Name: j.GetJobName(), State: j.GetState()})
		}
	}
	return jobs
}
