package route

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/passert"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/testing/ptest"

	"github.com/outflow/outflow/internal/impression"
)

func TestMain(m *testing.M) { ptest.Main(m) }

func init() { register.Function2x1(destAndKey) }

// destAndKey says which integration received which impression key.
func destAndKey(key string, imp impression.Impression) string {
	id, _ := SplitKey(key)
	return id + ":" + imp.Key
}

var (
	tenants = []string{"acme", "globex", "acme2", "ACME", "acme "} // near-identical names
	envs    = []string{"production", "staging", "Production"}
	splits  = []string{"a", "b", "c"}
)

func randomTargets(r *rand.Rand) []Target {
	var ts []Target
	for i := range 1 + r.IntN(8) {
		t := Target{ID: fmt.Sprintf("i-%d", i), Tenant: tenants[r.IntN(len(tenants))], Shards: 1 + r.IntN(5)}
		if r.IntN(2) == 0 {
			t.Environments = []string{envs[r.IntN(len(envs))]}
		}
		if r.IntN(2) == 0 {
			t.Splits = []string{splits[r.IntN(len(splits))], splits[r.IntN(len(splits))]}
		}
		ts = append(ts, t)
	}
	return ts
}

func randomImpression(r *rand.Rand) impression.Impression {
	i := impression.Impression{Tenant: tenants[r.IntN(len(tenants))], EnvironmentName: envs[r.IntN(len(envs))],
		Split: splits[r.IntN(len(splits))], Key: fmt.Sprintf("u%d", r.IntN(1000)), Treatment: "on", Time: r.Int64N(1e12)}
	i.ID = i.ComputeID()
	return i
}

// Property: over random configurations and impressions, an impression reaches exactly
// the targets of its own tenant whose filters match, once each, on its id's shard.
func TestFanoutNeverCrossesTenants(t *testing.T) {
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 1))
		fn := &fanoutFn{Targets: randomTargets(r)}
		fn.Setup()
		byID := map[string]Target{}
		for _, tg := range fn.Targets {
			byID[tg.ID] = tg
		}
		for range 200 {
			imp := randomImpression(r)
			got := map[string]int{}
			fn.ProcessElement(context.Background(), imp, func(key string, out impression.Impression) {
				id, shard := SplitKey(key)
				tg := byID[id]
				if tg.Tenant != imp.Tenant || out.Tenant != imp.Tenant {
					t.Fatalf("seed %d: impression of %q routed to %s of tenant %q", seed, imp.Tenant, id, tg.Tenant)
				}
				if shard != Shard(&imp, tg.Shards) || shard >= tg.Shards {
					t.Fatalf("seed %d: shard %d, want %d of %d", seed, shard, Shard(&imp, tg.Shards), tg.Shards)
				}
				got[id]++
			})
			for _, tg := range fn.Targets {
				want := 0
				if tg.Tenant == imp.Tenant && (tg.Environments == nil || tg.Environments[0] == imp.EnvironmentName) &&
					(tg.Splits == nil || tg.Splits[0] == imp.Split || tg.Splits[1] == imp.Split) {
					want = 1
				}
				if got[tg.ID] != want {
					t.Fatalf("seed %d: %+v received %+v %d times, want %d", seed, tg, imp, got[tg.ID], want)
				}
			}
		}
	}
}

// Property: over random configurations and impressions, an impression bound to a
// random integration id (a replayed dead-letter record, whose id may be reused or
// edited) reaches Direct's output only when that target Matches it, on its shard; a
// mismatch fails instead of being dropped, naming the integration; another branch's
// id is skipped. Matches and Mismatch agree with the filters as Fanout applies them.
func TestDirectNeverCrossesTenants(t *testing.T) {
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 2))
		fn := &directFn{Targets: randomTargets(r)}
		fn.Setup()
		for range 200 {
			imp := randomImpression(r)
			id := fmt.Sprintf("i-%d", r.IntN(len(fn.Targets)+1)) // one id past the last: another branch's
			var tg *Target
			for i := range fn.Targets {
				if fn.Targets[i].ID == id {
					tg = &fn.Targets[i]
				}
			}
			var got []string
			err := fn.ProcessElement(context.Background(), id, imp, func(key string, out impression.Impression) {
				if out.ID != imp.ID {
					t.Fatalf("seed %d: emitted another impression", seed)
				}
				got = append(got, key)
			})
			switch {
			case tg == nil:
				if err != nil || got != nil {
					t.Fatalf("seed %d: unknown id %s: emitted %q, error %v", seed, id, got, err)
				}
			case tg.Matches(&imp):
				if err != nil || len(got) != 1 || got[0] != Key(id, Shard(&imp, tg.Shards)) {
					t.Fatalf("seed %d: %+v takes %+v: emitted %q, error %v", seed, *tg, imp, got, err)
				}
			default:
				if err == nil || got != nil || !strings.Contains(err.Error(), id) {
					t.Fatalf("seed %d: %+v does not take %+v: emitted %q, error %v", seed, *tg, imp, got, err)
				}
			}
			if tg == nil {
				continue
			}
			oracle := tg.Tenant == imp.Tenant && (tg.Environments == nil || tg.Environments[0] == imp.EnvironmentName) &&
				(tg.Splits == nil || tg.Splits[0] == imp.Split || tg.Splits[1] == imp.Split)
			if tg.Matches(&imp) != oracle || (tg.Mismatch(&imp) == "") != oracle {
				t.Fatalf("seed %d: %+v and %+v: Matches %v, Mismatch %q, want match %v", seed, *tg, imp,
					tg.Matches(&imp), tg.Mismatch(&imp), oracle)
			}
		}
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, id := range []string{"acme-s3", "a", "x-1-2"} {
		for _, shard := range []int{0, 7, 1023} {
			if gid, gs := SplitKey(Key(id, shard)); gid != id || gs != shard {
				t.Errorf("SplitKey(Key(%q, %d)) = %q, %d", id, shard, gid, gs)
			}
		}
	}
}

// The same fan-out as a pipeline on prism: the Beam wiring, coders included.
func TestFanoutPipeline(t *testing.T) {
	targets := []Target{
		{ID: "acme-all", Tenant: "acme", Shards: 2},
		{ID: "acme-prod", Tenant: "acme", Environments: []string{"production"}, Shards: 1},
		{ID: "globex", Tenant: "globex", Shards: 1},
	}
	mk := func(tenant, env, key string) impression.Impression {
		i := impression.Impression{Tenant: tenant, EnvironmentName: env, Key: key, Split: "s", Treatment: "on", Time: 1}
		i.ID = i.ComputeID()
		return i
	}
	p, s := beam.NewPipelineWithRoot()
	imps := beam.Create(s, mk("acme", "production", "a"), mk("acme", "staging", "b"), mk("globex", "production", "c"), mk("initech", "production", "d"))
	routed := Fanout(s, targets, imps)
	ids := beam.ParDo(s, destAndKey, routed)
	passert.EqualsList(s, ids, []string{"acme-all:a", "acme-prod:a", "acme-all:b", "globex:c"})
	ptest.RunAndValidate(t, p)
}
