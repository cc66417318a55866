// Package wire is the broker ↔ agent contract of API v1 (docs/design.md): the
// paths, the JSON shapes of requests and answers, the error words with their
// HTTP statuses, the token fingerprint both sides log, and the rules for
// store names and agent ids (rules.go). The broker, the agent and the test
// bed all import it, so the contract is written once.
package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
)

// Paths of API v1.
const (
	PathHealthz = "/healthz"
	PathStores  = "/v1/stores"
	PathTokens  = "/v1/tokens"
)

// TokenType is the only token type the broker issues and the agent accepts.
const TokenType = "Bearer"

// Store is one entry of GET /v1/stores.
type Store struct {
	Name        string `json:"name"`
	DicomWebURL string `json:"dicomweb_url"`
}

// StoresResponse is the answer of GET /v1/stores.
type StoresResponse struct {
	Stores []Store `json:"stores"`
}

// TokenRequest is the body of POST /v1/tokens; no stores means every store
// the caller may use.
type TokenRequest struct {
	Stores []string `json:"stores"`
}

// Token is one issued access token, sealed to the X25519 key of the
// request's assertion (cnf): SealedAccessToken is base64url, without
// padding, of HPKE's encapsulated key followed by the ciphertext
// (internal/tokenseal). ExpiresAt is RFC 3339. There is no plaintext
// access_token: an answer with one is from an old or wrong broker, and the
// agent refuses it (PlaintextTokenField).
type Token struct {
	Store             string `json:"store"`
	SealedAccessToken string `json:"sealed_access_token"`
	TokenType         string `json:"token_type"`
	ExpiresAt         string `json:"expires_at"`
	DicomWebURL       string `json:"dicomweb_url"`
}

// PlaintextTokenField is the field a token item must not have.
const PlaintextTokenField = "access_token"

// StoreError is the failure of one store in a token answer.
type StoreError struct {
	Store   string `json:"store"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// TokenResponse is the answer of POST /v1/tokens. Error is set only when
// no token at all was issued.
type TokenResponse struct {
	Error  *ErrorBody   `json:"error,omitempty"`
	Tokens []Token      `json:"tokens"`
	Errors []StoreError `json:"errors"`
}

// ErrorBody is the "error" member of an error answer.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ErrorResponse is the whole body of an error answer.
type ErrorResponse struct {
	Error ErrorBody `json:"error"`
}

// Error words. Each has one HTTP status (Status).
const (
	CodeBadRequest      = "bad_request"
	CodeUnauthenticated = "unauthenticated"
	CodeForbidden       = "forbidden"
	CodeNotFound        = "not_found"
	CodeTooLarge        = "too_large"
	CodeRateLimited     = "rate_limited"
	CodeUpstream        = "upstream"
	CodeUnavailable     = "unavailable"
)

var statuses = map[string]int{
	CodeBadRequest:      http.StatusBadRequest,
	CodeUnauthenticated: http.StatusUnauthorized,
	CodeForbidden:       http.StatusForbidden,
	CodeNotFound:        http.StatusNotFound,
	CodeTooLarge:        http.StatusRequestEntityTooLarge,
	CodeRateLimited:     http.StatusTooManyRequests,
	CodeUpstream:        http.StatusBadGateway,
	CodeUnavailable:     http.StatusServiceUnavailable,
}

// Status is the HTTP status that goes with an error word; an unknown word
// is an upstream failure (502).
func Status(code string) int {
	if s, ok := statuses[code]; ok {
		return s
	}
	return http.StatusBadGateway
}

// FingerprintKey is the one log key under which the broker's audit lines and
// the agent's logs carry a token's Fingerprint, so the two can be joined.
const FingerprintKey = "token_sha256"

// Fingerprint is the first 16 hex digits of the token's SHA-256: enough to
// match a log line to a token someone holds, useless to replay.
func Fingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:8])
}
