package brokerclient

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// TestTokensRefusesBadNames: Tokens never sends a name outside the rule.
func TestTokensRefusesBadNames(t *testing.T) {
	_, priv := newKey(t)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Write([]byte(`{"tokens":[],"errors":[]}`))
	}))
	defer srv.Close()
	c, _ := New(Options{URL: srv.URL, AgentID: "a", Key: priv})
	for _, names := range [][]string{{"ok", "../../peers/evil"}, {".."}, {"."}, {""}, {"a b"}} {
		if _, err := c.Tokens(context.Background(), names); err == nil {
			t.Errorf("Tokens(%q) accepted", names)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

// TestTokenAnswerTrustsNothing: error items for stores not asked are
// dropped, and a token value the broker echoes anywhere in the answer's
// texts never comes out.
func TestTokenAnswerTrustsNothing(t *testing.T) {
	_, priv := newKey(t)
	exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	const tok = "ya29.echoed-secret-token-value"
	tests := []struct {
		name   string
		answer map[string]any
		check  func(t *testing.T, res *Tokens)
	}{
		{"unasked error dropped", map[string]any{"tokens": []any{}, "errors": []any{
			map[string]string{"store": "../../peers/evil", "code": "upstream", "message": "x"},
			map[string]string{"store": "b", "code": "upstream", "message": "y"},
		}}, func(t *testing.T, res *Tokens) {
			if len(res.Errors) != 1 || res.Errors[0].Store != "b" {
				t.Errorf("errors %+v", res.Errors)
			}
		}},
		{"token echoed in an error message", map[string]any{
			"tokens": []any{map[string]string{"store": "a", "access_token": tok, "token_type": "Bearer", "expires_at": exp,
				"dicomweb_url": "https://healthcare.googleapis.com/v1/"}},
			"errors": []any{map[string]string{"store": "b", "code": "upstream" + tok, "message": "Google said " + tok}},
		}, func(t *testing.T, res *Tokens) {
			if len(res.Tokens) != 1 || len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Message, "Google said [redacted]") {
				t.Errorf("res %+v", res)
			}
		}},
		{"token echoed in token_type", map[string]any{
			"tokens": []any{map[string]string{"store": "a", "access_token": tok, "token_type": tok, "expires_at": exp,
				"dicomweb_url": "https://healthcare.googleapis.com/v1/"}},
		}, func(t *testing.T, res *Tokens) {
			if len(res.Tokens) != 0 || len(res.Errors) != 1 || res.Errors[0].Code != CodeBadResponse {
				t.Errorf("res %+v", res)
			}
		}},
		{"refused token's value echoed in another store's message", map[string]any{
			"tokens": []any{map[string]string{"store": "a", "access_token": tok + "\r\n", "token_type": "Bearer", "expires_at": exp,
				"dicomweb_url": "https://healthcare.googleapis.com/v1/"}},
			"errors": []any{map[string]string{"store": "b", "code": "upstream", "message": tok + "\r\n"}},
		}, func(t *testing.T, res *Tokens) {
			if len(res.Tokens) != 0 || len(res.Errors) != 2 {
				t.Errorf("res %+v", res)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := sealingServer(t, func() any { return tc.answer })
			c, _ := New(Options{URL: srv.URL, AgentID: "a", Key: priv})
			res, err := c.Tokens(context.Background(), []string{"a", "b"})
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, res)
			for _, e := range res.Errors {
				if strings.Contains(e.Code+e.Message, tok) {
					t.Errorf("token in error %+v", e)
				}
			}
		})
	}
}

// fuzzRecipient is the request key FuzzTokens seals its answers to.
var fuzzRecipient, _ = ecdh.X25519().GenerateKey(rand.Reader)

// FuzzTokens feeds raw answer bodies of POST /v1/tokens through the
// client's decoding and checks: no panic; every token it returns is for
// an asked store and passed every check; no access token value of the
// body (of at least minRedactLen bytes) is in any error it returns.
func FuzzTokens(f *testing.F) {
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
	item := func(store, tok, typ, expires, u string) map[string]string {
		return map[string]string{"store": store, "access_token": tok, "token_type": typ, "expires_at": expires, "dicomweb_url": u}
	}
	good := "https://healthcare.googleapis.com/v1/x/dicomWeb/"
	seeds := []any{
		map[string]any{"tokens": []any{item("my-google", "ya29.a-good-token-value", "Bearer", exp, good)}, "errors": []any{}},
		map[string]any{"tokens": []any{item("other", "ya29.bad\r\nX: 1", "Bearer", exp, good)},
			"errors": []any{map[string]string{"store": "my-google", "code": "upstream", "message": "ya29.bad\r\nX: 1"}}},
		map[string]any{"tokens": []any{item("../../peers/evil", "ya29.xxxxxxxxxxxxxxxx", "Bearer", exp, good)}},
		map[string]any{"tokens": []any{item("my-google", "ya29.xxxxxxxxxxxxxxxx", "ya29.xxxxxxxxxxxxxxxx", exp, good)}},
		map[string]any{"tokens": []any{item("my-google", "ya29.xxxxxxxxxxxxxxxx", "Bearer", "soon", "http://evil.example/")}},
		map[string]any{"tokens": []any{item("a", "[redacted]x", "Bearer", exp, "https://u:p@h/")}},
	}
	for _, s := range seeds {
		b, _ := json.Marshal(s)
		f.Add(b, "my-google,other,a")
	}
	f.Add([]byte(`{"tokens":[{"store":"a","access_token":"t","access_token":"u"}],"Tokens":null}`), "a")
	f.Add([]byte(`{"tokens":null,"errors":[{}]} trailing`), "a")
	f.Add([]byte(`<html>`), "a")
	f.Fuzz(func(t *testing.T, body []byte, askedCSV string) {
		asked := strings.Split(askedCSV, ",")
		for _, n := range asked {
			if !wire.ValidStoreName(n) {
				return // Tokens refuses such a list before any request
			}
		}
		// The access tokens in the body, as encoding/json reads them.
		var raw struct {
			Tokens []struct {
				AccessToken string `json:"access_token"`
			} `json:"tokens"`
		}
		_ = json.Unmarshal(body, &raw)
		var secrets []string
		plaintext := false
		for _, tk := range raw.Tokens {
			plaintext = plaintext || tk.AccessToken != ""
			// The value, and the value with control characters made spaces
			// and the ends trimmed (what a log line could show of it).
			for _, v := range []string{tk.AccessToken, strings.TrimSpace(strings.Map(func(r rune) rune {
				if r < ' ' || r == 0x7f {
					return ' '
				}
				return r
			}, tk.AccessToken))} {
				if len(v) >= minRedactLen && len(v) <= 200 {
					secrets = append(secrets, v)
				}
			}
		}
		leaks := func(where, s string) {
			for _, sec := range secrets {
				if strings.Contains(s, sec) {
					t.Fatalf("%s holds an access token: %q", where, s)
				}
			}
		}
		check := func(res *Tokens, err error) {
			if err != nil {
				if res != nil {
					t.Fatal("result with an error")
				}
				leaks("error", err.Error())
				if Reason(err) != ReasonBadResponse {
					t.Fatalf("reason %s", Reason(err))
				}
				return
			}
			want := map[string]bool{}
			for _, n := range asked {
				want[n] = true
			}
			for _, tk := range res.Tokens {
				a := string(tk.AccessToken)
				switch {
				case !want[tk.Store] || !wire.ValidStoreName(tk.Store):
					t.Fatalf("token for store %q not asked", tk.Store)
				case a == "" || strings.ContainsFunc(a, notTokenChar):
					t.Fatalf("token %q has characters not allowed in a header", a)
				case tk.TokenType != wire.TokenType || tk.ExpiresAt.IsZero():
					t.Fatalf("token type %q expiry %v", tk.TokenType, tk.ExpiresAt)
				case urlrule.CheckBearerURL(tk.DicomWebURL) != nil:
					t.Fatalf("token URL %q breaks the bearer rule", tk.DicomWebURL)
				}
			}
			for _, e := range res.Errors {
				if !want[e.Store] {
					t.Fatalf("error for store %q not asked", e.Store)
				}
				leaks("error code", e.Code)
				leaks("error message", e.Message)
			}
		}
		// As sent: an answer with a plaintext token is refused whole.
		res, err := decodeTokens(asked, body, fuzzRecipient)
		if err == nil && plaintext {
			t.Fatalf("accepted an answer with a plaintext access_token: %q", body)
		}
		check(res, err)
		// Sealed the way the broker seals: the same checks on what opens.
		var generic map[string]any
		if json.Unmarshal(body, &generic) == nil && generic != nil {
			sealed, err := json.Marshal(sealWith(t, fuzzRecipient.PublicKey(), generic))
			if err != nil {
				t.Fatal(err)
			}
			check(decodeTokens(asked, sealed, fuzzRecipient))
		}
	})
}
