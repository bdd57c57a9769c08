// Package route fans impressions out to the integrations of their tenant.
package route

import (
	"context"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/outflow/outflow/internal/ack"
	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/metricname"
)

func init() {
	register.DoFn3x0[context.Context, impression.Impression, func(string, impression.Impression)](&fanoutFn{})
	register.DoFn4x0[context.Context, string, impression.Impression, func(string, impression.Impression)](&directFn{})
	register.Emitter2[string, impression.Impression]()
}

// Target is what routing needs to know of an integration.
type Target struct {
	ID           string   `json:"id"`
	Tenant       string   `json:"tenant"`
	Environments []string `json:"environments,omitempty"` // nil: all
	Splits       []string `json:"splits,omitempty"`       // nil: all
	Shards       int      `json:"shards"`
}

// Fanout emits each impression once for every target of its tenant whose filters
// match, keyed by Key(target, shard). The shard comes from the impression id, so every
// copy of one impression meets in the same group, where it is dropped.
//
// In: PCollection<impression.Impression>; out: PCollection<KV<string, impression.Impression>>.
func Fanout(s beam.Scope, targets []Target, imps beam.PCollection) beam.PCollection {
	s = s.Scope("route.Fanout")
	return beam.ParDo(s, &fanoutFn{Targets: targets}, imps)
}

// Matches reports whether imp may go to t: same tenant, and the filters match.
func (t *Target) Matches(imp *impression.Impression) bool {
	return imp.Tenant == t.Tenant &&
		(t.Environments == nil || slices.Contains(t.Environments, imp.EnvironmentName)) &&
		(t.Splits == nil || slices.Contains(t.Splits, imp.Split))
}

// Shard returns the shard of imp for a target with n shards.
func Shard(imp *impression.Impression, n int) int {
	return int(binary.BigEndian.Uint64(imp.ID[8:]) % uint64(n))
}

// Key is the grouping key of a target's shard: "<integration id>/<shard>".
func Key(id string, shard int) string { return id + "/" + strconv.Itoa(shard) }

// SplitKey is the inverse of Key.
func SplitKey(key string) (id string, shard int) {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return key, 0
	}
	shard, _ = strconv.Atoi(key[i+1:])
	return key[:i], shard
}

type fanoutFn struct {
	Targets []Target `json:"targets"`

	byTenant map[string][]int // tenant -> indexes into Targets
	keys     [][]string       // target -> shard -> key, built once
	routed   []metricname.Counter
}

func (fn *fanoutFn) Setup() {
	fn.byTenant = map[string][]int{}
	fn.keys = make([][]string, len(fn.Targets))
	fn.routed = make([]metricname.Counter, len(fn.Targets))
	for i, t := range fn.Targets {
		fn.byTenant[t.Tenant] = append(fn.byTenant[t.Tenant], i)
		fn.keys[i] = make([]string, t.Shards)
		for s := range fn.keys[i] {
			fn.keys[i][s] = Key(t.ID, s)
		}
		fn.routed[i] = metricname.NewCounter(t.ID, metricname.Routed)
	}
}

func (fn *fanoutFn) ProcessElement(ctx context.Context, imp impression.Impression, emit func(string, impression.Impression)) {
	var buf [8]int
	copies := buf[:0]
	for _, i := range fn.byTenant[imp.Tenant] {
		if fn.Targets[i].Matches(&imp) {
			copies = append(copies, i)
		}
	}
	// In a stream the copies are followed until delivered; this router's share of the
	// impression becomes them (package ack). Counted before they go downstream.
	ack.Hold(imp.Origin, len(copies)-1)
	for _, i := range copies {
		fn.routed[i].Inc(ctx, 1)
		emit(fn.keys[i][Shard(&imp, fn.Targets[i].Shards)], imp)
	}
}

// Direct keys impressions already bound to an integration (a replay of its
// dead-letter records) for that integration's shard, if it is one of targets; the
// tenant and filters were applied when the impression was first routed.
//
// In: PCollection<KV<string, impression.Impression>> keyed by integration id; out: as Fanout.
func Direct(s beam.Scope, targets []Target, pairs beam.PCollection) beam.PCollection {
	s = s.Scope("route.Direct")
	return beam.ParDo(s, &directFn{Targets: targets}, pairs)
}

type directFn struct {
	Targets []Target `json:"targets"`

	shards map[string]int
	routed map[string]metricname.Counter
}

func (fn *directFn) Setup() {
	fn.shards, fn.routed = map[string]int{}, map[string]metricname.Counter{}
	for _, t := range fn.Targets {
		fn.shards[t.ID] = t.Shards
		fn.routed[t.ID] = metricname.NewCounter(t.ID, metricname.Routed)
	}
}

func (fn *directFn) ProcessElement(ctx context.Context, id string, imp impression.Impression, emit func(string, impression.Impression)) {
	n, ok := fn.shards[id]
	if !ok {
		return
	}
	fn.routed[id].Inc(ctx, 1)
	emit(Key(id, Shard(&imp, n)), imp)
}
