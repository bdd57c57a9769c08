package s3io

import (
	"github.com/outflow/outflow/internal/configkit"
	"github.com/outflow/outflow/transforms/encode"
)

// Config is the `s3:` section of an integration (CONTRACT §2).
type Config struct {
	encode.ObjectSpec `yaml:",inline"`
	Connection        `yaml:",inline"`
}

// Connection says how to reach S3: the sink's settings, and the configuration's
// `files.s3` section for s3:// inputs and stores.
type Connection struct {
	// Region defaults to the AWS configuration chain, then us-east-1.
	Region string `yaml:"region" json:"region"`
	// Endpoint is an S3-compatible server, addressed path-style.
	Endpoint string `yaml:"endpoint" json:"endpoint"`
}

// Validate records every problem under path.
func (c *Connection) Validate(p *configkit.Problems, path string) {
	if c.Endpoint != "" {
		configkit.CheckURL(p, path+".endpoint", c.Endpoint)
	}
}

// Validate fills defaults and records every problem under path.
func (c *Config) Validate(p *configkit.Problems, path string) {
	c.ObjectSpec.Validate(p, path)
	c.Connection.Validate(p, path)
}
