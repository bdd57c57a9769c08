package sinks

import (
	"context"
	"fmt"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/transforms/route"
)

func init() {
	register.DoFn6x0[context.Context, beam.EventTime, string, impression.Impression,
		func(string, impression.Impression), func(deadletterio.Record)](&straysFn{})
	register.Emitter1[deadletterio.Record]()
}

// Strays sets apart, for an object store, the routed impressions of a stream that the
// reader timestamped away from their own time (impressionio.FromRecords: far older or
// far newer than their Kafka record). Stored by the stream, such an impression would
// land in a window not its own, chosen by when it was read, and a backfill or a second
// read would store it again in another; so it is dead-lettered for its integration,
// with reason "late" or "ahead", and replay stores it in its own window.
//
// In: PCollection<KV<string, impression.Impression>> keyed by route.Key. Out: the same,
// less the strays; PCollection<deadletterio.Record>.
func Strays(s beam.Scope, routed beam.PCollection) (kept, dead beam.PCollection) {
	s = s.Scope("sinks.Strays")
	return beam.ParDo2(s, &straysFn{}, routed)
}

type straysFn struct{}

func (straysFn) ProcessElement(ctx context.Context, at beam.EventTime, key string, imp impression.Impression,
	keep func(string, impression.Impression), dead func(deadletterio.Record)) {
	if imp.Time == at.Milliseconds() {
		keep(key, imp)
		return
	}
	class, side := "late", "before"
	if imp.Time > at.Milliseconds() {
		class, side = "ahead", "after"
	}
	id, _ := route.SplitKey(key)
	metricname.NewCounter(id, metricname.DeadLettered).Inc(ctx, 1)
	metricname.NewCounter(id, metricname.DeadLetteredBy+metricname.By+class).Inc(ctx, 1)
	reason := fmt.Sprintf("%s: impression time %s is too long %s its Kafka record's for the stream's windows; replay stores it in its own",
		class, time.UnixMilli(imp.Time).UTC().Format(time.RFC3339Nano), side)
	dead(deadletterio.Undeliverable(id, &imp, 0, 0, reason, class))
}
