package route

import (
	"context"
	"fmt"
	"math/rand/v2"
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
