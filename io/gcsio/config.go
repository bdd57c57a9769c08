// Package gcsio writes data objects to Google Cloud Storage.
package gcsio

import (
	"github.com/outflow/outflow/internal/configkit"
	"github.com/outflow/outflow/transforms/encode"
)

// Config is the `gcs:` section of an integration (CONTRACT §2). The client honours
// STORAGE_EMULATOR_HOST.
type Config struct {
	encode.ObjectSpec `yaml:",inline"`
	// Endpoint is a GCS-compatible server (an emulator such as fake-gcs-server),
	// reached without authentication: its base URL, e.g. http://localhost:4443, or
	// the full JSON API URL ending in /storage/v1/.
	Endpoint string `yaml:"endpoint" json:"endpoint"`
}

// Validate fills defaults and records every problem under path.
func (c *Config) Validate(p *configkit.Problems, path string) {
	c.ObjectSpec.Validate(p, path)
	if c.Endpoint != "" {
		configkit.CheckURL(p, path+".endpoint", c.Endpoint)
	}
}
