package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outflow/outflow/internal/destsim"
	"github.com/outflow/outflow/internal/gen"
)

// benchStream measures the stream job: first how fast it catches up on a backlog
// of n impressions (its sustained rate), then the delivery delay of impressions
// produced live at half and at all of that rate for seconds each, or at liveRate
// impressions/s if it is > 0. With throttled, the first tenant also has a webhook
// that takes one request a second: its impressions count in neither the rate nor
// the delays, which are the healthy destinations'. Broker, producer, job and
// destinations share this machine's cores.
func benchStream(n, tenants, seconds int, liveRate float64, throttled bool, dir string, runnerArgs []string) error {
	bin := filepath.Join(dir, "stream")
	if err := command("go", "build", "-o", bin, "./pipelines/stream").Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "impressions"))
	if err != nil {
		return err
	}
	defer kafka.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
		kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return err
	}
	defer cl.Close()

	var hooks []hook
	for i := range tenants {
		sim, err := destsim.Start(destsim.Options{Kind: destsim.Webhook, Secret: benchSecret, Tenant: gen.TenantName(i)})
		if err != nil {
			return err
		}
		defer sim.Close()
		hooks = append(hooks, hook{id: gen.TenantName(i) + "-hook", tenant: gen.TenantName(i), sim: sim, settings: "window: 2s"})
	}
	healthy := hooks
	if throttled {
		sim, err := startHook(gen.TenantName(0), 1)
		if err != nil {
			return err
		}
		defer sim.Close()
		hooks = append(hooks, hook{id: gen.TenantName(0) + "-hook-throttled", tenant: gen.TenantName(0), sim: sim, settings: "window: 2s"})
	}
	cfg := filepath.Join(dir, "stream.yaml")
	if err := writeHookConfig(cfg, filepath.Join(dir, "dead-letter"), hooks); err != nil {
		return err
	}
	delivered := func() int {
		total := 0
		for _, h := range healthy {
			total += h.sim.Status().UniqueEvents
		}
		return total
	}
	defer func() {
		for _, h := range hooks {
			st := h.sim.Status()
			fmt.Printf("%s: %d unique impressions, %d duplicates, %d requests\n", h.id, st.UniqueEvents, st.Duplicates, st.Requests)
		}
	}()

	next := 0 // impressions produced so far; keys are unique across phases
	produce := func(count int) error {
		recs := make([]*kgo.Record, 0, count)
		now := time.Now().UnixMilli()
		for range count {
			line := fmt.Sprintf(`{"tenant":%q,"environmentName":"production","key":"user-%d","split":"s","treatment":"on","time":%d}`,
				gen.TenantName(next%tenants), next, now)
			recs = append(recs, &kgo.Record{Topic: "impressions", Value: []byte(line)})
			next++
		}
		return cl.ProduceSync(context.Background(), recs...).FirstErr()
	}

	fmt.Printf("producing a backlog of %d impressions (%d tenants, 4 partitions)…\n", n, tenants)
	for done := 0; done < n; done += 10000 {
		if err := produce(min(10000, n-done)); err != nil {
			return err
		}
	}
	job := exec.Command(bin, append([]string{"--config", cfg, "--brokers", strings.Join(kafka.ListenAddrs(), ","), "--topic", "impressions"},
		runnerArgs...)...)
	job.Stderr = os.Stderr
	start := time.Now()
	if err := job.Start(); err != nil {
		return err
	}
	defer func() { job.Process.Signal(syscall.SIGINT); job.Wait() }()
	if err := waitDelivered(delivered, n, 10*time.Minute); err != nil {
		return err
	}
	catchUp := time.Since(start)
	rate := float64(n) / catchUp.Seconds()
	fmt.Printf("\ncatch-up: %d impressions in %.1fs, job start included: %.0f impressions/s\n", n, catchUp.Seconds(), rate)

	targets := []float64{rate / 2, rate}
	if liveRate > 0 {
		targets = []float64{liveRate}
	}
	for _, target := range targets {
		base := next
		phaseStart := time.Now()
		tick := 100 * time.Millisecond
		perTick := int(target * tick.Seconds())
		for t := time.NewTicker(tick); time.Since(phaseStart) < time.Duration(seconds)*time.Second; <-t.C {
			if err := produce(perTick); err != nil {
				return err
			}
		}
		if err := waitDelivered(delivered, next, 5*time.Minute); err != nil {
			return err
		}
		var delays []time.Duration
		for _, h := range healthy {
			for _, e := range h.sim.Events() {
				var rec struct {
					Time int64 `json:"time"`
				}
				if json.Unmarshal(e.Body, &rec) == nil && !e.First.Before(phaseStart) {
					delays = append(delays, e.First.Sub(time.UnixMilli(rec.Time)))
				}
			}
		}
		slices.Sort(delays)
		if len(delays) == 0 {
			return fmt.Errorf("no delays measured at %.0f impressions/s", target)
		}
		q := func(p float64) time.Duration {
			return delays[min(len(delays)-1, int(p*float64(len(delays))))].Round(10 * time.Millisecond)
		}
		fmt.Printf("at %3.0f%% (%6.0f impressions/s for %ds, %d impressions): healthy destinations' delay p50 %v, p90 %v, p95 %v, p99 %v, max %v (window 2s)\n",
			100*target/rate, target, seconds, next-base, q(0.5), q(0.9), q(0.95), q(0.99), delays[len(delays)-1].Round(10*time.Millisecond))
	}
	var dups int
	for _, h := range healthy {
		dups += h.sim.Status().Duplicates
	}
	fmt.Printf("duplicates received: %d\n", dups)
	return nil
}

func waitDelivered(delivered func() int, want int, limit time.Duration) error {
	for deadline := time.Now().Add(limit); delivered() < want; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d impressions delivered after %v", delivered(), want, limit)
		}
	}
	return nil
}
