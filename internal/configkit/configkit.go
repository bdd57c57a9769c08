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
// host that is "localhost" (or ends in ".localhost") or an address literal that
// IsPublic refuses (loopback, private, link-local, carrier-grade NAT, documentation,
// multicast, reserved, and the IPv6 forms that embed or translate to IPv4, such as
// ::ffff:10.0.0.1 or 64:ff9b::a00:1) is a problem. Names that resolve to such
// addresses are refused again when the connection is made; this check only gives an
// early, clear error.
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
		p.Addf(path, "%s is a private, loopback, link-local or other special-purpose address; set allow_private_destinations: true for local testing", host)
	}
}

// IsPublic reports whether an HTTP sink may dial ip: a globally routable unicast
// address. It refuses every block listed in refused (loopback, private, link-local
// with cloud metadata at 169.254.169.254, carrier-grade NAT, documentation,
// benchmarking, multicast, reserved and broadcast, unspecified), any IPv6 address
// outside 2000::/3 (the only block IANA allocates for global unicast), IPv4-mapped
// addresses whose IPv4 address is refused, and the IPv6 forms that embed or translate
// to an IPv4 address (IPv4-compatible, NAT64, 6to4, Teredo), which could reach a
// private IPv4 address behind the check. A zone (fe80::1%eth0) does not change the
// answer, and the zero Addr is refused.
func IsPublic(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.WithZone("").Unmap() // a zoned address matches no prefix; ::ffff:a.b.c.d is a.b.c.d
	if ip.Is6() && !globalUnicast.Contains(ip) {
		return false
	}
	for _, b := range refused {
		if b.Contains(ip) {
			return false
		}
	}
	return true
}

// globalUnicast is 2000::/3, the IPv6 global unicast space (IANA IPv6 Address Space
// registry). Everything else in IPv6 is special-purpose or reserved by the IETF:
// ::/8 (unspecified, loopback, IPv4-compatible and -mapped), 64:ff9b::/96 and
// 64:ff9b:1::/48 (NAT64), 100::/64 (discard), 5f00::/16 (SRv6), fc00::/7 (ULA),
// fe80::/10 (link-local), fec0::/10 (site-local), ff00::/8 (multicast). They are
// still listed in refused, so that the table alone says what is refused.
var globalUnicast = netip.MustParsePrefix("2000::/3")

// refused lists the blocks an HTTP sink must never dial. It follows the IANA IPv4 and
// IPv6 Special-Purpose Address Registries
// (https://www.iana.org/assignments/iana-ipv4-special-registry,
// https://www.iana.org/assignments/iana-ipv6-special-registry; RFC 6890 and updates)
// and adds multicast and the forms that carry an IPv4 address inside IPv6. Blocks the
// registries mark globally reachable stay allowed (192.31.196.0/24 AS112…), except
// the anycast services inside 2001::/23 (PCP, TURN, AMT, AS112): no HTTP sink lives
// there, and the registry's 2001::/23 entry is refused whole. IPv4-mapped addresses
// (::ffff:0:0/96) are unmapped before the lookup, so each IPv4 block also refuses its
// mapped form.
var refused = func() []netip.Prefix {
	blocks := []string{
		// IPv4
		"0.0.0.0/8",       // "this network", includes the unspecified 0.0.0.0
		"10.0.0.0/8",      // private (RFC 1918)
		"100.64.0.0/10",   // shared address space, carrier-grade NAT (RFC 6598)
		"127.0.0.0/8",     // loopback
		"169.254.0.0/16",  // link-local, cloud metadata (169.254.169.254)
		"172.16.0.0/12",   // private (RFC 1918)
		"192.0.0.0/24",    // IETF protocol assignments (RFC 6890)
		"192.0.2.0/24",    // documentation TEST-NET-1
		"192.88.99.0/24",  // deprecated 6to4 relay anycast (RFC 7526)
		"192.168.0.0/16",  // private (RFC 1918)
		"198.18.0.0/15",   // benchmarking (RFC 2544)
		"198.51.100.0/24", // documentation TEST-NET-2
		"203.0.113.0/24",  // documentation TEST-NET-3
		"224.0.0.0/4",     // multicast
		"240.0.0.0/4",     // reserved, includes broadcast 255.255.255.255
		// IPv6
		"::/128",         // unspecified
		"::1/128",        // loopback
		"::/96",          // IPv4-compatible, deprecated (RFC 4291); covers the two above
		"::ffff:0:0/96",  // IPv4-mapped: only reached if Unmap is ever removed
		"64:ff9b::/96",   // NAT64 well-known prefix (RFC 6052): reaches IPv4 space
		"64:ff9b:1::/48", // NAT64 local-use prefix (RFC 8215)
		"100::/64",       // discard-only (RFC 6666)
		"2001::/23",      // IETF protocol assignments, not reachable as a whole; holds:
		"2001::/32",      // Teredo (RFC 4380): embeds an IPv4 address
		"2001:2::/48",    // benchmarking (RFC 5180)
		"2001:10::/28",   // ORCHID, deprecated (RFC 4843)
		"2001:20::/28",   // ORCHIDv2 (RFC 7343)
		"2001:db8::/32",  // documentation (RFC 3849)
		"2002::/16",      // 6to4 (RFC 3056): embeds an IPv4 address
		"3fff::/20",      // documentation (RFC 9637)
		"5f00::/16",      // SRv6 SIDs (RFC 9602)
		"fc00::/7",       // unique local (RFC 4193)
		"fe80::/10",      // link-local
		"fec0::/10",      // site-local, deprecated (RFC 3879)
		"ff00::/8",       // multicast
	}
	ps := make([]netip.Prefix, len(blocks))
	for i, b := range blocks {
		ps[i] = netip.MustParsePrefix(b)
	}
	return ps
}()
