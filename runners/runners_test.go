package runners

import (
	"flag"
	"os"
	"runtime"
	"testing"

	jobpb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/jobmanagement_v1"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"google.golang.org/protobuf/types/known/structpb"
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

// A job with an unbounded PCollection goes to the job server marked streaming, with
// the options it had; a bounded one goes as it was.
func TestMarkStreaming(t *testing.T) {
	job := func(b pipepb.IsBounded_Enum) *jobpb.PrepareJobRequest {
		return &jobpb.PrepareJobRequest{
			Pipeline: &pipepb.Pipeline{Components: &pipepb.Components{Pcollections: map[string]*pipepb.PCollection{
				"a": {IsBounded: pipepb.IsBounded_BOUNDED}, "b": {IsBounded: b}}}},
			PipelineOptions: &structpb.Struct{Fields: map[string]*structpb.Value{"beam:option:app_name:v1": structpb.NewStringValue("x")}},
		}
	}
	stream := job(pipepb.IsBounded_UNBOUNDED)
	markStreaming(stream)
	if v := stream.PipelineOptions.Fields["beam:option:streaming:v1"]; v == nil || !v.GetBoolValue() ||
		stream.PipelineOptions.Fields["beam:option:app_name:v1"].GetStringValue() != "x" {
		t.Errorf("unbounded: options %v; want streaming true beside app_name", stream.PipelineOptions)
	}
	batch := job(pipepb.IsBounded_BOUNDED)
	markStreaming(batch)
	if _, ok := batch.PipelineOptions.Fields["beam:option:streaming:v1"]; ok {
		t.Errorf("bounded: options %v; want no streaming option", batch.PipelineOptions)
	}
}
