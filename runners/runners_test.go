package runners

import (
	"flag"
	"os"
	"runtime"
	"testing"
)

// A job sent to a job server whose workers are elsewhere stages this binary, unless
// a worker binary is given; LOOPBACK and the embedded runner stage none.
func TestDefaultWorkerBinary(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("workers are linux/amd64: only such a launcher lends itself")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		runner, env, given, want string
	}{
		{"universal", "EXTERNAL", "", self},
		{"flink", "DOCKER", "", self},
		{"universal", "", "", self}, // a remote job server: Beam's default, a Docker image
		{"universal", "EXTERNAL", "/opt/worker", "/opt/worker"},
		{"universal", "LOOPBACK", "", ""},
		{"universal", "loopback", "", ""},
		{"prism", "", "", ""},
		{"", "", "", ""},
	} {
		setFlags(t, map[string]string{"runner": c.runner, "environment_type": c.env, "worker_binary": c.given})
		defaultWorkerBinary()
		if got := flag.Lookup("worker_binary").Value.String(); got != c.want {
			t.Errorf("--runner=%q --environment_type=%q --worker_binary=%q: worker binary %q, want %q", c.runner, c.env, c.given, got, c.want)
		}
	}
}

// setFlags sets Beam's flags for one case and puts them back when the test ends.
func setFlags(t *testing.T, values map[string]string) {
	t.Helper()
	for name, v := range values {
		f := flag.Lookup(name)
		if f == nil {
			t.Fatalf("no flag --%s", name)
		}
		old := f.Value.String()
		t.Cleanup(func() { f.Value.Set(old) })
		if err := f.Value.Set(v); err != nil {
			t.Fatal(err)
		}
	}
}
