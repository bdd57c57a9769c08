package config

import (
	"errors"
	"testing"
)

// FuzzParse: whatever the text, Parse never panics; it returns a config whose
// integrations passed validation, or an *Error listing problems.
func FuzzParse(f *testing.F) {
	f.Add([]byte(contractExample))
	f.Add([]byte("integrations:\n  - {id: a, tenant: t, type: s3, s3: {bucket: bbb}}\n"))
	f.Add([]byte("integrations: [{id: x, type: webhook, window: 5x, webhook: {url: 'http://[::1', secret: ${NOPE}}}]"))
	f.Add([]byte("&a [*a, *a]"))
	f.Fuzz(func(t *testing.T, text []byte) {
		cfg, err := Parse(text)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("Parse error %T %v; want *Error with problems", err, err)
			}
			return
		}
		if len(cfg.Integrations) == 0 {
			t.Fatal("accepted a config without integrations")
		}
		for _, in := range cfg.Integrations {
			if !idPattern.MatchString(in.ID) || in.Tenant == "" || in.Shards < 0 || ShardsOf(in) < 1 || in.Shards == 0 && !in.Type.IsObjectStore() || in.Window.D() <= 0 {
				t.Fatalf("accepted an invalid integration %+v", in)
			}
		}
	})
}
