package brokerclient

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
)

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func TestStoresAndTokensAgainstContractBroker(t *testing.T) {
	pub, priv := newKey(t)
	b := agenttest.NewBroker(t, "clinic-a", pub)
	b.Set(func(b *agenttest.Broker) {
		b.Grants = map[string]string{"my-google": "https://healthcare.googleapis.com/v1/p/dicomWeb/", "other": "http://127.0.0.1:1/dicomWeb/"}
		b.StoreErrors["other"] = agenttest.StoreError{Code: wire.CodeUpstream, Message: "Google said no"}
	})
	c, err := New(Options{URL: b.URL, AgentID: "clinic-a", Key: priv, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stores, err := c.Stores(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(stores) != 2 || stores[0].Name != "my-google" || stores[0].DicomWebURL != "https://healthcare.googleapis.com/v1/p/dicomWeb/" {
		t.Fatalf("stores = %+v", stores)
	}
	// Two calls in a row: the fake broker refuses a replayed jti, so this
	// also proves each request carries a fresh assertion.
	res, err := c.Tokens(ctx, []string{"my-google", "other", "nope"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tokens) != 1 || res.Tokens[0].Store != "my-google" || res.Tokens[0].TokenType != wire.TokenType {
		t.Fatalf("tokens = %+v", res.Tokens)
	}
	_, _, issued := b.Snapshot()
	if string(res.Tokens[0].AccessToken) != issued[0] {
		t.Error("access token not the issued one")
	}
	if d := time.Until(res.Tokens[0].ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Errorf("expiry in %v", d)
	}
	codes := map[string]string{}
	for _, e := range res.Errors {
		codes[e.Store] = e.Code
	}
	if codes["other"] != wire.CodeUpstream || codes["nope"] != wire.CodeForbidden {
		t.Errorf("errors = %+v", res.Errors)
	}
	if b.Asked[0][0] != "my-google" || len(b.Asked[0]) != 3 {
		t.Errorf("asked %v", b.Asked)
	}
	// The token must not leak through fmt or JSON.
	for _, s := range []string{fmt.Sprint(res.Tokens[0]), fmt.Sprintf("%+v %#v", res.Tokens[0], res.Tokens[0]), mustJSON(res)} {
		if strings.Contains(s, issued[0]) {
			t.Fatalf("token printed: %s", s)
		}
	}
	if _, err := c.Tokens(ctx, nil); err == nil {
		t.Error("empty store list must be refused (it means all stores)")
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestAssertionClaims(t *testing.T) {
	pub, priv := newKey(t)
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var got jwt.RegisteredClaims
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		_, err := jwt.ParseWithClaims(raw, &got, func(*jwt.Token) (any, error) { return pub, nil },
			jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithTimeFunc(func() time.Time { return now }))
		if err != nil {
			w.WriteHeader(401)
			return
		}
		w.Write([]byte(`{"stores":[]}`))
	}))
	defer srv.Close()
	// Broker.Url with a trailing slash: aud is sent exactly as configured,
	// and the path is not doubled.
	c, _ := New(Options{URL: srv.URL + "/", AgentID: "clinic-a", Key: priv, Now: func() time.Time { return now }})
	if _, err := c.Stores(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got.Issuer != "clinic-a" || got.Subject != "clinic-a" || len(got.Audience) != 1 || got.Audience[0] != srv.URL+"/" {
		t.Errorf("claims %+v", got)
	}
	if !got.IssuedAt.Equal(now) || got.ExpiresAt.Sub(got.IssuedAt.Time) > 5*time.Minute || got.ID == "" {
		t.Errorf("times/jti %+v", got)
	}
}

func TestErrorClassification(t *testing.T) {
	_, priv := newKey(t)
	const secretish = "ya29.must-not-echo"
	tests := []struct {
		name      string
		status    int
		body      string
		reason    string
		retryable bool
	}{
		{"500", 500, `{"error":{"code":"upstream","message":"boom"}}`, ReasonServerError, true},
		{"502", 502, `<html>bad gateway</html>`, ReasonServerError, true},
		{"503", 503, `{"error":{"code":"unavailable","message":"later"}}`, ReasonServerError, true},
		{"429", 429, `{"error":{"code":"rate_limited","message":"slow down"}}`, ReasonRateLimited, true},
		{"401", 401, `{"error":{"code":"unauthenticated","message":"authentication failed"}}`, ReasonUnauthenticated, false},
		{"403", 403, `{"error":{"code":"forbidden","message":"no"}}`, ReasonForbidden, false},
		{"400", 400, `{"error":{"code":"bad_request","message":"no"}}`, ReasonRejected, false},
		{"redirect", 302, ``, ReasonRejected, false},
		{"not json", 200, `<html>` + secretish + `</html>`, ReasonBadResponse, true},
		{"too large", 200, `{"stores":[],"pad":"` + strings.Repeat("x", MaxResponseBytes) + `"}`, ReasonBadResponse, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.status == 302 {
					w.Header().Set("Location", "https://elsewhere.example/")
				}
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			c, _ := New(Options{URL: srv.URL, AgentID: "a", Key: priv})
			_, err := c.Stores(context.Background())
			if err == nil {
				t.Fatal("no error")
			}
			if Reason(err) != tc.reason || IsRetryable(err) != tc.retryable {
				t.Errorf("reason %s retryable %v, want %s %v (%v)", Reason(err), IsRetryable(err), tc.reason, tc.retryable, err)
			}
			if !slices.Contains(Reasons(), Reason(err)) {
				t.Errorf("reason %s is not in Reasons()", Reason(err))
			}
			if strings.Contains(err.Error(), secretish) || strings.Contains(err.Error(), "Bearer") {
				t.Errorf("error echoes the body: %v", err)
			}
		})
	}
	t.Run("transport", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		c, _ := New(Options{URL: url, AgentID: "a", Key: priv})
		_, err := c.Stores(context.Background())
		if Reason(err) != ReasonTransport || !IsRetryable(err) || !slices.Contains(Reasons(), Reason(err)) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		block := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
		defer srv.Close()
		defer close(block)
		c, _ := New(Options{URL: srv.URL, AgentID: "a", Key: priv, Timeout: 50 * time.Millisecond})
		_, err := c.Stores(context.Background())
		if Reason(err) != ReasonTransport || !IsRetryable(err) || !strings.Contains(err.Error(), "timeout") {
			t.Errorf("got %v", err)
		}
	})
}

func TestTokenItemValidation(t *testing.T) {
	_, priv := newKey(t)
	exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	item := func(store, tok, typ, expires, u string) map[string]string {
		return map[string]string{"store": store, "access_token": tok, "token_type": typ, "expires_at": expires, "dicomweb_url": u}
	}
	good := "https://healthcare.googleapis.com/v1/x/dicomWeb/"
	items := []map[string]string{
		item("ok", "ya29.good", "Bearer", exp, good),
		item("crlf", "ya29.bad\r\nX-Evil: 1", "Bearer", exp, good),
		item("empty", "", "Bearer", exp, good),
		item("mac", "ya29.x", "MAC", exp, good),
		item("when", "ya29.x", "Bearer", "tomorrow", good),
		item("cleartext", "ya29.x", "bearer", exp, "http://healthcare.googleapis.com/v1/"),
		item("unasked", "ya29.x", "Bearer", exp, good),
	}
	srv := sealingServer(t, func() any { return map[string]any{"tokens": items, "errors": []any{}} })
	c, _ := New(Options{URL: srv.URL, AgentID: "a", Key: priv})
	res, err := c.Tokens(context.Background(), []string{"ok", "crlf", "empty", "mac", "when", "cleartext"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tokens) != 1 || res.Tokens[0].Store != "ok" {
		t.Fatalf("accepted %+v", res.Tokens)
	}
	bad := map[string]bool{}
	for _, e := range res.Errors {
		if e.Code != CodeBadResponse {
			t.Errorf("code %s", e.Code)
		}
		if strings.Contains(e.Message, "ya29") {
			t.Errorf("message echoes token: %s", e.Message)
		}
		bad[e.Store] = true
	}
	for _, s := range []string{"crlf", "empty", "mac", "when", "cleartext"} {
		if !bad[s] {
			t.Errorf("%s not refused", s)
		}
	}
	if bad["unasked"] {
		t.Error("unasked store should be ignored, not reported")
	}
}

func TestTLS(t *testing.T) {
	_, priv := newKey(t)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"stores":[{"name":"s","dicomweb_url":"https://x/"}]}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("nothing"), 0o644)

	// System roots do not trust the test server.
	c, _ := New(Options{URL: srv.URL, AgentID: "a", Key: priv})
	if _, err := c.Stores(context.Background()); err == nil || Reason(err) != ReasonTransport {
		t.Errorf("untrusted certificate accepted: %v", err)
	}
	c, err := New(Options{URL: srv.URL, AgentID: "a", Key: priv, CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := c.Stores(context.Background()); err != nil || len(s) != 1 {
		t.Errorf("with CA file: %v %v", s, err)
	}
	if _, err := New(Options{URL: srv.URL, AgentID: "a", Key: priv, CAFile: bad}); err == nil {
		t.Error("CA file without certificates accepted")
	}
}

// TestReasonsCoverEveryError: Reason returns only words of Reasons, also
// for errors that are not an *Error, and the words are distinct.
func TestReasonsCoverEveryError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"plain error", fmt.Errorf("dial: refused"), ReasonTransport},
		{"canceled", context.Canceled, ReasonTransport},
		{"wrapped *Error", fmt.Errorf("sync: %w", &Error{Reason: ReasonForbidden}), ReasonForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Reason(tc.err); got != tc.want || !slices.Contains(Reasons(), got) {
				t.Errorf("Reason = %q, want %q in Reasons()", got, tc.want)
			}
		})
	}
	seen := map[string]bool{}
	for _, r := range Reasons() {
		if seen[r] {
			t.Errorf("%q listed twice", r)
		}
		seen[r] = true
	}
}
