package testenv

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	fnpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/fnexecution_v1"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Workers is SDK workers in a process of their own (a --worker-pool process of a
// pipeline's binary, package runners), with a prism job server in the test's process
// (ExternalWorkers) or behind any job server (WorkerPool): a cluster's shape, where
// nothing the launcher holds in memory reaches the workers.
type Workers struct {
	// Flags are the runner flags that send a launcher's job there.
	Flags []string
	bin   string
	port  int
	pool  *exec.Cmd
	out   SyncBuffer
	ended chan struct{}
}

// ExternalWorkers starts a job server and the worker pool of the pipeline binary bin.
func ExternalWorkers(t testing.TB, bin string) *Workers {
	t.Helper()
	jobPort := prismJobServer(t)
	w := WorkerPool(t, bin)
	w.Flags = append([]string{"--runner", "universal", "--endpoint", "localhost:" + strconv.Itoa(jobPort)}, w.Flags...)
	return w
}

// prismJobServer starts a prism job server in this process and returns its port. It
// lives as long as the process: prism has no way to stop one; a test that needs a
// fresh one starts another. A free port can be taken by another process before prism
// binds it, and prism then panics ("address already in use"): another port is tried.
func prismJobServer(t testing.TB) int {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port := mustFreePort(t)
		err := func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("prism job server on port %d: %v", port, r)
				}
			}()
			_, err = prism.CreateJobServer(context.Background(), prism.Options{Port: port})
			return err
		}()
		if err == nil {
			return port
		}
		if attempt == 5 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
}

// FlinkWorkers starts the worker pool of the pipeline binary bin, for FlinkJobServer's
// job server: its Flags send a launcher's job there, with its workers in the pool.
func FlinkWorkers(t testing.TB, bin string) *Workers {
	t.Helper()
	endpoint := FlinkJobServer(t)
	w := WorkerPool(t, bin)
	w.Flags = append([]string{"--runner=flink", "--endpoint=" + endpoint}, w.Flags...)
	return w
}

// WorkerPool starts the worker pool of the pipeline binary bin, for a job server the
// test chooses: its Flags are only the environment flags that send a job's workers
// there (--environment_type EXTERNAL --environment_config localhost:PORT).
func WorkerPool(t testing.TB, bin string) *Workers {
	t.Helper()
	w := &Workers{bin: bin, port: mustFreePort(t)}
	w.start(t)
	t.Cleanup(func() {
		w.Kill()
		t.Logf("worker pool %d:\n%s", w.port, w.out.String())
	})
	w.Flags = []string{"--environment_type", "EXTERNAL", "--environment_config", "localhost:" + strconv.Itoa(w.port)}
	return w
}

// start starts the pool's process on w.port and waits until it accepts work.
func (w *Workers) start(t testing.TB) {
	t.Helper()
	w.pool, w.ended = exec.Command(w.bin, "--worker-pool", strconv.Itoa(w.port)), make(chan struct{})
	w.pool.Stderr = &w.out
	if err := w.pool.Start(); err != nil {
		t.Fatal(err)
	}
	go func(pool *exec.Cmd, ended chan struct{}) { pool.Wait(); close(ended) }(w.pool, w.ended)
	// Ready when the pool answers a request to start a worker: one with no endpoints,
	// which it refuses with a reason. Listening alone is not enough.
	const patience = 90 * time.Second // a loaded machine is slow to start a large binary
	var last error
	for deadline := time.Now().Add(patience); ; time.Sleep(100 * time.Millisecond) {
		if last = probePool(w.port); last == nil {
			return
		}
		select {
		case <-w.ended:
			t.Fatalf("the worker pool on port %d exited before it accepted work (%v):\n%s", w.port, w.pool.ProcessState, w.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker pool on port %d did not accept work within %v: %v", w.port, patience, last) // its output: see Cleanup
		}
	}
}

// Restart kills the pool's process, and the workers in it, and starts a new one on
// the same port: a machine of the cluster lost and replaced.
func (w *Workers) Restart(t testing.TB) {
	t.Helper()
	w.Kill()
	w.start(t)
}

// probePool asks the worker pool on port to start a worker without endpoints: a
// pool that serves answers with the reason it cannot.
func probePool(port int) error {
	conn, err := grpc.NewClient("localhost:"+strconv.Itoa(port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := fnpb.NewBeamFnExternalWorkerPoolClient(conn).StartWorker(ctx, &fnpb.StartWorkerRequest{WorkerId: "testenv-probe"})
	if err != nil {
		return err
	}
	if resp.GetError() == "" {
		return errors.New("the pool started a worker without endpoints")
	}
	return nil
}

// Kill kills the worker pool's process (SIGKILL) and waits for it to end.
func (w *Workers) Kill() {
	w.pool.Process.Kill()
	<-w.ended
}

func mustFreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FreeAddr returns a loopback HOST:PORT that was free a moment ago.
func FreeAddr(t testing.TB) string {
	return "127.0.0.1:" + strconv.Itoa(mustFreePort(t))
}
