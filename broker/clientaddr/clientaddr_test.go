package clientaddr

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestFrom(t *testing.T) {
	const peer = "10.1.2.3:41234" // the proxy (or client) on the TCP connection
	tests := []struct {
		name   string
		remote string
		xff    []string
		hops   int
		want   string // "" = not ok
	}{
		// hops 0: the TCP peer, whatever the header says.
		{name: "peer", remote: "203.0.113.7:5555", want: "203.0.113.7"},
		{name: "peer ignores the header", remote: "203.0.113.7:5555", xff: []string{"198.51.100.1"}, want: "203.0.113.7"},
		{name: "IPv6 peer", remote: "[2001:db8::7]:443", want: "2001:db8::7"},
		{name: "IPv6 peer with a zone", remote: "[fe80::1%eth0]:443", want: "fe80::1"},
		{name: "IPv4-mapped peer is unmapped", remote: "[::ffff:203.0.113.7]:443", want: "203.0.113.7"},
		{name: "bare peer address", remote: "203.0.113.7", want: "203.0.113.7"},
		{name: "peer not an address", remote: "pipe", want: ""},
		{name: "empty peer", remote: "", want: ""},
		{name: "negative hops is the peer", remote: "203.0.113.7:1", xff: []string{"198.51.100.1"}, hops: -1, want: "203.0.113.7"},

		// hops 1: the rightmost entry (what the one trusted proxy appended).
		{name: "one hop", remote: peer, xff: []string{"203.0.113.7"}, hops: 1, want: "203.0.113.7"},
		{name: "spoofed left entries never count", remote: peer, xff: []string{"192.0.2.66, 198.51.100.9, 203.0.113.7"}, hops: 1, want: "203.0.113.7"},
		{name: "left entries may hold anything", remote: peer, xff: []string{"unknown, <script>, 203.0.113.7"}, hops: 1, want: "203.0.113.7"},
		{name: "spaces and tabs trimmed", remote: peer, xff: []string{"192.0.2.66 ,\t203.0.113.7 \t"}, hops: 1, want: "203.0.113.7"},
		{name: "IPv6 entry", remote: peer, xff: []string{"2001:db8::1, 2001:db8:cafe::7"}, hops: 1, want: "2001:db8:cafe::7"},
		{name: "IPv4-mapped entry is unmapped", remote: peer, xff: []string{"::ffff:203.0.113.7"}, hops: 1, want: "203.0.113.7"},
		{name: "no header", remote: peer, hops: 1, want: ""},
		{name: "empty header", remote: peer, xff: []string{""}, hops: 1, want: ""},
		{name: "empty rightmost entry", remote: peer, xff: []string{"203.0.113.7,"}, hops: 1, want: ""},
		{name: "rightmost not an address", remote: peer, xff: []string{"203.0.113.7, unknown"}, hops: 1, want: ""},
		{name: "entry with a port", remote: peer, xff: []string{"203.0.113.7:443"}, hops: 1, want: ""},
		{name: "bracketed IPv6 entry", remote: peer, xff: []string{"[2001:db8::7]"}, hops: 1, want: ""},
		{name: "entry with a zone", remote: peer, xff: []string{"fe80::1%eth0"}, hops: 1, want: ""},
		{name: "entry with leading zeros", remote: peer, xff: []string{"203.000.113.7"}, hops: 1, want: ""},
		{name: "entry in CIDR form", remote: peer, xff: []string{"203.0.113.0/24"}, hops: 1, want: ""},
		{name: "several header lines are one chain", remote: peer, xff: []string{"192.0.2.66", "203.0.113.7"}, hops: 1, want: "203.0.113.7"},

		// hops 2: the second from the right (a load balancer appends
		// "<client-ip>,<load-balancer-ip>").
		{name: "two hops", remote: peer, xff: []string{"203.0.113.7,34.120.1.1"}, hops: 2, want: "203.0.113.7"},
		{name: "two hops, spoofed left", remote: peer, xff: []string{"192.0.2.66, 203.0.113.7, 34.120.1.1"}, hops: 2, want: "203.0.113.7"},
		{name: "two hops across header lines", remote: peer, xff: []string{"192.0.2.66, 203.0.113.7", "34.120.1.1"}, hops: 2, want: "203.0.113.7"},
		{name: "two hops, client line then proxy line", remote: peer, xff: []string{"203.0.113.7", "2600:1901::1"}, hops: 2, want: "203.0.113.7"},
		{name: "chain shorter than hops", remote: peer, xff: []string{"203.0.113.7"}, hops: 2, want: ""},
		{name: "proxy entry not an address", remote: peer, xff: []string{"203.0.113.7, lb"}, hops: 2, want: ""},
		{name: "client entry not an address", remote: peer, xff: []string{"192.0.2.66, nobody, 34.120.1.1"}, hops: 2, want: ""},
		{name: "empty client entry", remote: peer, xff: []string{", 34.120.1.1"}, hops: 2, want: ""},
		{name: "three hops", remote: peer, xff: []string{"192.0.2.66,203.0.113.7,34.120.1.1,10.0.0.1"}, hops: 3, want: "203.0.113.7"},
		{name: "chain exactly hops long", remote: peer, xff: []string{"203.0.113.7,34.120.1.1,10.0.0.1"}, hops: 3, want: "203.0.113.7"},
		{name: "chain one short", remote: peer, xff: []string{"34.120.1.1,10.0.0.1"}, hops: 3, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := From(tt.remote, tt.xff, tt.hops)
			if tt.want == "" {
				if ok {
					t.Fatalf("From = %v, want not ok", got)
				}
				if got.IsValid() {
					t.Errorf("not ok, but returned %v", got)
				}
				return
			}
			if !ok || got != netip.MustParseAddr(tt.want) {
				t.Fatalf("From = %v, %v; want %s", got, ok, tt.want)
			}
		})
	}
}

func TestFromRequest(t *testing.T) {
	r := httptest.NewRequest("GET", "/v1/stores", nil)
	r.RemoteAddr = "169.254.1.1:30000"
	r.Header.Add("x-forwarded-for", "192.0.2.66, 198.51.100.1")
	r.Header.Add("X-Forwarded-For", "203.0.113.7")
	for hops, want := range []string{"169.254.1.1", "203.0.113.7", "198.51.100.1", "192.0.2.66"} {
		if got, ok := FromRequest(r, hops); !ok || got.String() != want {
			t.Errorf("hops %d: %v, %v; want %s", hops, got, ok, want)
		}
	}
	if got, ok := FromRequest(r, 4); ok {
		t.Errorf("hops 4: %v, want not ok (chain of 3)", got)
	}
}

func FuzzFrom(f *testing.F) {
	f.Add("10.0.0.1:1", "192.0.2.1, 203.0.113.7", 1)
	f.Add("[::1]:80", "2001:db8::1,,", 2)
	f.Fuzz(func(t *testing.T, remote, xff string, hops int) {
		hops %= 8
		a, ok := From(remote, []string{xff}, hops)
		if ok != a.IsValid() || a.Is4In6() || a.Zone() != "" {
			t.Fatalf("From(%q, %q, %d) = %v, %v", remote, xff, hops, a, ok)
		}
	})
}
