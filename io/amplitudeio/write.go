package amplitudeio

import (
	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/outflow/outflow/io/delivery"
)

func init() { delivery.Register(Kind, delivery.FromConfig(newDestination)) }

// Kind names Amplitude integrations in delivery targets and configuration.
const Kind = "amplitude"

// Defaults is Amplitude's delivery policy where the config says nothing: plans cap
// the project at about 100 batches a second.
var Defaults = delivery.Config{RequestsPerSecond: 100, MaxBatchEvents: 1000, MaxBatchBytes: 10_000_000}

// Write sends windowed chunks of impressions (encode.Objects in encode.Binary), keyed
// by route.Key, to Amplitude and returns the dead-letter records of those it could not
// deliver, and the marks of a stream's (delivery.Write).
func Write(s beam.Scope, targets []delivery.Target, chunks beam.PCollection) (dead, marks beam.PCollection) {
	return delivery.Write(s.Scope("amplitudeio.Write"), targets, chunks)
}
