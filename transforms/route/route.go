// Package route fans impressions out to the integrations of their tenant.
package route

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/outflow/outflow/internal/impression"
	"github.com/outflow/outflow/internal/metricname"
)

func init() {
	register.DoFn3x0[context.Context, impression.Impression, func(string, impression.Impression)](&fanoutFn{})
	register.DoFn4x1[context.Context, string, impression.Impression, func(string, impression.Impression), error](&directFn{})
	register.DoFn3x0[string, beam.T, func(string, beam.T)](&selectFn{})
	register.Emitter2[string, impression.Impression]()
	register.Emitter2[string, beam.T]()
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

// Mismatch says why imp may not go to t, "" when it may: Matches decides, this only
// explains, the tenant first, then the environments filter, then the splits filter.
func (t *Target) Mismatch(imp *impression.Impression) string {
	switch {
	case t.Matches(imp):
		return ""
	case imp.Tenant != t.Tenant:
		return fmt.Sprintf("tenant %q is not %q", imp.Tenant, t.Tenant)
	case t.Environments != nil && !slices.Contains(t.Environments, imp.EnvironmentName):
		return fmt.Sprintf("environment %q is not in %q", imp.EnvironmentName, t.Environments)
	case t.Splits != nil && !slices.Contains(t.Splits, imp.Split):
	}
	return fmt.Sprintf("split %q is not in %q", imp.Split, t.Splits)
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

// Table finds the targets an impression goes to and their keys, for Fanout and for
// readers that route as they read (impressionio.ReadObjects).
type Table struct {
	Targets  []Target
	byTenant map[string][]int // tenant -> indexes into Targets
	keys     [][]string       // target -> shard -> key, built once
}

// NewTable indexes targets by tenant and builds their keys.
func NewTable(targets []Target) *Table {
	t := &Table{Targets: targets, byTenant: map[string][]int{}, keys: make([][]string, len(targets))}
	for i, tg := range targets {
		t.byTenant[tg.Tenant] = append(t.byTenant[tg.Tenant], i)
		t.keys[i] = make([]string, tg.Shards)
		for s := range t.keys[i] {
			t.keys[i][s] = Key(tg.ID, s)
		}
	}
	return t
}

// Each calls f with the index and key of each target imp goes to.
func (t *Table) Each(imp *impression.Impression, f func(target int, key string)) {
	for _, i := range t.byTenant[imp.Tenant] {
		if t.Targets[i].Matches(imp) {
			f(i, t.keys[i][Shard(imp, t.Targets[i].Shards)])
		}
	}
}

type fanoutFn struct {
	Targets []Target `json:"targets"`

	table  *Table
	routed []metricname.Counter
	counts []int64 // routed in this bundle, counted in FinishBundle
}

func (fn *fanoutFn) Setup() {
	fn.table = NewTable(fn.Targets)
	fn.routed = make([]metricname.Counter, len(fn.Targets))
	fn.counts = make([]int64, len(fn.Targets))
	for i, t := range fn.Targets {
		fn.routed[i] = metricname.NewCounter(t.ID, metricname.Routed)
	}
}

func (fn *fanoutFn) ProcessElement(ctx context.Context, imp impression.Impression, emit func(string, impression.Impression)) {
	fn.table.Each(&imp, func(i int, key string) {
		fn.counts[i]++
		emit(key, imp)
	})
}

// FinishBundle counts what the bundle routed: once a bundle rather than per copy,
// as a Beam counter costs a lookup and a lock per call.
func (fn *fanoutFn) FinishBundle(ctx context.Context, _ func(string, impression.Impression)) {
	for i, n := range fn.counts {
		if n > 0 {
			fn.routed[i].Inc(ctx, n)
			fn.counts[i] = 0
		}
	}
}

// Direct keys impressions already bound to an integration (a replay of its
// dead-letter records) for that integration's shard, if it is one of targets; pairs of
// other integrations belong to another branch and are skipped.
//
// Direct never sends an impression where Fanout would not: one whose target does not
// Match (another tenant, or outside the filters) fails the bundle, naming the
// integration and what did not match, rather than crossing tenants or vanishing.
// Callers check Target.Matches first and keep what fails it (replay writes it back to
// the dead-letter store), so that failure is a bug, never data.
//
// In: PCollection<KV<string, impression.Impression>> keyed by integration id; out: as Fanout.
func Direct(s beam.Scope, targets []Target, pairs beam.PCollection) beam.PCollection {
	s = s.Scope("route.Direct")
	return beam.ParDo(s, &directFn{Targets: targets}, pairs)
}

type directFn struct {
	Targets []Target `json:"targets"`

	byID   map[string]*Target
	routed map[string]metricname.Counter
}

func (fn *directFn) Setup() {
	fn.byID, fn.routed = map[string]*Target{}, map[string]metricname.Counter{}
	for i, t := range fn.Targets {
		fn.byID[t.ID] = &fn.Targets[i]
		fn.routed[t.ID] = metricname.NewCounter(t.ID, metricname.Routed)
	}
}

func (fn *directFn) ProcessElement(ctx context.Context, id string, imp impression.Impression, emit func(string, impression.Impression)) error {
	t, ok := fn.byID[id]
	if !ok {
		return nil // another branch's integration
	}
	if why := t.Mismatch(&imp); why != "" {
		return fmt.Errorf("route: impression %s of tenant %q bound to integration %s, which does not take it: %s",
			imp.ID, imp.Tenant, id, why)
	}
	fn.routed[id].Inc(ctx, 1)
	emit(Key(id, Shard(&imp, t.Shards)), imp)
	return nil
}

// Select keeps the elements keyed by Key of the integrations ids: one branch's share
// of a collection that holds several branches' (impressionio.ReadObjects).
//
// In and out: PCollection<KV<string, T>> keyed by Key.
func Select(s beam.Scope, ids []string, keyed beam.PCollection) beam.PCollection {
	s = s.Scope("route.Select")
	return beam.ParDo(s, &selectFn{IDs: ids}, keyed)
}

type selectFn struct {
	IDs []string `json:"ids"`
}

func (fn *selectFn) ProcessElement(key string, v beam.T, emit func(string, beam.T)) {
	if id, _ := SplitKey(key); slices.Contains(fn.IDs, id) {
		emit(key, v)
	}
}
