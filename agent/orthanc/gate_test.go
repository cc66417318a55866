package orthanc

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
)

// mustNew builds a Client that may push to hosts (none: it only reads).
func mustNew(t testing.TB, o Options, hosts ...string) *Client {
	t.Helper()
	list := &urlrule.AllowList{}
	if len(hosts) > 0 {
		var err error
		if list, err = urlrule.NewAllowList(hosts); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New(o, list)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNewNeedsAllowList: a client that could push anywhere is never built.
func TestNewNeedsAllowList(t *testing.T) {
	if c, err := New(Options{URL: "http://127.0.0.1:8042"}, nil); !errors.Is(err, ErrNoAllowList) || c != nil {
		t.Fatalf("New without an allow-list = %v, %v; want ErrNoAllowList", c, err)
	}
}

// TestPutServerRefusedURLNeverSent: PutServer is the last gate before a
// token reaches Orthanc. A definition whose URL the allow-list refuses
// makes no request at all, whoever calls it, and the error names the host
// and port but never the token (or the Authorization header it would be
// in) nor the URL's user information.
func TestPutServerRefusedURLNeverSent(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.Write([]byte("{}"))
	}))
	defer srv.Close()
	const token = "ya29.refused-url-test-token-0123456789"
	def := func(u string) Definition {
		return Definition{URL: u, Token: token, Marker: "clinic-a", Expiry: time.Now().Add(time.Hour)}
	}
	ctx := context.Background()
	c := mustNew(t, Options{URL: srv.URL}, "healthcare.googleapis.com", "127.0.0.1:9000")

	tests := []struct {
		name, url, hostPort string
	}{
		{"host not listed", "https://evil.example/v1/dicomWeb/", "evil.example:443"},
		{"look-alike host", "https://healthcare.googleapis.com.evil.example/v1/", "healthcare.googleapis.com.evil.example:443"},
		{"listed host on another port", "https://healthcare.googleapis.com:8443/v1/", "healthcare.googleapis.com:8443"},
		{"plain http to a listed host", "http://healthcare.googleapis.com/v1/", "healthcare.googleapis.com:80"},
		{"loopback on a port not listed", "http://127.0.0.1:9001/v1/", "127.0.0.1:9001"},
		{"credentials", "https://user:hunter2@healthcare.googleapis.com/v1/", "healthcare.googleapis.com:443"},
		{"other scheme", "ftp://healthcare.googleapis.com/", "healthcare.googleapis.com"},
		{"no url", "", "(unparseable URL)"},
		{"relative url", "/dicom-web/", "(unparseable URL)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := requests.Load()
			err := c.PutServer(ctx, "my-google", def(tc.url))
			if n := requests.Load() - before; n != 0 {
				t.Errorf("%d requests reached Orthanc", n)
			}
			var re *urlrule.RefusedError
			if !errors.As(err, &re) || re.HostPort != tc.hostPort {
				t.Fatalf("PutServer = %v; want a refusal of %q", err, tc.hostPort)
			}
			msg := err.Error()
			for _, secret := range []string{token, "Bearer", "hunter2"} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q contains %q", msg, secret)
				}
			}
			if !strings.Contains(msg, "PUT /dicom-web/servers/my-google") || !strings.Contains(msg, "not sent") ||
				!strings.Contains(msg, `"`+tc.hostPort+`"`) {
				t.Errorf("error %q should name the request, say it was not sent and name the host", msg)
			}
			if Unreachable(err) {
				t.Error("a refusal reads as Orthanc being unreachable")
			}
		})
	}

	// An allowed URL is sent, once.
	before := requests.Load()
	for _, u := range []string{"https://HealthCare.googleapis.com/v1/dicomWeb/", "http://127.0.0.1:9000/dicomWeb/"} {
		if err := c.PutServer(ctx, "my-google", def(u)); err != nil {
			t.Errorf("PutServer(%q): %v", u, err)
		}
	}
	if n := requests.Load() - before; n != 2 {
		t.Errorf("%d requests for 2 allowed definitions", n)
	}

	// A client built to read (an empty allow-list) pushes nothing.
	before = requests.Load()
	if err := mustNew(t, Options{URL: srv.URL}).PutServer(ctx, "my-google", def("https://healthcare.googleapis.com/v1/")); err == nil {
		t.Error("a read-only client pushed a token")
	}
	if n := requests.Load() - before; n != 0 {
		t.Errorf("a read-only client sent %d requests", n)
	}
}
