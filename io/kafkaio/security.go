package kafkaio

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Security is how the clients reach the brokers of a managed Kafka: TLS, and SASL
// over it. The zero value is a plain connection. It travels in the pipeline, to
// workers that may not have the launcher's files or environment: the CA's PEM itself,
// and the password.
type Security struct {
	TLS bool `json:"tls,omitempty"`
	// CAPEM holds the certificates that sign the brokers' (PEM); empty: the system's.
	CAPEM string `json:"ca_pem,omitempty"`
	// CertPEM and KeyPEM are the client's certificate and key (PEM), for brokers that
	// authenticate clients by certificate (mutual TLS); empty: none.
	CertPEM string `json:"cert_pem,omitempty"`
	KeyPEM  string `json:"key_pem,omitempty"`
	// SASL is the mechanism: "" (none), "plain", "scram-sha-256" or "scram-sha-512".
	SASL     string `json:"sasl,omitempty"`
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
}

// SASLMechanisms are the mechanisms Security takes.
var SASLMechanisms = []string{"plain", "scram-sha-256", "scram-sha-512"}

// Validate names the first problem with s.
func (s Security) Validate() error {
	switch s.SASL {
	case "":
		if s.User != "" || s.Password != "" {
			return errors.New("a SASL user or password without a SASL mechanism")
		}
	case "plain", "scram-sha-256", "scram-sha-512":
		if s.User == "" || s.Password == "" {
			return fmt.Errorf("SASL %s needs a user and a password", s.SASL)
		}
	default:
		return fmt.Errorf("SASL mechanism %q: want one of %v", s.SASL, SASLMechanisms)
	}
	if (s.CertPEM != "" || s.KeyPEM != "") && !s.TLS {
		return errors.New("a client certificate without TLS")
	}
	if s.CertPEM != "" || s.KeyPEM != "" {
		if _, err := tls.X509KeyPair([]byte(s.CertPEM), []byte(s.KeyPEM)); err != nil {
			return fmt.Errorf("the client certificate and key: %w", err)
		}
	}
	if s.CAPEM != "" {
		if !s.TLS {
			return errors.New("a CA certificate without TLS")
		}
		if !x509.NewCertPool().AppendCertsFromPEM([]byte(s.CAPEM)) {
			return errors.New("the CA file holds no PEM certificate")
		}
	}
	return nil
}

// ClientOpts are the franz-go client options that reach the brokers so.
func (s Security) ClientOpts() []kgo.Opt {
	var opts []kgo.Opt
	if s.TLS {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if s.CAPEM != "" {
			cfg.RootCAs = x509.NewCertPool()
			cfg.RootCAs.AppendCertsFromPEM([]byte(s.CAPEM))
		}
		if cert, err := tls.X509KeyPair([]byte(s.CertPEM), []byte(s.KeyPEM)); err == nil { // Validate said why not
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.Dialer((&tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}).DialContext))
	}
	switch s.SASL {
	case "plain":
		opts = append(opts, kgo.SASL(plain.Auth{User: s.User, Pass: s.Password}.AsMechanism()))
	case "scram-sha-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism()))
	case "scram-sha-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism()))
	}
	return opts
}
