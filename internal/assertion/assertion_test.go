package assertion

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// decodePart decodes one base64url JWT segment into a generic map, so the
// test sees the wire form rather than what golang-jwt makes of it.
func decodePart(t *testing.T, seg string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		t.Fatalf("segment is not canonical unpadded base64url: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSignClaimsShape(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 2, 3, 4, 5, 600_000_000, time.UTC)

	tests := []struct {
		name     string
		audience string
		lifetime time.Duration
	}{
		{"default lifetime", "https://broker.example.test", DefaultLifetime},
		{"max lifetime, aud kept as given", "https://broker.example.test/", MaxLifetime},
	}
	jtis := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := Sign(priv, "clinic-a", tc.audience, now, tc.lifetime)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(tok, ".")
			if len(parts) != 3 {
				t.Fatalf("%d segments", len(parts))
			}
			sig, err := base64.RawURLEncoding.DecodeString(parts[2])
			if err != nil || !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
				t.Fatal("signature does not verify with the agent's public key")
			}

			h := decodePart(t, parts[0])
			if h["alg"] != "EdDSA" || h["typ"] != "JWT" || len(h) != 2 {
				t.Fatalf("header %v, want exactly alg EdDSA, typ JWT", h)
			}

			c := decodePart(t, parts[1])
			want := map[string]any{
				"iss": "clinic-a",
				"sub": "clinic-a",
				"iat": float64(now.Unix()),
				"exp": float64(now.Add(tc.lifetime).Unix()),
			}
			for k, v := range want {
				if c[k] != v {
					t.Errorf("claim %s = %v (%T), want %v", k, c[k], c[k], v)
				}
			}
			aud, ok := c["aud"].([]any)
			if !ok || len(aud) != 1 || aud[0] != tc.audience {
				t.Errorf("aud = %#v, want [%q]", c["aud"], tc.audience)
			}
			jti, _ := c["jti"].(string)
			if raw, err := base64.RawURLEncoding.DecodeString(jti); err != nil || len(raw) != 16 {
				t.Errorf("jti %q is not 16 random bytes in base64url", jti)
			}
			if jtis[jti] {
				t.Errorf("jti %q repeated", jti)
			}
			jtis[jti] = true
			if _, has := c["nbf"]; has || len(c) != 6 {
				t.Errorf("claims %v: want exactly iss, sub, aud, iat, exp, jti", c)
			}
		})
	}
}

func TestSignFreshJTI(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	seen := map[string]bool{}
	for range 200 {
		tok, err := Sign(priv, "a", "https://b", now, DefaultLifetime)
		if err != nil {
			t.Fatal(err)
		}
		if seen[tok] {
			t.Fatal("two assertions with the same inputs are identical (jti not random)")
		}
		seen[tok] = true
	}
}

func TestLifetimes(t *testing.T) {
	if DefaultLifetime <= 0 || DefaultLifetime > MaxLifetime || MaxLifetime != 5*time.Minute {
		t.Fatalf("DefaultLifetime %v, MaxLifetime %v", DefaultLifetime, MaxLifetime)
	}
}

func TestNormalizeAudience(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://b.example", "https://b.example"},
		{"https://b.example/", "https://b.example"},
		{"https://b.example//", "https://b.example/"}, // one slash only
		{"https://b.example/path/", "https://b.example/path"},
		{"/", ""},
		{"", ""},
	}
	for _, tc := range tests {
		if got := NormalizeAudience(tc.in); got != tc.want {
			t.Errorf("NormalizeAudience(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
