package urlrule

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
)

// AllowList is the agent's one gate for where a token may go: the DICOMweb
// URLs, built from the configuration's AllowedDicomWebHosts, that Orthanc
// may be told to send a store's token to (docs/design.md, "Agent
// behaviour": the agent trusts nothing the broker sends). Bearer-URL rules
// alone (ParseBearerURL) would let a tampered broker point a token at any
// https host; the list pins the hosts.
//
// The Orthanc client enforces it on every PutServer, so a refused URL never
// reaches Orthanc whoever calls it; the reconcile loop asks the same list
// first, so it neither asks the broker for a token it could not push nor
// reports a refusal as an Orthanc failure.
//
// An AllowList is immutable and safe for concurrent use. The zero value
// (and a nil *AllowList) allows nothing: right for a client that only
// reads.
type AllowList struct {
	entries []hostEntry
}

// hostEntry is one normalized entry; port "" means https on 443 only.
type hostEntry struct{ host, port string }

// ErrEmptyAllowList is NewAllowList's error for an empty list: no token
// could ever be pushed.
var ErrEmptyAllowList = errors.New("urlrule: the list of allowed DICOMweb hosts is empty")

// EntryError is an entry NewAllowList refused. Entry is the operator's
// text as written, for a message that bounds it.
type EntryError struct {
	Index int
	Entry string
	Err   error
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("entry %d: %q %v", e.Index, clipText(e.Entry, 80), e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// exampleHost is the entry quoted to an operator who wrote a URL.
const exampleHost = "healthcare.googleapis.com"

// NewAllowList checks and normalizes hosts: each entry is "host" or
// "host:port" ("[v6]" or "[v6]:port" for IPv6), a host name or IP address
// without wildcard, scheme, path or user information; names compare lower
// case and ports without leading zeros. An entry without a port allows
// https on 443 only; http is allowed only to a loopback host listed with
// that very port (see Check). It refuses an empty list
// (ErrEmptyAllowList), a bad entry and an entry listed twice (*EntryError).
func NewAllowList(hosts []string) (*AllowList, error) {
	if len(hosts) == 0 {
		return nil, ErrEmptyAllowList
	}
	a := &AllowList{entries: make([]hostEntry, 0, len(hosts))}
	seen := map[hostEntry]bool{}
	for i, h := range hosts {
		host, port, err := parseHostEntry(h)
		if err != nil {
			return nil, &EntryError{Index: i, Entry: h, Err: err}
		}
		e := hostEntry{host, port}
		if seen[e] {
			return nil, &EntryError{Index: i, Entry: h, Err: errors.New("is listed twice")}
		}
		seen[e] = true
		a.entries = append(a.entries, e)
	}
	return a, nil
}

// Hosts returns the normalized entries, in the order given (for logs and
// for the resolved configuration).
func (a *AllowList) Hosts() []string {
	if a == nil {
		return []string{}
	}
	out := make([]string, 0, len(a.entries))
	for _, e := range a.entries {
		out = append(out, joinHostPort(e.host, e.port))
	}
	return out
}

// RefusedError is Check's answer for a URL a token may not go to. It
// names only the URL's host and effective port: never its user
// information, path or query, which may hold secrets.
type RefusedError struct {
	// HostPort is the URL's lower-case host and effective port (e.g.
	// "evil.example:443"), or "(unparseable URL)".
	HostPort string
	// Credentials is set when the host is allowed but the URL carries
	// user information (user:password@).
	Credentials bool
}

func (e *RefusedError) Error() string {
	if e.Credentials {
		return fmt.Sprintf("dicomweb_url to host %q carries credentials (user:password@)", clipText(e.HostPort, 200))
	}
	return fmt.Sprintf("dicomweb_url host %q is not in AllowedDicomWebHosts", clipText(e.HostPort, 200))
}

// Check reports whether a token may be sent to the DICOMweb URL raw: nil
// if raw is https:// to a listed host (an entry without a port allows only
// 443), or http:// to a loopback host listed with that very port (http's
// default 80 included), and carries no user information; otherwise a
// *RefusedError. Host names compare case-insensitively.
func (a *AllowList) Check(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return &RefusedError{HostPort: "(unparseable URL)"}
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if ip := net.ParseIP(host); ip != nil && strings.Contains(host, ":") {
		host = ip.String()
	}
	var def string
	switch u.Scheme {
	case "https":
		def = "443"
	case "http":
		def = "80"
	default:
		return &RefusedError{HostPort: joinHostPort(host, port)}
	}
	if port == "" {
		port = def
	} else if p, err := checkPort(port); err == nil {
		port = p
	} else {
		return &RefusedError{HostPort: joinHostPort(host, port)}
	}
	hostPort := joinHostPort(host, port)
	if (u.Scheme == "http" && !IsLoopbackHost(host)) || !a.lists(host, port, u.Scheme) {
		return &RefusedError{HostPort: hostPort}
	}
	if u.User != nil {
		return &RefusedError{HostPort: hostPort, Credentials: true}
	}
	return nil
}

// lists reports whether an entry allows host on port under scheme.
func (a *AllowList) lists(host, port, scheme string) bool {
	if a == nil {
		return false
	}
	for _, e := range a.entries {
		if e.host == host && (e.port == port || (e.port == "" && scheme == "https" && port == "443")) {
			return true
		}
	}
	return false
}

// parseHostEntry splits an entry, "host" or "host:port" ("[v6]" or
// "[v6]:port" for IPv6), into a lower-case host and a port ("" when none
// is given).
func parseHostEntry(e string) (host, port string, err error) {
	switch {
	case e == "":
		return "", "", fmt.Errorf("is empty")
	case strings.Contains(e, "*"):
		return "", "", fmt.Errorf("has a wildcard; list each host (regional and Private Service Connect endpoints by their own name)")
	case strings.ContainsAny(e, "/?#@") || strings.ContainsFunc(e, func(r rune) bool { return r <= ' ' || r >= 0x7f }):
		return "", "", fmt.Errorf("is not a host name or host:port (write %q, not a URL)", exampleHost)
	}
	if strings.HasPrefix(e, "[") {
		end := strings.IndexByte(e, ']')
		if end < 0 {
			return "", "", fmt.Errorf("has an unclosed '['")
		}
		host, rest := e[1:end], e[end+1:]
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil || strings.Contains(host, "%") {
			return "", "", fmt.Errorf("has brackets around something that is not an IPv6 address")
		}
		if rest != "" {
			p, ok := strings.CutPrefix(rest, ":")
			if !ok {
				return "", "", fmt.Errorf("has text after ']' that is not :port")
			}
			if port, err = checkPort(p); err != nil {
				return "", "", err
			}
		}
		return strings.ToLower(net.ParseIP(host).String()), port, nil
	}
	if strings.Count(e, ":") > 1 {
		return "", "", fmt.Errorf("looks like an IPv6 address: put it in brackets, e.g. [::1]:8080")
	}
	host, p, hasPort := strings.Cut(e, ":")
	if hasPort {
		if port, err = checkPort(p); err != nil {
			return "", "", err
		}
	}
	host = strings.ToLower(host)
	if net.ParseIP(host) == nil && !isDNSName(host) {
		return "", "", fmt.Errorf("is not a valid host name")
	}
	return host, port, nil
}

func checkPort(p string) (string, error) {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 || strings.HasPrefix(p, "+") {
		return "", fmt.Errorf("has port %q; want 1-65535", clipText(p, 80))
	}
	return strconv.Itoa(n), nil
}

// isDNSName: dot-separated labels of letters, digits and inner hyphens,
// at most 63 bytes each and 253 in all; no trailing dot.
func isDNSName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

func joinHostPort(host, port string) string {
	if port != "" {
		return net.JoinHostPort(host, port)
	}
	if strings.Contains(host, ":") {
		return "[" + host + "]"
	}
	return host
}

// clipText bounds text from outside quoted in a message.
func clipText(s string, n int) string { return logtext.Truncate(logtext.Clip(s), n) }
