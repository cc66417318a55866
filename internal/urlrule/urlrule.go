// Package urlrule decides where a bearer token may be sent. ParseBearerURL
// is the rule for any bearer URL: https anywhere, plain http only to a
// loopback host (the fakes, the demo), never with user information. The
// broker applies it to the URLs it hands out and the agent to the broker's
// URL and to the token answers it reads. AllowList (allowlist.go) is the
// agent's narrower gate for the DICOMweb URLs it pushes into Orthanc: only
// the hosts of its AllowedDicomWebHosts.
package urlrule

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// IsLoopbackHost reports whether host (without port) is "localhost" in any
// case or a loopback IP address.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ParseBearerURL parses raw and reports whether a bearer token may be sent
// there. Errors never echo user information (it may be a password).
func ParseBearerURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		return nil, errors.New("is not an absolute URL")
	case u.User != nil:
		return nil, errors.New("must not carry credentials (user:password@)")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !IsLoopbackHost(u.Hostname()) {
			return nil, errors.New("must use https (http is allowed only for loopback hosts)")
		}
	default:
		return nil, fmt.Errorf("has scheme %q; want https", u.Scheme)
	}
	return u, nil
}

// CheckBearerURL is ParseBearerURL without the parsed URL.
func CheckBearerURL(raw string) error {
	_, err := ParseBearerURL(raw)
	return err
}
