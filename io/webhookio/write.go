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
// receivers are customers' own servers, and a 15 s timeout. A batch that keeps
// failing is retried on Svix's schedule, which receivers expect: 5 s, 5 min, 30 min,
// 2 h, 5 h, 10 h, 10 h, the last about 27.6 h after the first send, within 28 h.
var Defaults = delivery.Config{RequestsPerSecond: 20, MaxBatchEvents: 500, MaxBatchBytes: 256 << 10,
	Timeout:          configkit.Duration(15 * time.Second),
	MaxRetryDuration: configkit.Duration(28 * time.Hour),
	RetrySchedule: []configkit.Duration{configkit.Duration(5 * time.Second), configkit.Duration(5 * time.Minute),
		configkit.Duration(30 * time.Minute), configkit.Duration(2 * time.Hour), configkit.Duration(5 * time.Hour),
		configkit.Duration(10 * time.Hour), configkit.Duration(10 * time.Hour)}}

// Write posts windowed chunks of impressions (encode.Objects in encode.Binary), keyed
// by route.Key, to webhooks and returns the dead-letter records of those it could not
// deliver, and the marks of a stream's (delivery.Write).
func Write(s beam.Scope, targets []delivery.Target, chunks beam.PCollection) (dead, marks beam.PCollection) {
	return delivery.Write(s.Scope("webhookio.Write"), targets, chunks)
}
