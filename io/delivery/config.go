// Package delivery is the rate-aware delivery core shared by every HTTP sink.
package delivery

import (
	"fmt"
	"time"

	"github.com/outflow/outflow/internal/configkit"
)

// Config is the `delivery:` section of an HTTP integration: a ceiling and a starting
// point, not a promise (CONTRACT §2). Zero fields take the destination's defaults.
type Config struct {
	// RequestsPerSecond is the starting and highest request rate.
	RequestsPerSecond float64 `yaml:"requests_per_second" json:"requests_per_second"`
	// MinRequestsPerSecond is the floor the rate never drops below.
	MinRequestsPerSecond float64 `yaml:"min_requests_per_second" json:"min_requests_per_second"`
	MaxInFlight          int     `yaml:"max_in_flight" json:"max_in_flight"`
	MaxBatchEvents       int     `yaml:"max_batch_events" json:"max_batch_events"`
	MaxBatchBytes        int     `yaml:"max_batch_bytes" json:"max_batch_bytes"`
	// Timeout bounds one request.
	Timeout configkit.Duration `yaml:"timeout" json:"timeout"`
	// MaxRetryDuration is how long a batch is retried, from its first send, before it
	// is dead-lettered.
	MaxRetryDuration configkit.Duration `yaml:"max_retry_duration" json:"max_retry_duration"`
	// RetrySchedule is the wait before each retry of one batch (the first retry waits
	// the first), with ±10% jitter; the last repeats. Empty: 1 s doubling to 5 min,
	// with jitter.
	RetrySchedule []configkit.Duration `yaml:"retry_schedule" json:"retry_schedule,omitempty"`
	// MaxPendingImpressions bounds, in a stream, the impressions held for the
	// destination while it does not keep up (an outage): past it, what arrives is
	// dead-lettered for replay, so memory stays bounded and other destinations keep
	// their freshness. Batch jobs, whose input is bounded, ignore it.
	MaxPendingImpressions int `yaml:"max_pending_impressions" json:"max_pending_impressions"`
	// Workers is accepted and ignored: it divided the rate between workers, but one
	// worker at a time sends to an integration (its key), so it only cut the rate.
	Workers int `yaml:"workers" json:"-"`
}

// Validate records every problem under path.
func (c *Config) Validate(p *configkit.Problems, path string) {
	if c.RequestsPerSecond < 0 {
		p.Addf(path+".requests_per_second", "must be > 0; got %v", c.RequestsPerSecond)
	}
	if c.MinRequestsPerSecond < 0 {
		p.Addf(path+".min_requests_per_second", "must be > 0; got %v", c.MinRequestsPerSecond)
	}
	if c.RequestsPerSecond > 0 && c.MinRequestsPerSecond > c.RequestsPerSecond {
		p.Addf(path+".min_requests_per_second", "%v is above requests_per_second %v", c.MinRequestsPerSecond, c.RequestsPerSecond)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"max_in_flight", c.MaxInFlight}, {"max_batch_events", c.MaxBatchEvents}, {"max_batch_bytes", c.MaxBatchBytes}, {"workers", c.Workers},
		{"max_pending_impressions", c.MaxPendingImpressions}} {
		if f.v < 0 {
			p.Addf(path+"."+f.name, "must be >= 1; got %d", f.v)
		}
	}
	if c.Timeout < 0 {
		p.Addf(path+".timeout", "must be > 0")
	}
	if c.MaxRetryDuration < 0 {
		p.Addf(path+".max_retry_duration", "must be > 0")
	}
	for i, d := range c.RetrySchedule {
		if d <= 0 {
			p.Addf(fmt.Sprintf("%s.retry_schedule[%d]", path, i), "must be > 0; got %v", d.D())
		}
	}
}

// Defaults the core applies when neither the destination nor the config says.
const (
	DefaultTimeout          = 30 * time.Second
	DefaultMaxRetryDuration = 24 * time.Hour
	DefaultMaxInFlight      = 4
	// DefaultMaxPending holds about a quarter of a GiB of impressions per integration.
	DefaultMaxPending = 250_000
)

// WithDefaults fills the fields c leaves zero from the destination's defaults d, then
// from the core's.
func (c Config) WithDefaults(d Config) Config {
	or := func(v, dv float64) float64 {
		if v == 0 {
			return dv
		}
		return v
	}
	ori := func(v, dv int) int {
		if v == 0 {
			return dv
		}
		return v
	}
	ord := func(v, dv configkit.Duration, def time.Duration) configkit.Duration {
		if v == 0 {
			v = dv
		}
		if v == 0 {
			v = configkit.Duration(def)
		}
		return v
	}
	out := Config{
		RequestsPerSecond:     or(c.RequestsPerSecond, d.RequestsPerSecond),
		MinRequestsPerSecond:  or(c.MinRequestsPerSecond, d.MinRequestsPerSecond),
		MaxInFlight:           ori(ori(c.MaxInFlight, d.MaxInFlight), DefaultMaxInFlight),
		MaxBatchEvents:        ori(c.MaxBatchEvents, d.MaxBatchEvents),
		MaxBatchBytes:         ori(c.MaxBatchBytes, d.MaxBatchBytes),
		Timeout:               ord(c.Timeout, d.Timeout, DefaultTimeout),
		MaxRetryDuration:      ord(c.MaxRetryDuration, d.MaxRetryDuration, DefaultMaxRetryDuration),
		RetrySchedule:         c.RetrySchedule,
		MaxPendingImpressions: ori(ori(c.MaxPendingImpressions, d.MaxPendingImpressions), DefaultMaxPending),
	}
	if len(out.RetrySchedule) == 0 {
		out.RetrySchedule = d.RetrySchedule
	}
	if out.RequestsPerSecond == 0 {
		out.RequestsPerSecond = 10
	}
	if out.MinRequestsPerSecond == 0 {
		out.MinRequestsPerSecond = min(0.1, out.RequestsPerSecond)
	}
	return out
}
