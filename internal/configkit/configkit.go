// Package configkit holds the small types and checks that every configuration
// section shares: durations, secrets, URLs and the list of problems found.
//
// It is a leaf package so that destination packages can use it for their own
// sections while internal/config composes those sections.
package configkit

import (
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Problems collects every configuration problem so they can be reported at once.
// Each message names where it is: the integration and the field.
type Problems struct {
	list []string
}

// Addf records a problem at path (e.g. `integration "acme-s3": s3.bucket`).
func (p *Problems) Addf(path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	p.list = append(p.list, msg)
}

// List returns the problems in the order they were found.
func (p *Problems) List() []string { return p.list }

// Duration is a time.Duration written in YAML as a Go duration string ("5m", "10s").
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		// A TypeError lets decoding go on, so every problem is reported at once.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d column %d: %q is not a duration like 10s, 5m or 1h", n.Line, n.Column, n.Value)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Secret is a credential. It prints as "[redacted]" in logs, errors and fmt verbs, but
// keeps its JSON form: DoFn fields reach workers JSON-serialized.
type Secret string

const redacted = "[redacted]"

func (s Secret) String() string       { return redacted }
func (s Secret) GoString() string     { return redacted }
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// Reveal returns the secret itself, for the one place that sends it.
func (s Secret) Reveal() string { return string(s) }

// CheckURL reports a problem unless raw is an absolute http or https URL with a host.
func CheckURL(p *Problems, path, raw string) {
	u, err := url.Parse(raw)
	if err != nil {
		p.Addf(path, "%q is not a valid URL", raw)
		return
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		p.Addf(path, "%q must start with http:// or https://", raw)
		return
	}
	if u.Host == "" {
		p.Addf(path, "%q has no host", raw)
	}
	if u.User != nil {
		p.Addf(path, "URL must not hold credentials; use the section's key fields")
	}
}

// CheckOneOf reports a problem unless v is one of allowed.
func CheckOneOf(p *Problems, path, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	p.Addf(path, "%q is not one of %s", v, strings.Join(allowed, ", "))
}

// CheckRequired reports a problem when v is empty.
func CheckRequired(p *Problems, path, v string) bool {
	if strings.TrimSpace(v) == "" {
		p.Addf(path, "is required")
		return false
	}
	return true
}

// CheckDestinationURL checks an HTTP sink's URL: CheckURL, and unless allowPrivate, a
// host that is literally a loopback, private, link-local or unspecified address (or
// "localhost") is refused. Names that resolve to such addresses are refused again when
// the connection is made; this check only gives an early, clear error.
func CheckDestinationURL(p *Problems, path, raw string, allowPrivate bool) {
	before := len(p.list)
	CheckURL(p, path, raw)
	if len(p.list) > before || allowPrivate {
		return
	}
	u, _ := url.Parse(raw)
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		p.Addf(path, "%q is a loopback address; set allow_private_destinations: true for local testing", host)
		return
	}
	if ip, err := netip.ParseAddr(host); err == nil && !IsPublic(ip) {
		p.Addf(path, "%s is a private, loopback or link-local address; set allow_private_destinations: true for local testing", host)
	}
}

// IsPublic reports whether ip is a globally routable unicast address: not loopback,
// private, link-local (which covers cloud metadata at 169.254.169.254), unspecified,
// multicast or carrier-grade NAT.
func IsPublic(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() || !ip.IsValid() {
		return false
	}
	return !cgnat.Contains(ip)
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")
