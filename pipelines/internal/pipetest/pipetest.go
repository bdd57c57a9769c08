// Package pipetest helps the pipelines' tests check their graphs without running them.
package pipetest

import (
	"fmt"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/core/runtime/graphx"
	pipepb "github.com/apache/beam/sdks/v2/go/pkg/beam/model/pipeline_v1"
	"google.golang.org/protobuf/proto"

	"github.com/outflow/outflow/internal/config"
)

// Portable fails t unless every stateful DoFn of p uses only the state every runner
// serves (Value, Bag and Combining; Dataflow Runner v2 serves no Map, Set, Multimap or
// OrderedList state) and at most one timer family (two hang prism, BEAM-NOTES). It
// walks the pipeline proto a runner receives.
func Portable(t *testing.T, p *beam.Pipeline) {
	t.Helper()
	edges, _, err := p.Build()
	if err != nil {
		t.Fatal(err)
	}
	model, err := graphx.Marshal(edges, &graphx.Options{Environment: &pipepb.Environment{Urn: "beam:env:loopback:v1"}})
	if err != nil {
		t.Fatal(err)
	}
	stateful := 0
	for id, tr := range model.GetComponents().GetTransforms() {
		if tr.GetSpec().GetUrn() != "beam:transform:pardo:v1" {
			continue
		}
		var pardo pipepb.ParDoPayload
		if err := proto.Unmarshal(tr.GetSpec().GetPayload(), &pardo); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if len(pardo.GetStateSpecs()) > 0 || len(pardo.GetTimerFamilySpecs()) > 0 {
			stateful++
		}
		for name, spec := range pardo.GetStateSpecs() {
			switch spec.GetSpec().(type) {
			case *pipepb.StateSpec_ReadModifyWriteSpec, *pipepb.StateSpec_BagSpec, *pipepb.StateSpec_CombiningSpec:
			default:
				t.Errorf("%s (%s): state %q is %s; only Value, Bag and Combining state are served by every runner",
					tr.GetUniqueName(), id, name, kind(spec))
			}
		}
		if n := len(pardo.GetTimerFamilySpecs()); n > 1 {
			t.Errorf("%s (%s): %d timer families; at most one (two hang prism)", tr.GetUniqueName(), id, n)
		}
	}
	if stateful == 0 {
		t.Error("no stateful DoFn in the graph; the walk proves nothing")
	}
}

func kind(spec *pipepb.StateSpec) string {
	return fmt.Sprintf("%T", spec.GetSpec())
}

// AllTypes returns a configuration with an integration of every type.
func AllTypes(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(allTypes))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

const allTypes = `
dead_letter: /tmp/outflow-dead-letter
allow_private_destinations: true
integrations:
  - {id: a-s3, tenant: acme, type: s3, s3: {bucket: acme-bucket, prefix: p, endpoint: "http://127.0.0.1:9"}}
  - {id: a-gcs, tenant: acme, type: gcs, gcs: {bucket: acme-bucket, prefix: p, format: csv}}
  - {id: a-amp, tenant: acme, type: amplitude, amplitude: {api_key: k, endpoint: "http://127.0.0.1:9"}}
  - {id: a-seg, tenant: acme, type: segment, segment: {write_key: k, endpoint: "http://127.0.0.1:9"}}
  - {id: a-hook, tenant: acme, type: webhook, webhook: {url: "http://127.0.0.1:9/h", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}
`
