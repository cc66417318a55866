package agentauth

import (
	"bytes"
	"crypto/ecdh"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
)

// claims is the assertion's claim set as jwt.ParseWithClaims decodes it.
// The library checks exp, nbf, iat and aud against the injected clock;
// Validate, which the library calls after them, adds the rules that are the
// broker's own.
type claims struct {
	assertion.Claims
	maxLifetime time.Duration   // set before parsing; not a claim
	recipient   *ecdh.PublicKey // cnf.jwk, parsed by Validate; nil without cnf
}

// Sentinels for the broker's own claim rules; reasonFor maps them.
var (
	errBadClaims    = errors.New("claims break the assertion rules")
	errLifetimeLong = errors.New("assertion lifetime too long")
)

// UnmarshalJSON refuses an ambiguous claim set, then decodes it with
// encoding/json. See ambiguous.
func (c *claims) UnmarshalJSON(b []byte) error {
	if err := ambiguous(b, registeredClaims); err != nil {
		return err
	}
	return json.Unmarshal(b, &c.Claims)
}

// Validate is the broker's part of the claim check (jwt.ClaimsValidator):
// iss == sub, a jti the replay cache can hold, iat and exp both present,
// exp after iat, at most maxLifetime between them, and a cnf, when
// present, that holds exactly an X25519 key.
func (c *claims) Validate() error {
	if c.Cnf != nil {
		pub, err := c.Cnf.JWK.X25519()
		if err != nil {
			return errBadClaims
		}
		c.recipient = pub
	}
	switch {
	case c.Issuer == "" || c.Subject != c.Issuer,
		c.ID == "" || len(c.ID) > MaxJTIBytes,
		c.IssuedAt == nil || c.ExpiresAt == nil,
		!c.ExpiresAt.After(c.IssuedAt.Time):
		return errBadClaims
	case c.ExpiresAt.Sub(c.IssuedAt.Time) > c.maxLifetime:
		return errLifetimeLong
	}
	return nil
}

// registeredClaims are the claim names encoding/json would fill in
// assertion.Claims.
var registeredClaims = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "cnf"}

// headerParams are the JOSE header parameters Check reads.
var headerParams = []string{"alg", "typ", "crit"}

var errAmbiguous = errors.New("ambiguous JSON object")

// ambiguous refuses a JSON object that encoding/json would read one way
// while another reader could read it another: a member named twice (the
// last one wins in encoding/json) or a member whose name matches one of
// names only case-insensitively ("ISS" fills Issuer). Anything else,
// including null, is left to the decoder that follows.
func ambiguous(b []byte, names []string) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil // not an object: the real decoder says what is wrong
	}
	seen := make(map[string]bool, len(names))
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		key, _ := t.(string)
		if seen[key] {
			return errAmbiguous
		}
		seen[key] = true
		for _, n := range names {
			if key != n && strings.EqualFold(key, n) {
				return errAmbiguous
			}
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}
