package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestStatusEscapesControls: "agent status" prints what answers on the
// health port; control characters in it (here from a store name and
// errors Orthanc and the broker sent) reach the terminal escaped, never raw.
func TestStatusEscapesControls(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		// encoding/json escapes these in transit; they arrive decoded.
		_, _ = w.Write([]byte(`{"healthy":false,"reason":"x\u001b]0;title\u0007","agent_id":"clinic-a",
			"broker":{"synced":true,"up":false,"last_error":"broker \u009b2J"},
			"orthanc":{"reachable":false,"last_error":"orthanc \u001b[2J\r"},
			"stores":[{"store":"a\nagent clinic-a: healthy","server":"日本","state":"error","pushed":false,"last_error":"é\u007f\u0000"}]}`))
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	c := &cli{stdout: &out, stderr: &errb, env: func(string) (string, bool) { return "", false }}
	code := c.main(context.Background(), []string{"status", "--addr", strings.TrimPrefix(srv.URL, "http://")})
	if code != exitFailure {
		t.Fatalf("exit %d, stderr %s", code, errb.String())
	}
	got := out.String()
	for _, want := range []string{`x\x1b]0;title\x07`, `broker \u009b2J`, `orthanc \x1b[2J\r`, `a\nagent clinic-a: healthy`, "日本", `é\x7f\x00`} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if i := strings.IndexFunc(got, func(r rune) bool { return r != '\n' && (r < 0x20 || r >= 0x7f && r <= 0x9f) }); i >= 0 {
		t.Errorf("raw control character at byte %d: %q", i, got)
	}
}

// TestStatusErrorEscapesControls: an address from a configuration or the
// command line is named, escaped, in the error when nothing answers there.
func TestStatusErrorEscapesControls(t *testing.T) {
	var out, errb bytes.Buffer
	c := &cli{stdout: &out, stderr: &errb, env: func(string) (string, bool) { return "", false }}
	code := c.main(context.Background(), []string{"status", "--addr", "bad\u009b2J.invalid:1"})
	if code != exitUnreachable || !strings.Contains(errb.String(), `bad\u009b2J.invalid`) {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
	if strings.ContainsRune(errb.String(), '\u009b') {
		t.Errorf("raw U+009B in %q", errb.String())
	}
}
