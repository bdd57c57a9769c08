// Command destsim serves simulated Amplitude, Segment and webhook destinations on
// loopback, with rate limits and injectable faults, and prints what they receive.
//
//	go run ./cmd/destsim -rate 5 -fail 0.1 -reset 0.02 -secret whsec_$(head -c 24 /dev/urandom | base64)
//
// Each server also answers GET /status with its counts as JSON. An empty address
// (-segment-addr=) leaves that destination out.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/outflow/outflow/internal/destsim"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("destsim", flag.ContinueOnError)
	addrs := map[destsim.Kind]*string{
		destsim.Amplitude: fs.String("amplitude-addr", "127.0.0.1:0", "address of the Amplitude destination (POST /batch); empty: none"),
		destsim.Segment:   fs.String("segment-addr", "127.0.0.1:0", "address of the Segment destination (POST /v1/batch); empty: none"),
		destsim.Webhook:   fs.String("webhook-addr", "127.0.0.1:0", "address of the webhook destination (POST to any path); empty: none"),
	}
	var o destsim.Options
	fs.Float64Var(&o.RateLimit, "rate", 0, "requests per second each destination accepts (token bucket); 0: unlimited")
	fs.IntVar(&o.Burst, "burst", 0, "token bucket size; 0: max(1, ceil(rate))")
	fs.BoolVar(&o.RetryAfterDate, "retry-after-date", false, "send Retry-After as an HTTP date, not seconds")
	fs.Float64Var(&o.FailRate, "fail", 0, "share of requests answered 500, 502 or 504")
	fs.Float64Var(&o.Unavailable, "unavailable", 0, "share of requests answered 503 with Retry-After: 1")
	fs.Float64Var(&o.ResetRate, "reset", 0, "share of requests whose connection is closed without an answer")
	fs.Float64Var(&o.SlowRate, "slow", 0, "share of requests delayed by -slow-delay before they are handled")
	fs.DurationVar(&o.SlowDelay, "slow-delay", 5*time.Second, "delay of slow requests")
	fs.IntVar(&o.Status, "status", 0, "answer every request with this HTTP status (e.g. 400, 410); 0: off")
	fs.IntVar(&o.MaxBodyBytes, "max-body", 0, "answer 413 to bodies larger than this many bytes (after gzip); 0: off")
	fs.Float64Var(&o.ThrottleEvents, "throttle-events", 0, "Amplitude: share of a request's events throttled with a partial 429")
	fs.BoolVar(&o.RetryAfterOnPartial, "retry-after-on-partial", false, "Amplitude: send Retry-After: 1 with partial 429s")
	fs.StringVar(&o.APIKey, "api-key", "", "Amplitude api_key required in bodies; empty: any")
	fs.StringVar(&o.WriteKey, "write-key", "", "Segment write key required as basic-auth user; empty: any")
	fs.StringVar(&o.Secret, "secret", "", "webhook signing secret (whsec_ + base64); empty: signatures are not checked")
	fs.StringVar(&o.Tenant, "tenant", "", "tenant of webhook records, for their impression ids")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the random faults")
	interval := fs.Duration("interval", 3*time.Second, "how often to print counts that changed")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "destsim: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *interval <= 0 {
		fmt.Fprintln(os.Stderr, "destsim: -interval must be > 0")
		return 2
	}
	o.NoBodies = true // nobody reads them here; keep memory flat on long runs

	var servers []*destsim.Server
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	for _, kind := range []destsim.Kind{destsim.Amplitude, destsim.Segment, destsim.Webhook} {
		if *addrs[kind] == "" {
			continue
		}
		ko := o
		ko.Kind = kind
		s, err := destsim.StartAt(*addrs[kind], ko)
		if err != nil {
			fmt.Fprintf(os.Stderr, "destsim: %s: %v\n", kind, err)
			return 1
		}
		servers = append(servers, s)
		fmt.Printf("%-9s %s  (POST %s)\n", kind, s.URL(), map[destsim.Kind]string{
			destsim.Amplitude: "/batch", destsim.Segment: "/v1/batch", destsim.Webhook: "to any path"}[kind])
	}
	if len(servers) == 0 {
		fmt.Fprintln(os.Stderr, "destsim: every address is empty; nothing to serve")
		return 2
	}
	fmt.Println("GET <url>/status for the counts as JSON; Ctrl-C to stop.")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	last := make([]string, len(servers))
	report := func(always bool) {
		for i, s := range servers {
			b, err := json.Marshal(s.Status())
			if err != nil {
				continue
			}
			if always || string(b) != last[i] {
				fmt.Printf("%s %s\n", time.Now().Format("15:04:05"), b)
				last[i] = string(b)
			}
		}
	}
	report(false)
	t := time.NewTicker(*interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			report(false)
		case <-ctx.Done():
			fmt.Println("stopping; final counts:")
			report(true)
			return 0
		}
	}
}
