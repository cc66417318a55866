// Package clientaddr finds the address a request to the broker came from:
// the TCP peer, or, behind a known number of proxies that append to
// X-Forwarded-For (Cloud Run's front end, a load balancer), the entry the
// outermost of them wrote. The broker logs it and matches it against an
// agent's AllowedSourceRanges (broker/policy), so it must be an address
// the client cannot choose.
//
// X-Forwarded-For is a list that each proxy extends on the right: a client
// can send the header with any entries it likes, and the proxies keep them
// and append what they saw. Only the entries the trusted proxies appended
// mean anything, and they are the rightmost ones. With hops = N, the client
// is the Nth entry from the right; everything to its left is what the
// client sent and never counts. Counting from the left (the "first entry
// is the client" convention) would let any client pick its own address.
package clientaddr

import (
	"net/http"
	"net/netip"
	"strings"
)

// Header is the header the proxies append to.
const Header = "X-Forwarded-For"

// FromRequest is From for r: its RemoteAddr and every X-Forwarded-For line.
func FromRequest(r *http.Request, hops int) (netip.Addr, bool) {
	return From(r.RemoteAddr, r.Header.Values(Header), hops)
}

// From returns the client address of a request whose TCP peer is
// remoteAddr (http.Request.RemoteAddr, "host:port") and whose
// X-Forwarded-For header lines are xff, received behind hops trusted
// proxies:
//
//   - hops 0: the TCP peer; X-Forwarded-For is ignored, since with no
//     proxy in front every entry in it is the client's own word.
//   - hops N > 0: the Nth entry from the right of the chain (several header
//     lines are one chain, joined with commas in order, as RFC 9110 reads
//     them). Each of the N rightmost entries must be an IP address, spaces
//     and tabs around it aside (no port, brackets or zone); the entries to
//     their left are never looked at, since the client wrote them and Google
//     documents that they may hold anything.
//
// false means there is no such address: a chain shorter than N, an entry
// that is not an address, or a peer that is not ip:port. The address is
// returned without a zone and IPv4-mapped IPv6 unmapped (::ffff:192.0.2.1
// is 192.0.2.1), so it logs and matches in one spelling.
func From(remoteAddr string, xff []string, hops int) (netip.Addr, bool) {
	if hops <= 0 {
		return peer(remoteAddr)
	}
	chain := strings.Join(xff, ",")
	var client netip.Addr
	for i := 0; i < hops; i++ {
		j := strings.LastIndexByte(chain, ',')
		entry := strings.Trim(chain[j+1:], " \t")
		a, err := netip.ParseAddr(entry)
		if err != nil || a.Zone() != "" {
			return netip.Addr{}, false // also the empty entry of a missing header
		}
		client = a
		if j < 0 {
			if i < hops-1 {
				return netip.Addr{}, false // shorter than hops
			}
			break
		}
		chain = chain[:j]
	}
	return client.Unmap(), true
}

// peer parses the TCP peer. The server always writes ip:port; a bare
// address is taken as well.
func peer(remoteAddr string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		return ap.Addr().WithZone("").Unmap(), true
	}
	if a, err := netip.ParseAddr(remoteAddr); err == nil {
		return a.WithZone("").Unmap(), true
	}
	return netip.Addr{}, false
}
