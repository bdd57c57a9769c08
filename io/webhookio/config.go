// Package webhookio posts impressions to customers' webhooks, signed per Standard Webhooks.
package webhookio

import (
	"encoding/base64"
	"strings"

	"github.com/outflow/outflow/internal/configkit"
)

// Config is the `webhook:` section of an integration (CONTRACT §2, §4).
type Config struct {
	URL string `yaml:"url" json:"url"`
	// Secret is "whsec_" followed by base64 of the signing key (Standard Webhooks).
	Secret configkit.Secret `yaml:"secret" json:"secret"`
	Gzip   bool             `yaml:"gzip" json:"gzip"`
}

// Validate records every problem under path.
func (c *Config) Validate(p *configkit.Problems, path string, allowPrivate bool) {
	if configkit.CheckRequired(p, path+".url", c.URL) {
		configkit.CheckDestinationURL(p, path+".url", c.URL, allowPrivate)
	}
	if configkit.CheckRequired(p, path+".secret", c.Secret.Reveal()) {
		if _, err := SigningKey(c.Secret); err != nil {
			p.Addf(path+".secret", "%v", err)
		}
	}
}

// SigningKey decodes the HMAC key from a "whsec_<base64>" secret.
func SigningKey(s configkit.Secret) ([]byte, error) {
	b64, ok := strings.CutPrefix(s.Reveal(), "whsec_")
	if !ok {
		return nil, errSecretFormat
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) < 16 {
		return nil, errSecretFormat
	}
	return key, nil
}

var errSecretFormat = secretError("must be whsec_ followed by base64 of at least 16 random bytes")

type secretError string

func (e secretError) Error() string { return string(e) }
