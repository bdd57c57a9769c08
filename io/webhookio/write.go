package webhookio

import (
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/outflow/outflow/internal/configkit"
	"github.com/outflow/outflow/io/delivery"
)

func init() { delivery.Register(Kind, delivery.FromConfig(newDestination)) }

// Kind names webhook integrations in delivery targets and configuration.
const Kind = "webhook"

// Defaults is the webhook delivery policy where the config says nothing: modest, as
// receivers are customers' own servers, and a 15 s timeout.
var Defaults = delivery.Config{RequestsPerSecond: 20, MaxBatchEvents: 500, MaxBatchBytes: 256 << 10,
	Timeout: configkit.Duration(15 * time.Second)}

// Write posts windowed chunks of impressions (encode.Objects in encode.Binary), keyed
// by route.Key, to webhooks and returns the dead-letter records of those it could not
// deliver, and the marks of a stream's (delivery.Write).
func Write(s beam.Scope, targets []delivery.Target, chunks beam.PCollection) (dead, marks beam.PCollection) {
	return delivery.Write(s.Scope("webhookio.Write"), targets, chunks)
}
