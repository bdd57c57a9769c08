package configkit

import (
	"net/netip"
	"strings"
	"testing"
)

// v4Cases hold, for each refused IPv4 block, addresses at its edges and just outside
// it, and public addresses that must stay allowed. TestIsPublic also checks each one
// in its IPv4-mapped form (same answer) and its IPv4-compatible and NAT64 forms
// (always refused).
var v4Cases = []struct {
	addr   string
	public bool
}{
	// 0.0.0.0/8
	{"0.0.0.0", false}, {"0.255.255.255", false}, {"1.0.0.0", true},
	// 10.0.0.0/8
	{"10.0.0.1", false}, {"10.255.255.255", false}, {"9.255.255.255", true}, {"11.0.0.0", true},
	// 100.64.0.0/10
	{"100.64.0.0", false}, {"100.127.255.255", false}, {"100.63.255.255", true}, {"100.128.0.1", true},
	// 127.0.0.0/8
	{"127.0.0.1", false}, {"127.255.255.255", false}, {"126.255.255.255", true}, {"128.0.0.0", true},
	// 169.254.0.0/16
	{"169.254.169.254", false}, {"169.254.0.0", false}, {"169.253.255.255", true}, {"169.255.0.0", true},
	// 172.16.0.0/12
	{"172.16.0.0", false}, {"172.31.255.255", false}, {"172.15.255.255", true}, {"172.32.0.0", true},
	// 192.0.0.0/24
	{"192.0.0.8", false}, {"192.0.0.255", false}, {"191.255.255.255", true}, {"192.0.1.0", true},
	// 192.0.2.0/24
	{"192.0.2.1", false}, {"192.0.2.255", false}, {"192.0.3.0", true},
	// 192.88.99.0/24
	{"192.88.99.1", false}, {"192.88.98.255", true}, {"192.88.100.0", true},
	// 192.168.0.0/16
	{"192.168.1.1", false}, {"192.168.255.255", false}, {"192.167.255.255", true}, {"192.169.0.0", true},
	// 198.18.0.0/15
	{"198.18.0.0", false}, {"198.19.255.255", false}, {"198.17.255.255", true}, {"198.20.0.1", true},
	// 198.51.100.0/24
	{"198.51.100.1", false}, {"198.51.99.255", true}, {"198.51.101.0", true},
	// 203.0.113.0/24
	{"203.0.113.1", false}, {"203.0.112.255", true}, {"203.0.114.0", true},
	// 224.0.0.0/4; just above it is 240.0.0.0/4, refused too
	{"224.0.0.1", false}, {"239.255.255.255", false}, {"223.255.255.255", true},
	// 240.0.0.0/4
	{"240.0.0.0", false}, {"255.255.255.255", false},
	// public
	{"8.8.8.8", true}, {"1.1.1.1", true}, {"192.31.196.1", true}, {"52.95.110.1", true},
}

// v6Cases are checked as written. Just outside a block that lies outside 2000::/3 is
// still outside 2000::/3, so it is refused too.
var v6Cases = []struct {
	addr   string
	public bool
}{
	// ::/128, ::1, ::/96 (IPv4-compatible)
	{"::", false}, {"::1", false}, {"::2", false}, {"::ffff:ffff", false},
	{"::1:0:0", false}, // just outside ::/96, outside 2000::/3
	// ::ffff:0:0/96 (IPv4-mapped): the embedded IPv4 address decides
	{"::ffff:10.0.0.1", false}, {"::ffff:169.254.169.254", false}, {"::ffff:8.8.8.8", true},
	{"::fffe:808:808", false}, {"::1:ffff:808:808", false}, // just outside, outside 2000::/3
	// 64:ff9b::/96 (NAT64), even for a public IPv4 address
	{"64:ff9b::a00:1", false}, {"64:ff9b::808:808", false}, {"64:ff9b::1:0:0", false},
	// 64:ff9b:1::/48 (NAT64 local use)
	{"64:ff9b:1::1", false}, {"64:ff9b:1:ffff::1", false}, {"64:ff9b:2::1", false},
	// 100::/64 (discard)
	{"100::1", false}, {"100::ffff:ffff:ffff:ffff", false}, {"100:0:0:1::1", false},
	// 2001::/23 and the blocks inside it: Teredo, benchmarking, ORCHID, ORCHIDv2
	{"2001::1", false}, {"2001:0:4136:e378:8000:63bf:3fff:fdd2", false}, // Teredo
	{"2001:1::1", false}, // PCP anycast: refused with the rest of 2001::/23
	{"2001:2::1", false}, {"2001:2:0:ffff::1", false},
	{"2001:10::1", false}, {"2001:1f:ffff::1", false},
	{"2001:20::1", false}, {"2001:2f:ffff::1", false},
	{"2001:1ff:ffff::1", false}, {"2001:200::1", true}, {"2000:ffff::1", true},
	// 2001:db8::/32 (documentation)
	{"2001:db8::1", false}, {"2001:db8:ffff::1", false}, {"2001:db7:ffff::1", true}, {"2001:db9::1", true},
	// 2002::/16 (6to4), which embeds 10.0.0.1 or 8.8.8.8 here
	{"2002:a00:1::1", false}, {"2002:808:808::1", false}, {"2001:ffff::1", true}, {"2003::1", true},
	// 3fff::/20 (documentation)
	{"3fff::1", false}, {"3fff:fff::1", false}, {"3fff:1000::1", true}, {"3ffe::1", true},
	// 2000::/3: the only IPv6 block allocated for global unicast
	{"2000::1", true}, {"1fff:ffff::1", false}, {"4000::1", false},
	// 5f00::/16 (SRv6)
	{"5f00::1", false},
	// fc00::/7 (ULA)
	{"fc00::1", false}, {"fd12:3456::1", false}, {"fdff:ffff::1", false}, {"fbff::1", false},
	// fe80::/10 (link-local), with or without a zone
	{"fe80::1", false}, {"fe80::1%eth0", false}, {"febf::1", false},
	// fec0::/10 (site-local)
	{"fec0::1", false}, {"feff::1", false},
	// ff00::/8 (multicast)
	{"ff02::1", false}, {"ff0e::1", false}, {"ff02::1%eth0", false},
	// public
	{"2606:4700:4700::1111", true}, {"2001:4860:4860::8888", true}, {"2a00:1450:4001::200e", true},
}

func TestIsPublic(t *testing.T) {
	check := func(ip netip.Addr, want bool) {
		t.Helper()
		if got := IsPublic(ip); got != want {
			t.Errorf("IsPublic(%s) = %v, want %v", ip, got, want)
		}
	}
	for _, c := range v4Cases {
		ip := netip.MustParseAddr(c.addr)
		check(ip, c.public)
		check(netip.AddrFrom16(ip.As16()), c.public) // ::ffff:a.b.c.d
		b := ip.As4()
		check(netip.AddrFrom16([16]byte{12: b[0], 13: b[1], 14: b[2], 15: b[3]}), false) // ::a.b.c.d
		check(netip.AddrFrom16([16]byte{0: 0, 1: 0x64, 2: 0xff, 3: 0x9b, 12: b[0], 13: b[1], 14: b[2], 15: b[3]}), false)
	}
	for _, c := range v6Cases {
		check(netip.MustParseAddr(c.addr), c.public)
	}
	check(netip.Addr{}, false)
}

// TestIsPublicTable: every block in refused is refused at its first and last address,
// and in its IPv4-mapped form for IPv4 blocks.
func TestIsPublicTable(t *testing.T) {
	for _, p := range refused {
		first := p.Masked().Addr()
		b := first.AsSlice()
		for i := p.Bits(); i < len(b)*8; i++ {
			b[i/8] |= 0x80 >> (i % 8)
		}
		last, _ := netip.AddrFromSlice(b)
		for _, ip := range []netip.Addr{first, last} {
			if IsPublic(ip) {
				t.Errorf("IsPublic(%s) = true; %s is refused", ip, p)
			}
			if ip.Is4() && IsPublic(netip.AddrFrom16(ip.As16())) {
				t.Errorf("IsPublic(::ffff:%s) = true; %s is refused", ip, p)
			}
		}
	}
}

func TestCheckDestinationURL(t *testing.T) {
	cases := []struct {
		url          string
		allowPrivate bool
		problem      string // "" for none
	}{
		{"https://api2.amplitude.com", false, ""},
		{"https://8.8.8.8/batch", false, ""},
		{"https://[2606:4700:4700::1111]/", false, ""},
		{"http://127.0.0.1:8080", false, "127.0.0.1 is a private, loopback"},
		{"http://169.254.169.254/latest/meta-data", false, "169.254.169.254 is a private"},
		{"http://[::ffff:169.254.169.254]/", false, "::ffff:169.254.169.254 is a private"},
		{"http://[::ffff:a9fe:a9fe]/", false, "::ffff:a9fe:a9fe is a private"},
		{"http://[64:ff9b::a9fe:a9fe]/", false, "special-purpose"},
		{"http://[fe80::1%25eth0]:80/", false, "special-purpose"},
		{"http://100.64.0.1/", false, "special-purpose"},
		{"http://198.18.0.1/", false, "special-purpose"},
		{"http://localhost:9000", false, `"localhost" is a loopback address`},
		{"http://127.0.0.1:8080", true, ""},
		{"http://[::ffff:10.0.0.1]/", true, ""},
	}
	for _, c := range cases {
		var p Problems
		CheckDestinationURL(&p, "x.url", c.url, c.allowPrivate)
		got := strings.Join(p.List(), "\n")
		switch {
		case c.problem == "" && got != "":
			t.Errorf("CheckDestinationURL(%q, %v): unexpected problem %q", c.url, c.allowPrivate, got)
		case c.problem != "" && !strings.Contains(got, c.problem):
			t.Errorf("CheckDestinationURL(%q, %v) = %q, want a problem containing %q", c.url, c.allowPrivate, got, c.problem)
		}
	}
}
