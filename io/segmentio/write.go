package segmentio

import (
	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/outflow/outflow/io/delivery"
)

func init() { delivery.Register(Kind, delivery.FromConfig(newDestination)) }

// Kind names Segment integrations in delivery targets and configuration.
const Kind = "segment"

// Defaults is Segment's delivery policy where the config says nothing; Segment
// recommends at most 1,000 requests a second per workspace.
var Defaults = delivery.Config{RequestsPerSecond: 200, MaxBatchEvents: 2500, MaxBatchBytes: 500_000}

// Write sends windowed chunks of impressions (encode.Objects in encode.Binary), keyed
// by route.Key, to Segment and returns the dead-letter records of those it could not
// deliver, and the marks of a stream's (delivery.Write).
func Write(s beam.Scope, targets []delivery.Target, chunks beam.PCollection) (dead, marks beam.PCollection) {
	return delivery.Write(s.Scope("segmentio.Write"), targets, chunks)
}
