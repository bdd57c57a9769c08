package s3io

import (
	"github.com/outflow/outflow/internal/configkit"
	"github.com/outflow/outflow/transforms/encode"
)

// Config is the `s3:` section of an integration (CONTRACT §2).
type Config struct {
	encode.ObjectSpec `yaml:",inline"`
	// Region defaults to the AWS configuration chain, then us-east-1.
	Region string `yaml:"region" json:"region"`
	// Endpoint is an S3-compatible server, addressed path-style.
	Endpoint string `yaml:"endpoint" json:"endpoint"`
}

// Validate fills defaults and records every problem under path.
func (c *Config) Validate(p *configkit.Problems, path string) {
	c.ObjectSpec.Validate(p, path)
	if c.Endpoint != "" {
		configkit.CheckURL(p, path+".endpoint", c.Endpoint)
	}
}
