package kafkaio

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outflow/outflow/internal/testenv"
)

// Against a real broker (scripts/kafka): every SASL mechanism over TLS, and a client
// certificate, reach it; a wrong password, a broker certificate not trusted and a
// missing client certificate do not, and the error names the cause.
func TestSecurityAgainstBroker(t *testing.T) {
	k := testenv.NewKafka(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Plain))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 3, 1, nil, "impressions"); err != nil {
		t.Fatal(err)
	}
	// The group coordinator (the offsets topic) comes up with the first request for it.
	plain := Config{Brokers: []string{k.Plain}, Topic: "impressions", Group: "g"}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		_, err := StartOffsets(ctx, plain)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broker's group coordinator is not up after 30 s: %v", err)
		}
	}
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	ca, cert, key := read(k.CAFile), read(k.ClientCert), read(k.ClientKey)
	for _, c := range []struct {
		name    string
		brokers string
		sec     Security
		want    string // in the error; "" for none
	}{
		{"plaintext", k.Plain, Security{}, ""},
		{"sasl plain", k.SASLSSL, Security{TLS: true, CAPEM: ca, SASL: "plain", User: k.User, Password: k.Pass}, ""},
		{"scram-sha-256", k.SASLSSL, Security{TLS: true, CAPEM: ca, SASL: "scram-sha-256", User: k.User, Password: k.Pass}, ""},
		{"scram-sha-512", k.SASLSSL, Security{TLS: true, CAPEM: ca, SASL: "scram-sha-512", User: k.User, Password: k.Pass}, ""},
		{"client certificate", k.SSL, Security{TLS: true, CAPEM: ca, CertPEM: cert, KeyPEM: key}, ""},
		{"wrong password", k.SASLSSL, Security{TLS: true, CAPEM: ca, SASL: "scram-sha-256", User: k.User, Password: "not-it"}, "authentication"},
		{"broker not trusted", k.SASLSSL, Security{TLS: true, SASL: "plain", User: k.User, Password: k.Pass}, "certificate"},
		{"no client certificate", k.SSL, Security{TLS: true, CAPEM: ca}, "certificate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.sec.Validate(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			parts, err := StartOffsets(ctx, Config{Brokers: []string{c.brokers}, Topic: "impressions", Group: "g", Security: c.sec})
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("%v", err)
			case c.want == "" && len(parts) != 3:
				t.Fatalf("listed %d partitions, want 3", len(parts))
			case c.want != "" && (err == nil || !strings.Contains(strings.ToLower(err.Error()), c.want)):
				t.Fatalf("got %v; want an error saying %q", err, c.want)
			case err != nil && strings.Contains(err.Error(), "not-it"):
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}
