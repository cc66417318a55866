// Package assertion makes the short-lived EdDSA JWT an agent presents to the
// broker on every request (see docs/design.md, "Agent authentication"). The broker
// side that verifies it lives in broker/agentauth.
package assertion

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
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
}

// NormalizeAudience drops one trailing slash, so "https://b/" and "https://b"
// name the same broker.
func NormalizeAudience(aud string) string {
	return strings.TrimSuffix(aud, "/")
}

// Sign returns a compact JWT for agentID addressed to audience, issued at now
// and valid for lifetime, with a fresh random jti.
func Sign(priv ed25519.PrivateKey, agentID, audience string, now time.Time, lifetime time.Duration) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	c := Claims{jwt.RegisteredClaims{
		Issuer:    agentID,
		Subject:   agentID,
		Audience:  jwt.ClaimStrings{audience},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(lifetime)),
		ID:        base64.RawURLEncoding.EncodeToString(jti[:]),
	}}
	return jwt.NewWithClaims(jwt.SigningMethodEdDSA, c).SignedString(priv)
}
