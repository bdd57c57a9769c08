package config

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestSharedDestinationsRefused(t *testing.T) {
	_, err := Parse([]byte(`
integrations:
  - {id: a, tenant: acme, type: s3, s3: {bucket: shared, prefix: exports}}
  - {id: b, tenant: acme2, type: s3, s3: {bucket: shared, prefix: exports/acme2}}
  - {id: c, tenant: acme2, type: s3, s3: {bucket: shared, prefix: exports-2}}
  - {id: d, tenant: acme, type: webhook, webhook: {url: "https://hooks.example.com/x/", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}
  - {id: e, tenant: ACME, type: webhook, webhook: {url: "https://HOOKS.example.com/x", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}
  - {id: f, tenant: acme, type: amplitude, amplitude: {api_key: k1}}
  - {id: g, tenant: globex, type: amplitude, amplitude: {api_key: k1}}
  - {id: h, tenant: acme, type: s3, s3: {bucket: shared, prefix: exports/h}}
  - {id: i, tenant: acme, type: gcs, gcs: {bucket: shared, prefix: exports/h}}
`))
	if err == nil {
		t.Fatal("shared destinations accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		`integration "b": s3.prefix: "exports/acme2" overlaps the prefix "exports" in the same bucket of integration "a" of tenant "acme"`,
		`integration "e": webhook.url: is the destination of integration "d" of tenant "acme"`,
		`integration "g": amplitude.api_key: is the destination of integration "f"`,
		// One tenant's too: a prefix holds each impression once, whatever wrote it.
		`integration "h": s3.prefix: "exports/h" overlaps the prefix "exports" in the same bucket of integration "a"; each object store integration needs a prefix of its own`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("problems lack %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, `integration "c"`) || strings.Contains(msg, `integration "i"`) || strings.Contains(msg, "k1") {
		t.Errorf("a prefix that only starts alike, or the same one in GCS, is refused, or a key leaked:\n%s", msg)
	}
}

// Property: over random configurations, with near-identical tenant names and
// overlapping prefixes, no accepted configuration lets a tenant's destination hold
// another tenant's impressions, and no two object store integrations share a prefix.
func TestTenantsNeverShareAcceptedDestinations(t *testing.T) {
	tenants := []string{"acme", "acme2", "ACME", "acme-"}
	buckets := []string{"b-one", "b-two"}
	prefixes := []string{"", "a", "a/b", "ab", "a/b/c", "b"}
	urls := []string{"https://h.example.com/x", "https://h.example.com/x/", "https://h.example.com/y"}
	accepted := 0
	for seed := range uint64(500) {
		r := rand.New(rand.NewPCG(seed, 9))
		var b strings.Builder
		b.WriteString("integrations:\n")
		for i := range 2 + r.IntN(5) {
			tenant := tenants[r.IntN(len(tenants))]
			if r.IntN(3) == 0 {
				fmt.Fprintf(&b, "  - {id: i%d, tenant: %q, type: webhook, webhook: {url: %q, secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}}\n",
					i, tenant, urls[r.IntN(len(urls))])
				continue
			}
			fmt.Fprintf(&b, "  - {id: i%d, tenant: %q, type: s3, s3: {bucket: %s, prefix: %q}}\n",
				i, tenant, buckets[r.IntN(len(buckets))], prefixes[r.IntN(len(prefixes))])
		}
		cfg, err := Parse([]byte(b.String()))
		if err != nil {
			continue
		}
		accepted++
		for i, x := range cfg.Integrations {
			for _, y := range cfg.Integrations[:i] {
				dx, _ := x.destination()
				dy, _ := y.destination()
				if x.Tenant == y.Tenant && dx.kind == "webhook" {
					continue
				}
				if dx.kind == dy.kind && dx.place == dy.place && overlaps(dx.prefix, dy.prefix) {
					t.Fatalf("seed %d: accepted %s and %s sharing %s %q/%q:\n%s",
						seed, x.ID, y.ID, dx.place, dx.prefix, dy.prefix, b.String())
				}
			}
		}
	}
	if accepted < 50 {
		t.Errorf("only %d of 500 random configurations accepted; the property is barely exercised", accepted)
	}
}
