package kafkaio

import (
	"strings"
	"testing"
)

// Security refuses what could not connect, naming what is missing.
func TestSecurityValidate(t *testing.T) {
	const pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUJ3f1m2CLQ0f0k4v9OpR8m5n1pVYwCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----\n"
	for _, c := range []struct {
		s    Security
		want string // "" for valid
	}{
		{Security{}, ""},
		{Security{TLS: true}, ""},
		{Security{TLS: true, SASL: "scram-sha-512", User: "u", Password: "p"}, ""},
		{Security{SASL: "plain", User: "u", Password: "p"}, ""},
		{Security{SASL: "scram-sha-256", User: "u"}, "needs a user and a password"},
		{Security{SASL: "gssapi", User: "u", Password: "p"}, `SASL mechanism "gssapi"`},
		{Security{User: "u"}, "without a SASL mechanism"},
		{Security{CAPEM: pem}, "without TLS"},
		{Security{TLS: true, CAPEM: "not a certificate"}, "no PEM certificate"},
	} {
		err := c.s.Validate()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v, want valid", c.s, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: %v, want %q", c.s, err, c.want)
		}
	}
}
