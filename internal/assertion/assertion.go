// Package assertion makes the short-lived JWT an agent presents to the
// broker on every request (see docs/design.md, "Agent authentication"). The
// broker side that verifies it lives in broker/agentauth.
package assertion

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"math/big"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxLifetime is the longest exp-iat the broker accepts.
const MaxLifetime = 5 * time.Minute

// DefaultLifetime is what agents ask for: short, well under MaxLifetime.
const DefaultLifetime = 2 * time.Minute

// Claims is the assertion's claim set.
type Claims struct {
	jwt.RegisteredClaims
	// Cnf is the confirmation claim (RFC 7800) of a token request: the
	// agent's one-request X25519 key, which the broker seals every token
	// of its answer to.
	Cnf *Confirmation `json:"cnf,omitempty"`
}

// Confirmation is the cnf claim: a public key as a JWK.
type Confirmation struct {
	JWK *JWK `json:"jwk"`
}

// JWK is an X25519 public key as an OKP JSON Web Key (RFC 8037).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
}

// X25519JWK returns pub as a JWK: kty OKP, crv X25519, x the 32 bytes in
// base64url without padding.
func X25519JWK(pub *ecdh.PublicKey) *JWK {
	return &JWK{Kty: "OKP", Crv: "X25519", X: base64.RawURLEncoding.EncodeToString(pub.Bytes())}
}

// ErrBadJWK is returned for a JWK that is not exactly an X25519 key.
var ErrBadJWK = errors.New("assertion: cnf.jwk is not an X25519 OKP key")

// X25519 parses the JWK back: exactly kty OKP, crv X25519 and a canonical
// 32-byte x.
func (j *JWK) X25519() (*ecdh.PublicKey, error) {
	if j == nil || j.Kty != "OKP" || j.Crv != "X25519" {
		return nil, ErrBadJWK
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(j.X)
	// The decoder skips CR and LF even when strict: insist on one spelling.
	if err != nil || len(raw) != 32 || base64.RawURLEncoding.EncodeToString(raw) != j.X {
		return nil, ErrBadJWK
	}
	pub, err := ecdh.X25519().NewPublicKey(raw)
	if err != nil {
		return nil, ErrBadJWK
	}
	return pub, nil
}

// NormalizeAudience drops one trailing slash, so "https://b/" and "https://b"
// name the same broker.
func NormalizeAudience(aud string) string {
	return strings.TrimSuffix(aud, "/")
}

// Sign returns a compact JWT for agentID addressed to audience, issued at
// now and valid for lifetime, with a fresh random jti, signed by key:
// EdDSA for an ed25519.PrivateKey, ES256 for a signer with a P-256 public
// key (a key held by a TPM, or an *ecdsa.PrivateKey). recipient, when not
// nil, is carried as the cnf claim.
func Sign(key crypto.Signer, agentID, audience string, now time.Time, lifetime time.Duration, recipient *ecdh.PublicKey) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	c := Claims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer:    agentID,
		Subject:   agentID,
		Audience:  jwt.ClaimStrings{audience},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(lifetime)),
		ID:        base64.RawURLEncoding.EncodeToString(jti[:]),
	}}
	if recipient != nil {
		c.Cnf = &Confirmation{JWK: X25519JWK(recipient)}
	}
	if k, ok := key.(ed25519.PrivateKey); ok {
		return jwt.NewWithClaims(jwt.SigningMethodEdDSA, c).SignedString(k)
	}
	if pub, ok := key.Public().(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		return "", errors.New("assertion: the key is neither Ed25519 nor ECDSA P-256")
	}
	// jwt's ES256 wants an *ecdsa.PrivateKey; a TPM key is only a
	// crypto.Signer, so the signature is made here: SHA-256 of the signing
	// input, and the signer's ASN.1 (r, s) turned into JWS's r || s.
	input, err := jwt.NewWithClaims(jwt.SigningMethodES256, c).SigningString()
	if err != nil {
		return "", err
	}
	digest := sha256.Sum256([]byte(input))
	der, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return "", err
	}
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(der, &rs); err != nil || len(rest) != 0 || rs.R.Sign() <= 0 || rs.S.Sign() <= 0 ||
		rs.R.BitLen() > 256 || rs.S.BitLen() > 256 {
		return "", errors.New("assertion: the signer returned a malformed ECDSA signature")
	}
	sig := make([]byte, 64)
	rs.R.FillBytes(sig[:32])
	rs.S.FillBytes(sig[32:])
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}
