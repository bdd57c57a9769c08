package delivery

import (
	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	beamwindow "github.com/apache/beam/sdks/v2/go/pkg/beam/core/graph/window"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
)

func init() {
	register.Function2x2(byIntegration)
}

// Write delivers windowed impressions to HTTP destinations and returns the dead-letter
// records of what could not be delivered. Each key's impressions wait in deliverFn's
// state until the destination can take a request, and leave in requests as full as
// its limits allow, across event-time windows: in a stream the window (plus
// flushAfter) bounds how long an impression waits, not how large a request is.
//
// In: PCollection<KV<string, encode.Chunk>> keyed by route.Key, from
// encode.Objects(encode.Binary); out: PCollection<deadletterio.Record>, and marks
// (package ack) of Track targets, PCollection<KV<int32, []byte>>.
func Write(s beam.Scope, targets []Target, chunks beam.PCollection) (dead, marks beam.PCollection) {
	s = s.Scope("delivery.Write")
	// Impressions outlive their window while they wait, so state is per key only; and
	// one key per integration, so its shards' impressions fill requests together.
	global := beam.WindowInto(s, beamwindow.NewGlobalWindows(), chunks)
	return beam.ParDo2(s, newDeliverFn(targets), beam.ParDo(s, byIntegration, global))
}

// byIntegration keys a shard's chunk by its integration. Copies of an impression are
// in one shard's chunk, where encode dropped them, so nothing needs the shard after.
func byIntegration(key string, c encode.Chunk) (string, encode.Chunk) {
	id, _ := route.SplitKey(key)
	return id, c
}

// limited is a destination whose limits are narrowed to the integration's delivery
// settings, with its frame counted in the envelope.
type limited struct {
	Destination
	limits Limits
}

func newLimited(d Destination, policy Config) limited {
	lim := d.Limits()
	if n := policy.MaxBatchEvents; n > 0 && (lim.MaxEvents == 0 || n < lim.MaxEvents) {
		lim.MaxEvents = n
	}
	if n := policy.MaxBatchBytes; n > 0 && (lim.MaxBytes == 0 || n < lim.MaxBytes) {
		lim.MaxBytes = n
	}
	open, closing := d.Frame()
	lim.Envelope = len(open) + len(closing)
	return limited{d, lim}
}

func (l limited) Limits() Limits { return l.limits }

// current is the destination with the event limit it was seen to take (its 413s).
func (d *dest) current() Destination {
	lim := d.d.Limits()
	if n := d.lim.maxEvents(lim.MaxEvents); n != lim.MaxEvents {
		lim.MaxEvents = n
		return limited{d.d, lim}
	}
	return d.d
}
