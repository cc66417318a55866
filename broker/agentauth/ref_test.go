package agentauth

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// refVerify is Verify as it was when golang-jwt's Parser.ParseWithClaims
// decoded the token (jwt.RegisteredClaims' JSON names, header in a map):
// the reference the hand-made JWS decoding must agree with
// (FuzzMatchesLibrary). It shares the claim checks and the replay cache.
func (v *Verifier) refVerify(dir Directory, authorizationHeader string) (string, error) {
	if authorizationHeader == "" {
		return "", &Error{Reason: ReasonMissing}
	}
	if len(authorizationHeader) > MaxHeaderBytes {
		return "", &Error{Reason: ReasonMalformed}
	}
	tok, ok := bearerToken(authorizationHeader)
	if !ok || !compactShape(tok) {
		return "", &Error{Reason: ReasonMalformed}
	}
	if dir == nil {
		return "", &Error{Reason: ReasonUnknownAgent}
	}
	var c refClaims
	var keyErr *Error
	keyfuncCalled := false
	_, perr := refParser.ParseWithClaims(tok, &c, func(t *jwt.Token) (any, error) {
		keyfuncCalled = true
		if !refHeaderOK(t.Header) {
			keyErr = &Error{Reason: ReasonMalformed}
			return nil, keyErr
		}
		if c.Issuer == "" {
			keyErr = &Error{Reason: ReasonBadClaims}
			return nil, keyErr
		}
		key, ok := dir.AgentKey(c.Issuer)
		if !ok || len(key) != ed25519.PublicKeySize {
			keyErr = &Error{Reason: ReasonUnknownAgent}
			return nil, keyErr
		}
		return key, nil
	})
	claimed := reportableID(c.Issuer)
	if perr != nil {
		switch {
		case keyErr != nil:
			keyErr.AgentID = claimed
			return "", keyErr
		case errors.Is(perr, jwt.ErrTokenMalformed):
			return "", &Error{Reason: ReasonMalformed, AgentID: claimed}
		case !keyfuncCalled:
			return "", &Error{Reason: ReasonWrongAlgorithm, AgentID: claimed}
		default:
			return "", &Error{Reason: ReasonBadSignature, AgentID: claimed}
		}
	}
	cc := claims{Issuer: c.Issuer, Subject: c.Subject, ID: c.ID, Audience: c.Audience}
	for _, d := range []struct {
		dst *time.Time
		has *bool
		src *jwt.NumericDate
	}{{&cc.ExpiresAt, &cc.hasExp, c.ExpiresAt}, {&cc.IssuedAt, &cc.hasIat, c.IssuedAt}, {&cc.NotBefore, &cc.hasNbf, c.NotBefore}} {
		if d.src != nil {
			*d.dst, *d.has = d.src.Time, true
		}
	}
	if reason := v.checkClaims(dir, &cc); reason != "" {
		return "", &Error{Reason: reason, AgentID: claimed}
	}
	if reason := v.replay.add(cc.Issuer, cc.ID, cc.ExpiresAt.Add(v.skew), v.now(), 0); reason != "" {
		return "", &Error{Reason: reason, AgentID: claimed}
	}
	return cc.Issuer, nil
}

var refParser = jwt.NewParser(
	jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
	jwt.WithoutClaimsValidation(),
	jwt.WithStrictDecoding(),
)

type refClaims struct {
	jwt.RegisteredClaims
}

func refHeaderOK(h map[string]any) bool {
	if typ, present := h["typ"]; present {
		s, ok := typ.(string)
		if !ok || !strings.EqualFold(s, "JWT") {
			return false
		}
	}
	_, crit := h["crit"]
	return !crit
}
