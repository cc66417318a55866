package assertion

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
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
			tok, err := Sign(priv, "clinic-a", tc.audience, now, tc.lifetime, nil)
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
		tok, err := Sign(priv, "a", "https://b", now, DefaultLifetime, nil)
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

// ES256 from any P-256 crypto.Signer (a TPM key is one): the JWS signature
// is r || s, 64 bytes, and golang-jwt's ES256 verifies it.
func TestSignES256WithASigner(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for range 20 { // r and s of varying lengths
		tok, err := Sign(signerOnly{k}, "clinic-tpm", "https://b", now, DefaultLifetime, nil)
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(tok, ".")
		if h := decodePart(t, parts[0]); h["alg"] != "ES256" || h["typ"] != "JWT" {
			t.Fatalf("header %v", h)
		}
		sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
		if len(sig) != 64 {
			t.Fatalf("signature of %d bytes, want r||s of 64", len(sig))
		}
		if err := jwt.SigningMethodES256.Verify(parts[0]+"."+parts[1], sig, &k.PublicKey); err != nil {
			t.Fatalf("golang-jwt refuses it: %v", err)
		}
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := Sign(p384, "a", "https://b", now, DefaultLifetime, nil); err == nil {
		t.Fatal("signed with a P-384 key")
	}
	if _, err := Sign(badSigner{k}, "a", "https://b", now, DefaultLifetime, nil); err == nil {
		t.Fatal("accepted a malformed signature from the signer")
	}
}

// signerOnly hides the *ecdsa.PrivateKey behind crypto.Signer, as a TPM
// key is.
type signerOnly struct{ k *ecdsa.PrivateKey }

func (s signerOnly) Public() crypto.PublicKey { return &s.k.PublicKey }
func (s signerOnly) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return s.k.Sign(r, d, o)
}

type badSigner struct{ k *ecdsa.PrivateKey }

func (s badSigner) Public() crypto.PublicKey { return &s.k.PublicKey }
func (badSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return []byte{0x30, 0}, nil
}

// The cnf claim carries the recipient key as an OKP JWK, and X25519 reads
// back exactly that and nothing else.
func TestConfirmationClaim(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	x, _ := ecdh.X25519().GenerateKey(rand.Reader)
	tok, err := Sign(priv, "clinic-a", "https://b", time.Now(), DefaultLifetime, x.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	c := decodePart(t, strings.Split(tok, ".")[1])
	jwk, _ := c["cnf"].(map[string]any)["jwk"].(map[string]any)
	if jwk["kty"] != "OKP" || jwk["crv"] != "X25519" || len(jwk) != 3 {
		t.Fatalf("cnf %v", c["cnf"])
	}
	got, err := (&JWK{Kty: "OKP", Crv: "X25519", X: jwk["x"].(string)}).X25519()
	if err != nil || !got.Equal(x.PublicKey()) {
		t.Fatalf("round trip: %v", err)
	}
	raw := base64.RawURLEncoding.EncodeToString(x.PublicKey().Bytes())
	for name, j := range map[string]*JWK{
		"nil":            nil,
		"kty EC":         {Kty: "EC", Crv: "X25519", X: raw},
		"crv Ed25519":    {Kty: "OKP", Crv: "Ed25519", X: raw},
		"padded x":       {Kty: "OKP", Crv: "X25519", X: raw + "="},
		"std alphabet x": {Kty: "OKP", Crv: "X25519", X: base64.StdEncoding.EncodeToString(x.PublicKey().Bytes())},
		"31 bytes":       {Kty: "OKP", Crv: "X25519", X: base64.RawURLEncoding.EncodeToString(x.PublicKey().Bytes()[:31])},
		"33 bytes":       {Kty: "OKP", Crv: "X25519", X: raw + "AA"},
		"empty":          {},
		"lower-case kty": {Kty: "okp", Crv: "X25519", X: raw},
		"x with newline": {Kty: "OKP", Crv: "X25519", X: raw[:10] + "\n" + raw[10:]},
	} {
		if _, err := j.X25519(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if tok, _ := Sign(priv, "a", "https://b", time.Now(), DefaultLifetime, nil); strings.Contains(tok, "cnf") ||
		decodePart(t, strings.Split(tok, ".")[1])["cnf"] != nil {
		t.Fatal("cnf present without a recipient")
	}
}
