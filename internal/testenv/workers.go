package testenv

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam/runners/prism"
)

// Workers is a prism job server in the test's process and SDK workers in a process
// of their own (a --worker-pool process of a pipeline's binary, package runners):
// a cluster's shape, where nothing the launcher holds in memory reaches the workers.
type Workers struct {
	// Flags are the runner flags that send a launcher's job there.
	Flags []string
	pool  *exec.Cmd
	out   strings.Builder
	ended chan struct{}
}

// ExternalWorkers starts a job server and the worker pool of the pipeline binary bin.
func ExternalWorkers(t testing.TB, bin string) *Workers {
	t.Helper()
	jobPort, poolPort := mustFreePort(t), mustFreePort(t)
	// The job server lives as long as the test's process: prism has no way to stop
	// one. A test that needs a fresh one starts another.
	if _, err := prism.CreateJobServer(context.Background(), prism.Options{Port: jobPort}); err != nil {
		t.Fatal(err)
	}
	w := &Workers{pool: exec.Command(bin, "--worker-pool", strconv.Itoa(poolPort)), ended: make(chan struct{})}
	w.pool.Stderr = &w.out
	if err := w.pool.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.pool.Wait(); close(w.ended) }()
	t.Cleanup(func() {
		w.Kill()
		t.Logf("worker pool %d:\n%s", poolPort, w.out.String())
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", "localhost:"+strconv.Itoa(poolPort)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker pool does not listen on port %d:\n%s", poolPort, w.out.String())
		}
	}
	w.Flags = []string{"--runner", "universal", "--endpoint", "localhost:" + strconv.Itoa(jobPort),
		"--environment_type", "EXTERNAL", "--environment_config", "localhost:" + strconv.Itoa(poolPort)}
	return w
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
