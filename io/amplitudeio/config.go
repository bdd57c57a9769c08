// Package amplitudeio sends impressions to Amplitude's Batch API as events.
package amplitudeio

import (
	"github.com/outflow/outflow/internal/configkit"
)

// Config is the `amplitude:` section of an integration (CONTRACT §2, §4).
type Config struct {
	APIKey    configkit.Secret `yaml:"api_key" json:"api_key"`
	Endpoint  string           `yaml:"endpoint" json:"endpoint"`
	EventType string           `yaml:"event_type" json:"event_type"`
	// IDField is the event field that carries the impression key: user_id or device_id.
	IDField string `yaml:"id_field" json:"id_field"`
}

// Defaults of the section.
const (
	DefaultEndpoint  = "https://api2.amplitude.com"
	DefaultEventType = "get_treatment"
)

// Validate fills defaults and records every problem under path.
func (c *Config) Validate(p *configkit.Problems, path string, allowPrivate bool) {
	configkit.CheckRequired(p, path+".api_key", c.APIKey.Reveal())
	if c.Endpoint == "" {
		c.Endpoint = DefaultEndpoint
	}
	configkit.CheckDestinationURL(p, path+".endpoint", c.Endpoint, allowPrivate)
	if c.EventType == "" {
		c.EventType = DefaultEventType
	}
	if len(c.EventType) > 1024 {
		p.Addf(path+".event_type", "is %d characters; Amplitude allows 1024", len(c.EventType))
	}
	if c.IDField == "" {
		c.IDField = "user_id"
	}
	configkit.CheckOneOf(p, path+".id_field", c.IDField, "user_id", "device_id")
}
