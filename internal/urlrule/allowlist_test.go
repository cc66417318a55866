package urlrule

import (
	"errors"
	"strings"
	"testing"
)

// TestNewAllowList: how entries are normalized, and the entries refused
// with the index and a reason.
func TestNewAllowList(t *testing.T) {
	tests := []struct {
		name    string
		hosts   []string
		want    string // Hosts, comma-joined, when no error
		wantIdx int    // index of the refused entry
		wantErr string // substring of the refused entry's error
	}{
		{name: "one host", hosts: []string{"healthcare.googleapis.com"}, want: "healthcare.googleapis.com"},
		{name: "normalized", hosts: []string{"HealthCare.GoogleAPIs.com", "127.0.0.1:08080", "[::1]:9000", "[0:0::1]"},
			want: "healthcare.googleapis.com,127.0.0.1:8080,[::1]:9000,[::1]"},
		{name: "localhost with port", hosts: []string{"b.example", "localhost:1"}, want: "b.example,localhost:1"},
		{name: "empty entry", hosts: []string{"a.example", ""}, wantIdx: 1, wantErr: "is empty"},
		{name: "url", hosts: []string{"https://healthcare.googleapis.com/"}, wantErr: `write "healthcare.googleapis.com", not a URL`},
		{name: "user info", hosts: []string{"u@healthcare.googleapis.com"}, wantErr: "not a URL"},
		{name: "wildcard", hosts: []string{"*.googleapis.com"}, wantErr: "has a wildcard"},
		{name: "port zero", hosts: []string{"h.example:0"}, wantErr: "want 1-65535"},
		{name: "port too big", hosts: []string{"h.example:65536"}, wantErr: "want 1-65535"},
		{name: "port with sign", hosts: []string{"h.example:+80"}, wantErr: "want 1-65535"},
		{name: "empty port", hosts: []string{"h.example:"}, wantErr: "want 1-65535"},
		{name: "ipv6 without brackets", hosts: []string{"::1"}, wantErr: "brackets"},
		{name: "brackets around ipv4", hosts: []string{"[127.0.0.1]:80"}, wantErr: "not an IPv6 address"},
		{name: "unclosed bracket", hosts: []string{"[::1"}, wantErr: "unclosed"},
		{name: "text after bracket", hosts: []string{"[::1]x"}, wantErr: "not :port"},
		{name: "trailing dot", hosts: []string{"healthcare.googleapis.com."}, wantErr: "not a valid host name"},
		{name: "bad label", hosts: []string{"-x.example"}, wantErr: "not a valid host name"},
		{name: "space", hosts: []string{"a .example"}, wantErr: "not a URL"},
		{name: "duplicate after normalizing", hosts: []string{"A.example", "a.example"}, wantIdx: 1, wantErr: "is listed twice"},
		{name: "duplicate port after normalizing", hosts: []string{"127.0.0.1:80", "127.0.0.1:080"}, wantIdx: 1, wantErr: "is listed twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAllowList(tc.hosts)
			if tc.wantErr != "" {
				var ee *EntryError
				if !errors.As(err, &ee) || ee.Index != tc.wantIdx || ee.Entry != tc.hosts[tc.wantIdx] || !strings.Contains(ee.Err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want an EntryError at %d containing %q", err, tc.wantIdx, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(a.Hosts(), ","); got != tc.want {
				t.Errorf("Hosts = %q, want %q", got, tc.want)
			}
		})
	}
	for _, hosts := range [][]string{nil, {}} {
		if _, err := NewAllowList(hosts); !errors.Is(err, ErrEmptyAllowList) {
			t.Errorf("NewAllowList(%#v) = %v, want ErrEmptyAllowList", hosts, err)
		}
	}
}

// TestAllowListHostsIsACopy: a caller cannot widen the list through Hosts.
func TestAllowListHostsIsACopy(t *testing.T) {
	a, err := NewAllowList([]string{"healthcare.googleapis.com"})
	if err != nil {
		t.Fatal(err)
	}
	a.Hosts()[0] = "evil.example"
	if a.Check("https://evil.example/") == nil || a.Check("https://healthcare.googleapis.com/") != nil {
		t.Error("changing Hosts' answer changed the list")
	}
}

// TestAllowListCheck: https to a listed host (no port: 443 only), or http
// to a loopback host listed with that port; case-insensitive; never a URL
// with user information. A refusal names the host and port only.
func TestAllowListCheck(t *testing.T) {
	a, err := NewAllowList([]string{"healthcare.googleapis.com", "healthcare-psc.p.googleapis.com:8443", "127.0.0.1:9000", "localhost",
		"[::1]:9001", "10.0.0.5:80"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url         string
		ok          bool
		hostPort    string // of the refusal
		credentials bool
	}{
		{"https://healthcare.googleapis.com/v1/projects/p/dicomWeb/", true, "", false},
		{"https://HEALTHCARE.googleapis.COM/v1/", true, "", false},
		{"https://healthcare.googleapis.com:443/v1/", true, "", false},
		{"https://healthcare.googleapis.com:0443/v1/", true, "", false},
		{"https://healthcare.googleapis.com:8443/v1/", false, "healthcare.googleapis.com:8443", false},
		{"https://healthcare-psc.p.googleapis.com:8443/v1/", true, "", false},
		{"https://healthcare-psc.p.googleapis.com/v1/", false, "healthcare-psc.p.googleapis.com:443", false},
		{"https://evil.example/v1/", false, "evil.example:443", false},
		{"https://healthcare.googleapis.com.evil.example/", false, "healthcare.googleapis.com.evil.example:443", false},
		{"https://evil.example/healthcare.googleapis.com/", false, "evil.example:443", false},
		{"https://evil.example/?h=healthcare.googleapis.com", false, "evil.example:443", false},
		{"http://healthcare.googleapis.com/v1/", false, "healthcare.googleapis.com:80", false},
		{"http://127.0.0.1:9000/v1/", true, "", false},
		{"http://127.0.0.1:9002/v1/", false, "127.0.0.1:9002", false},
		{"https://127.0.0.1:9000/v1/", true, "", false},
		{"http://localhost/v1/", false, "localhost:80", false},    // http: loopback must be listed with its port
		{"http://localhost:80/v1/", false, "localhost:80", false}, // "localhost" without a port is https:443 only
		{"https://localhost/v1/", true, "", false},
		{"http://[::1]:9001/v1/", true, "", false},
		{"http://[0:0:0:0:0:0:0:1]:9001/v1/", true, "", false},
		{"http://10.0.0.5/v1/", false, "10.0.0.5:80", false}, // listed with its port, but not loopback
		{"ftp://healthcare.googleapis.com/", false, "healthcare.googleapis.com", false},
		{"https://healthcare.googleapis.com:0/", false, "healthcare.googleapis.com:0", false},
		{"/relative", false, "(unparseable URL)", false},
		{"", false, "(unparseable URL)", false},
		{"https://%zz/", false, "(unparseable URL)", false},
		// User information is never pushed, even to a listed host; the
		// refusal does not echo it.
		{"https://user:hunter2@healthcare.googleapis.com/v1/", false, "healthcare.googleapis.com:443", true},
		{"https://hunter2@healthcare.googleapis.com/v1/", false, "healthcare.googleapis.com:443", true},
		{"https://user:hunter2@evil.example/v1/", false, "evil.example:443", false},
	}
	for _, tc := range tests {
		err := a.Check(tc.url)
		if tc.ok {
			if err != nil {
				t.Errorf("Check(%q) = %v, want nil", tc.url, err)
			}
			continue
		}
		var re *RefusedError
		if !errors.As(err, &re) || re.HostPort != tc.hostPort || re.Credentials != tc.credentials {
			t.Errorf("Check(%q) = %#v, want a refusal of %q (credentials %v)", tc.url, err, tc.hostPort, tc.credentials)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, `"`+tc.hostPort+`"`) || strings.Contains(msg, "hunter2") || strings.Contains(msg, "/v1/") {
			t.Errorf("Check(%q) error %q: want the host and port only", tc.url, msg)
		}
	}
	// The message the loop shows for a host not listed.
	if err := a.Check("https://evil.example/"); err == nil || err.Error() != `dicomweb_url host "evil.example:443" is not in AllowedDicomWebHosts` {
		t.Errorf("refusal text %q", err)
	}
}

// TestZeroAllowListAllowsNothing: the zero value and a nil list refuse
// every URL, so a client built for reading can push nowhere.
func TestZeroAllowListAllowsNothing(t *testing.T) {
	var nilList *AllowList
	for _, a := range []*AllowList{{}, nilList} {
		for _, u := range []string{"https://healthcare.googleapis.com/v1/", "http://127.0.0.1:1/"} {
			if a.Check(u) == nil {
				t.Errorf("%#v allows %q", a, u)
			}
		}
		if len(a.Hosts()) != 0 {
			t.Errorf("Hosts of an empty list: %q", a.Hosts())
		}
	}
}
