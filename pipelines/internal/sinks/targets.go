package sinks

import (
	"cmp"
	"encoding/json"
	"slices"
	"time"

	"github.com/outflow/outflow/internal/config"
	"github.com/outflow/outflow/io/amplitudeio"
	"github.com/outflow/outflow/io/delivery"
	"github.com/outflow/outflow/io/objectio"
	"github.com/outflow/outflow/io/segmentio"
	"github.com/outflow/outflow/io/webhookio"
	"github.com/outflow/outflow/transforms/encode"
	"github.com/outflow/outflow/transforms/route"
)

// This file turns validated configuration into what the transforms and sinks take:
// the pipeline's groups and each core's view of its integrations.

// Group is integrations of one type, window size and (for object stores) format:
// one branch of the pipeline graph.
type Group struct {
	Type         config.Type
	Window       time.Duration
	Format       encode.Format // object stores only
	Integrations []config.Integration
}

// Groups splits integrations into groups, in a stable order.
func Groups(ints []config.Integration) []Group {
	var gs []Group
	for _, in := range ints {
		g := Group{Type: in.Type, Window: in.Window.D(), Format: format(in)}
		i := slices.IndexFunc(gs, func(h Group) bool {
			return h.Type == g.Type && h.Window == g.Window && h.Format == g.Format
		})
		if i < 0 {
			gs, i = append(gs, g), len(gs)
		}
		gs[i].Integrations = append(gs[i].Integrations, in)
	}
	slices.SortStableFunc(gs, func(a, b Group) int {
		return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Window, b.Window), cmp.Compare(a.Format, b.Format))
	})
	return gs
}

func format(in config.Integration) encode.Format {
	switch {
	case in.S3 != nil:
		return in.S3.Format
	case in.GCS != nil:
		return in.GCS.Format
	}
	return ""
}

// Targets returns the routing view of integrations.
func Targets(ints []config.Integration) []route.Target {
	ts := make([]route.Target, len(ints))
	for i, in := range ints {
		ts[i] = route.Target{ID: in.ID, Tenant: in.Tenant, Environments: in.Environments, Splits: in.Splits, Shards: config.ShardsOf(in)}
	}
	return ts
}

// DeliveryTargets returns the delivery core's view of HTTP integrations: their
// destination kind, delivery policy (the destination's defaults under what the config
// says) and own section.
func DeliveryTargets(cfg *config.Config, ints []config.Integration) []delivery.Target {
	ts := make([]delivery.Target, 0, len(ints))
	for _, in := range ints {
		var policy delivery.Config
		if in.Delivery != nil {
			policy = *in.Delivery
		}
		var settings any
		var defaults delivery.Config
		switch in.Type {
		case config.Amplitude:
			settings, defaults = in.Amplitude, amplitudeio.Defaults
		case config.Segment:
			settings, defaults = in.Segment, segmentio.Defaults
		case config.Webhook:
			settings, defaults = in.Webhook, webhookio.Defaults
		default:
			continue
		}
		raw, _ := json.Marshal(settings) // sections are plain structs of strings, numbers and bools
		t := delivery.Target{ID: in.ID, Kind: string(in.Type), Policy: policy.WithDefaults(defaults),
			Settings: raw, AllowPrivate: cfg.AllowPrivateDestinations, Progress: in.Progress}
		if cfg.Live {
			t.AlertDelay = in.AlertDelay.D()
			t.MaxPending = t.Policy.MaxPendingImpressions
			t.Track = true
		}
		ts = append(ts, t)
	}
	return ts
}

// ObjectTargets returns the object-store core's view of S3 and GCS integrations of
// cfg among ints.
func ObjectTargets(cfg *config.Config, ints []config.Integration) []objectio.Target {
	var ts []objectio.Target
	for _, in := range ints {
		var settings any
		var spec encode.ObjectSpec
		switch {
		case in.S3 != nil:
			settings, spec = in.S3, in.S3.ObjectSpec
		case in.GCS != nil:
			settings, spec = in.GCS, in.GCS.ObjectSpec
		default:
			continue
		}
		raw, _ := json.Marshal(settings) // sections are plain structs of strings and numbers
		// A stream writes a window again for its late data: names tell the panes apart.
		ts = append(ts, objectio.Target{ID: in.ID, Kind: string(in.Type), Spec: spec, Settings: raw, Progress: in.Progress,
			Tenant: in.Tenant, Live: cfg.Live, Since: unixMilli(cfg.Since), Until: unixMilli(cfg.Until), Window: in.Window.D()})
	}
	return ts
}

// unixMilli is t in Unix ms, 0 for the zero time (open).
func unixMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
