// Package sinks builds the delivery half of every pipeline: one branch per group of
// integrations sharing a type, window and format, from routing to the sink. It is
// where validated configuration (package config) becomes what the transforms and
// the io cores take (targets.go).
package sinks

import (
	"fmt"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/io/amplitudeio"
	_ "github.com/outflow/outflow/io/gcsio" // registers the gcs store
	"github.com/outflow/outflow/io/impressionio"
	"github.com/outflow/outflow/io/objectio"
	_ "github.com/outflow/outflow/io/s3io" // registers the s3 store
	"github.com/outflow/outflow/io/segmentio"
	"github.com/outflow/outflow/io/webhookio"
	"github.com/outflow/outflow/runners"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
	"github.com/outflow/outflow/transforms/windowing"
)

// batchHTTPWindow is the window of HTTP integrations in batch jobs (backfill, replay).
const batchHTTPWindow = time.Hour

// Router routes impressions to the given targets, keyed by route.Key and timestamped
// with impression time: route.Fanout for fresh input, route.Direct for replays.
type Router func(s beam.Scope, targets []route.Target) beam.PCollection

// Outputs are what the sinks leave to the rest of the pipeline.
type Outputs struct {
	// Dead holds the dead-letter records of what could not be delivered, one
	// collection per HTTP branch, and a stream's strays (Strays) per object store one.
	Dead []beam.PCollection
	// Marks report, in a stream (cfg.Live), the copies of impressions finished
	// (package ack).
	Marks []beam.PCollection
}

// Deliver routes, windows and writes impressions to every integration of cfg.
func Deliver(s beam.Scope, cfg *config.Config, routeTo Router) Outputs {
	var out Outputs
	var lateness time.Duration // a batch job has no late data
	if cfg.Live {
		lateness = windowing.AllowedLateness
	}
	for _, g := range Groups(cfg.Integrations) {
		s := s.Scope(fmt.Sprintf("%s-%s-%v", g.Type, g.Format, g.Window))
		window := g.Window
		if !cfg.Live && !g.Type.IsObjectStore() {
			// An HTTP window bounds how long a stream holds an impression, nothing
			// else; a batch job sends full requests across windows anyway, and larger
			// windows spare it a chunk per window and shard.
			window = max(window, batchHTTPWindow)
		}
		routed := routeTo(s, Targets(g.Integrations))
		if cfg.Live && g.Type.IsObjectStore() {
			var strays beam.PCollection
			routed, strays = Strays(s, routed)
			out.Dead = append(out.Dead, strays)
		}
		windowed := windowing.Fixed(s, window, lateness, routed)
		format := g.Format // object stores; HTTP sinks take the binary coding
		if format == "" {
			format = encode.Binary
		}
		chunks := encode.Objects(s, format, windowed)
		if cfg.Live {
			var dropped beam.PCollection
			chunks, dropped = encode.DropSeen(s, g.Window, lateness, chunks) // a window fires again for late data
			out.Marks = append(out.Marks, dropped)
		}
		targets := DeliveryTargets(cfg, g.Integrations)
		var dead, marks beam.PCollection
		switch g.Type {
		case config.S3, config.GCS:
			marks = objectio.Write(s, ObjectTargets(cfg, g.Integrations), chunks)
		case config.Amplitude:
			dead, marks = amplitudeio.Write(s, targets, chunks)
		case config.Segment:
			dead, marks = segmentio.Write(s, targets, chunks)
		case config.Webhook:
			dead, marks = webhookio.Write(s, targets, chunks)
		default:
			panic(fmt.Sprintf("sinks: no sink for type %q", g.Type)) // config.Load refuses unknown types
		}
		if dead.IsValid() {
			out.Dead = append(out.Dead, dead)
		}
		out.Marks = append(out.Marks, marks)
	}
	return out
}

// Objects splits cfg into its object store integrations and the others, each with
// the rest of cfg.
func Objects(cfg *config.Config) (objects, others *config.Config) {
	o, r := *cfg, *cfg
	o.Integrations, r.Integrations = nil, nil
	for _, in := range cfg.Integrations {
		if in.Type.IsObjectStore() {
			o.Integrations = append(o.Integrations, in)
		} else {
			r.Integrations = append(r.Integrations, in)
		}
	}
	return &o, &r
}

// ReadTargets are the object store integrations of cfg as impressionio.ReadObjects
// routes, windows and encodes for them.
func ReadTargets(cfg *config.Config) []impressionio.ObjectTarget {
	var ts []impressionio.ObjectTarget
	for _, g := range Groups(cfg.Integrations) {
		if !g.Type.IsObjectStore() {
			continue
		}
		for _, t := range Targets(g.Integrations) {
			ts = append(ts, impressionio.ObjectTarget{Target: t, Window: g.Window, Format: g.Format})
		}
	}
	return ts
}

// objectLanes is how many shuffles a group of object stores is split into, its
// integrations dealt round-robin. The embedded runner hands a shuffle's whole output
// to one bundle and holds several copies of it at once (grouped, joined, sent,
// received, decoded): four smaller shuffles, finishing at different times, took a
// backfill of a million impressions from about 670 to about 560 MiB of peak RSS
// (bench -mode s3). Elsewhere they are merely four smaller shuffles.
const objectLanes = 4

// DeliverObjects stores chunks that the reader built (impressionio.ReadObjects for
// ReadTargets(cfg)) in the object store integrations of cfg, a batch job's: per
// group, its integrations' chunks are windowed, merged per key and window, and
// written, in objectLanes shuffles.
func DeliverObjects(s beam.Scope, cfg *config.Config, chunks beam.PCollection) {
	if cfg.Live {
		panic("sinks: DeliverObjects is for batch jobs; a stream drops late copies (encode.DropSeen)")
	}
	for _, g := range Groups(cfg.Integrations) {
		if !g.Type.IsObjectStore() {
			continue
		}
		s := s.Scope(fmt.Sprintf("%s-%s-%v", g.Type, g.Format, g.Window))
		for l := 0; l < objectLanes && l < len(g.Integrations); l++ {
			var ids []string
			var ints []config.Integration
			for i := l; i < len(g.Integrations); i += objectLanes {
				ids, ints = append(ids, g.Integrations[i].ID), append(ints, g.Integrations[i])
			}
			s := s.Scope(fmt.Sprint("lane-", l))
			windowed := windowing.Fixed(s, g.Window, 0, route.Select(s, ids, chunks))
			runners.End(s, objectio.Write(s, ObjectTargets(cfg, ints), encode.MergeChunks(s, windowed)))
		}
	}
}
