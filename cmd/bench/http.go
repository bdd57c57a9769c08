package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/gen"
)

const benchSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// hook is one webhook integration of a bench config, with its simulator.
type hook struct {
	id, tenant string
	sim        *destsim.Server
	settings   string // extra integration fields, YAML flow style
}

func startHook(tenant string, rate float64) (*destsim.Server, error) {
	return destsim.Start(destsim.Options{Kind: destsim.Webhook, Secret: benchSecret, Tenant: tenant,
		RateLimit: rate, NoBodies: true})
}

func writeHookConfig(path, deadLetter string, hooks []hook) error {
	var b strings.Builder
	fmt.Fprintf(&b, "dead_letter: %s\nallow_private_destinations: true\nintegrations:\n", deadLetter)
	for _, h := range hooks {
		fmt.Fprintf(&b, "  - {id: %s, tenant: %s, type: webhook, %s, webhook: {url: %q, secret: %q}}\n",
			h.id, h.tenant, h.settings, h.sim.URL()+"/hook", benchSecret)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// benchGoodput drives one webhook, limited to rate requests a second, with about
// seconds of work, starting far above the limit, and reports how much of the limit
// the delivery core used and how many requests were refused.
func benchGoodput(rate float64, seconds int, dir string) error {
	const perBatch = 10
	n := int(rate) * seconds * perBatch
	glob, bin, err := prepare(dir, gen.Options{N: n, Tenants: 1, Seed: 3, Span: time.Duration(n/100) * time.Second}, 4)
	if err != nil {
		return err
	}
	sim, err := startHook(gen.TenantName(0), rate)
	if err != nil {
		return err
	}
	defer sim.Close()
	cfg := filepath.Join(dir, "goodput.yaml")
	err = writeHookConfig(cfg, filepath.Join(dir, "dead-letter"), []hook{{id: "hook", tenant: gen.TenantName(0), sim: sim,
		settings: fmt.Sprintf("delivery: {requests_per_second: %v, max_batch_events: %d}", rate*10, perBatch)}})
	if err != nil {
		return err
	}
	fmt.Printf("destination limited to %.0f requests/s (token bucket, burst %.0f); delivery starts at %.0f requests/s\n", rate, rate, rate*10)
	run, err := backfill(bin, cfg, glob, 0)
	if err != nil {
		return err
	}
	st := sim.Status()
	at := st.AcceptedAt
	if len(at) < 2 {
		return fmt.Errorf("only %d requests accepted", len(at))
	}
	span := at[len(at)-1].Sub(at[0])
	whole := float64(len(at)-1) / span.Seconds()
	// Past the first 10 s, when the limit has been learned.
	i := 0
	for i < len(at) && at[i].Sub(at[0]) < 10*time.Second {
		i++
	}
	steady := 0.0
	if len(at)-i > 1 {
		steady = float64(len(at)-1-i) / at[len(at)-1].Sub(at[i]).Seconds()
	}
	fmt.Printf("\naccepted %d requests (%d unique events, %d duplicates) in %.1fs; %d requests in all\n",
		st.Accepted, st.UniqueEvents, st.Duplicates, span.Seconds(), st.Requests)
	fmt.Printf("goodput, whole run:         %.2f of the limit (%.2f requests/s)\n", whole/rate, whole)
	fmt.Printf("goodput, after the first 10s: %.2f of the limit (%.2f requests/s)\n", steady/rate, steady)
	fmt.Printf("429 share: %.3f (%d of %d requests); requests ignoring a Retry-After: %d\n",
		float64(st.Throttled)/float64(st.Requests), st.Throttled, st.Requests, st.IgnoredRetryAfter)
	fmt.Printf("backfill: %.1fs wall, peak RSS %d MiB\n", run.elapsed.Seconds(), run.rssKiB/1024)
	return nil
}

// benchIsolation runs three healthy webhooks alone, then again beside a fourth
// limited to 1 request a second, and compares when each healthy one received its last
// request, measured from the start of its run.
func benchIsolation(dir string) error {
	const tenants = 4
	glob, bin, err := prepare(dir, gen.Options{N: 8000, Tenants: tenants, Seed: 4, Span: 1000 * time.Second}, 4)
	if err != nil {
		return err
	}
	run := func(withSlow bool) (map[string]time.Duration, error) {
		var hooks []hook
		for i := range tenants {
			slow := i == tenants-1
			if slow && !withSlow {
				continue
			}
			rate, settings := 20.0, "delivery: {max_batch_events: 10}"
			if slow {
				rate, settings = 1, "window: 5m, delivery: {max_batch_events: 100}"
			}
			sim, err := startHook(gen.TenantName(i), rate)
			if err != nil {
				return nil, err
			}
			defer sim.Close()
			hooks = append(hooks, hook{id: gen.TenantName(i) + "-hook", tenant: gen.TenantName(i), sim: sim, settings: settings})
		}
		cfg := filepath.Join(dir, fmt.Sprintf("isolation-%v.yaml", withSlow))
		if err := writeHookConfig(cfg, filepath.Join(dir, "dead-letter"), hooks); err != nil {
			return nil, err
		}
		start := time.Now()
		r, err := backfill(bin, cfg, glob, 0)
		if err != nil {
			return nil, err
		}
		done := map[string]time.Duration{}
		for _, h := range hooks {
			st := h.sim.Status()
			done[h.id] = st.LastAccepted.Sub(start)
			fmt.Printf("  %-14s %5d events, first at %5.1fs, last at %6.1fs (%d requests, %d throttled)\n",
				h.id, st.UniqueEvents, st.FirstAccepted.Sub(start).Seconds(), done[h.id].Seconds(), st.Requests, st.Throttled)
		}
		fmt.Printf("  whole backfill: %.1fs\n", r.elapsed.Seconds())
		return done, nil
	}
	fmt.Println("\nthree healthy webhooks (20 requests/s each), alone:")
	alone, err := run(false)
	if err != nil {
		return err
	}
	fmt.Println("\nthe same three beside a fourth limited to 1 request/s:")
	beside, err := run(true)
	if err != nil {
		return err
	}
	fmt.Println("\ntime to the last delivery, beside the slow one / alone (target <= 1.2):")
	for i := range tenants - 1 {
		id := gen.TenantName(i) + "-hook"
		fmt.Printf("  %-14s %.2f\n", id, beside[id].Seconds()/alone[id].Seconds())
	}
	return nil
}
