// Package segmentio sends impressions to Segment's HTTP Tracking API as track calls.
package segmentio

import (
	"github.com/outflow/outflow/internal/configkit"
)

// Config is the `segment:` section of an integration (CONTRACT §2, §4).
type Config struct {
	WriteKey configkit.Secret `yaml:"write_key" json:"write_key"`
	Endpoint string           `yaml:"endpoint" json:"endpoint"`
	Event    string           `yaml:"event" json:"event"`
}

// Defaults of the section.
const (
	DefaultEndpoint = "https://api.segment.io"
	DefaultEvent    = "get_treatment"
)

// Validate fills defaults and records every problem under path.
func (c *Config) Validate(p *configkit.Problems, path string, allowPrivate bool) {
	configkit.CheckRequired(p, path+".write_key", c.WriteKey.Reveal())
	if c.Endpoint == "" {
		c.Endpoint = DefaultEndpoint
	}
	configkit.CheckDestinationURL(p, path+".endpoint", c.Endpoint, allowPrivate)
	if c.Event == "" {
		c.Event = DefaultEvent
	}
}
