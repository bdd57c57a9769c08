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
// failing is retried for 28 h, in Svix's spirit: quickly at first, as a failure is
// most often a blip (1 s doubling to 10 min), then hours apart (30 min, 1 h, 2 h,
// 5 h, 10 h, 10 h). A receiver that is down sees only the circuit's probes meanwhile,
// and once it answers, what waited goes at once (delivery's circuit).
var Defaults = delivery.Config{RequestsPerSecond: 20, MaxBatchEvents: 500, MaxBatchBytes: 256 << 10,
	Timeout:          configkit.Duration(15 * time.Second),
	MaxRetryDuration: configkit.Duration(28 * time.Hour),
	RetrySchedule:    retrySchedule(),
}

func retrySchedule() []configkit.Duration {
	var s []configkit.Duration
	for d := time.Second; d <= 10*time.Minute; d *= 2 {
		s = append(s, configkit.Duration(d))
	}
	for _, d := range []time.Duration{30 * time.Minute, time.Hour, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour} {
		s = append(s, configkit.Duration(d))
	}
	return s
}

// Write posts windowed chunks of impressions (encode.Objects in encode.Binary), keyed
// by route.Key, to webhooks and returns the dead-letter records of those it could not
// deliver, and the marks of a stream's (delivery.Write).
func Write(s beam.Scope, targets []delivery.Target, chunks beam.PCollection) (dead, marks beam.PCollection) {
	return delivery.Write(s.Scope("webhookio.Write"), targets, chunks)
}
