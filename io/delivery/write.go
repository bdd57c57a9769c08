package delivery

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamwindow "github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/outflow/outflow/internal/ack"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/metricname"
	"github.com/outflow/outflow/io/deadletterio"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
)

func init() {
	register.DoFn6x1[context.Context, beam.Window, string, encode.Chunk, func(string, Batch), func(deadletterio.Record), error](&batchFn{})
	register.Emitter2[string, Batch]()
}

// Write delivers windowed impressions to HTTP destinations: each key's chunk of a
// window (pane) becomes batches within the destination's limits, and deliverFn sends
// them. It returns the dead-letter records of what could not be delivered.
//
// In: PCollection<KV<string, encode.Chunk>> keyed by route.Key, from
// encode.Objects(encode.Binary); out: PCollection<deadletterio.Record>.
func Write(s beam.Scope, targets []Target, chunks beam.PCollection) beam.PCollection {
	s = s.Scope("delivery.Write")
	batches, tooBig := beam.ParDo2(s, &batchFn{Targets: targets}, chunks)
	// Batches outlive their window while they are retried, so state is per key only.
	global := beamwindow.NewGlobalWindows()
	dead := beam.ParDo(s, newDeliverFn(targets), beam.WindowInto(s, global, batches))
	return beam.Flatten(s, beam.WindowInto(s, global, tooBig), dead)
}

// batchFn turns a window's impressions for one key into request batches: copies of an
// impression dropped (the first seen kept), sorted so every run forms the same
// batches, packed within the destination's limits.
type batchFn struct {
	Targets []Target `json:"targets"`

	dests                   map[string]Destination
	impressions, duplicates map[string]metricname.Counter
	deadLettered            map[string]metricname.Counter
}

func (fn *batchFn) Setup() error {
	fn.dests = map[string]Destination{}
	fn.impressions, fn.duplicates, fn.deadLettered = map[string]metricname.Counter{}, map[string]metricname.Counter{}, map[string]metricname.Counter{}
	for _, t := range fn.Targets {
		d, err := NewDestination(t.Kind, t.Settings)
		if err != nil {
			return fmt.Errorf("delivery: integration %q: %w", t.ID, err)
		}
		fn.dests[t.ID] = limited{d, t.Policy}
		fn.impressions[t.ID] = metricname.NewCounter(t.ID, metricname.Impressions)
		fn.duplicates[t.ID] = metricname.NewCounter(t.ID, metricname.Duplicates)
		fn.deadLettered[t.ID] = metricname.NewCounter(t.ID, metricname.DeadLettered)
	}
	return nil
}

func (fn *batchFn) ProcessElement(ctx context.Context, w beam.Window, key string, c encode.Chunk, emit func(string, Batch), dead func(deadletterio.Record)) error {
	id, shard := route.SplitKey(key)
	d, ok := fn.dests[id]
	if !ok {
		return fmt.Errorf("delivery: no target for integration %q", id)
	}
	var imps []impression.Impression
	dups, err := c.Each(func(rec []byte) error {
		imp, err := impression.Unmarshal(rec)
		imps = append(imps, imp)
		return err
	})
	if err != nil {
		return fmt.Errorf("delivery: %s: %w", key, err)
	}
	fn.impressions[id].Inc(ctx, int64(len(imps)))
	fn.duplicates[id].Inc(ctx, int64(dups))
	slices.SortFunc(imps, func(a, b impression.Impression) int {
		return cmp.Or(cmp.Compare(a.Time, b.Time), bytes.Compare(a.ID[:], b.ID[:]))
	})
	window := w.(beamwindow.IntervalWindow).Start.Milliseconds()
	batches, tooBig, reason, err := pack(d, id, window, shard, imps)
	if err != nil {
		return err
	}
	// The batches and dead-letter records now hold what the chunk held; its
	// duplicates are finished here (package ack).
	if ack.Enabled() {
		for _, b := range batches {
			for i := range b.Imps {
				ack.Hold(b.Imps[i].Origin, 1)
			}
		}
		for i := range tooBig {
			ack.Hold(tooBig[i].Origin, 1)
		}
		ack.Done(c.Origins()...)
	}
	for _, b := range batches {
		emit(key, b)
	}
	fn.deadLettered[id].Inc(ctx, int64(len(tooBig)))
	for i := range tooBig {
		dead(deadletterio.Undeliverable(id, &tooBig[i], 0, 0, reason, batchID(id, window, shard, -1, tooBig)))
	}
	return nil
}

// limited narrows a destination's limits to the integration's delivery settings.
type limited struct {
	Destination
	policy Config
}

func (l limited) Limits() Limits {
	lim := l.Destination.Limits()
	if n := l.policy.MaxBatchEvents; n > 0 && (lim.MaxEvents == 0 || n < lim.MaxEvents) {
		lim.MaxEvents = n
	}
	if n := l.policy.MaxBatchBytes; n > 0 && (lim.MaxBytes == 0 || n < lim.MaxBytes) {
		lim.MaxBytes = n
	}
	return lim
}
