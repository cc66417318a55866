// Package api is the broker's HTTP API (v1): GET /healthz, GET /v1/stores
// and POST /v1/tokens, with agent authentication, per-agent rate limiting,
// body limits and the JSON error format of DESIGN.md.
package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/agentauth"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/audit"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/mint"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/tokencache"
)

// MaxBodySize caps request bodies; larger ones get 413.
const MaxBodySize = 64 << 10

// MaxStoresPerRequest bounds the "stores" list of one token request.
const MaxStoresPerRequest = 256

// Tokens hands out a Google token for an account (broker/tokencache).
type Tokens interface {
	Token(ctx context.Context, a *policy.Account) (tokencache.Result, error)
}

// Authenticator checks an agent's Authorization header (broker/agentauth).
type Authenticator interface {
	Verify(dir agentauth.Directory, header string) (string, error)
}

// Limiter says whether an agent may make one more request now.
type Limiter interface {
	Allow(agentID string) bool
}

// Server serves the API. All fields are required.
type Server struct {
	Policy  func() *policy.Policy
	Auth    Authenticator
	Limiter Limiter
	Tokens  Tokens
	Audit   *audit.Logger
	Log     *slog.Logger
}

// ServeHTTP routes a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	switch r.URL.Path {
	case "/healthz":
		s.healthz(w, r)
	case "/v1/stores":
		if r.Method != http.MethodGet {
			methodNotAllowed(w, http.MethodGet)
			return
		}
		s.authenticated(w, r, s.stores)
	case "/v1/tokens":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, http.MethodPost)
			return
		}
		s.authenticated(w, r, s.tokens)
	default:
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint")
	}
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, http.MethodGet)
		return
	}
	if s.Policy() == nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "policy not loaded")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// directory adapts the policy to what the authenticator needs.
type directory struct{ p *policy.Policy }

func (d directory) Audience() string { return d.p.AudienceURL() }
func (d directory) AgentKey(id string) (ed25519.PublicKey, bool) {
	return d.p.AgentKey(id)
}

// authenticated runs h for a verified, rate-limited agent. Every
// authentication failure gets the same answer, so nobody can learn which
// agent ids exist; the reason goes to the server log only.
func (s *Server) authenticated(w http.ResponseWriter, r *http.Request, h func(http.ResponseWriter, *http.Request, *policy.Policy, string)) {
	p := s.Policy()
	if p == nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "policy not loaded")
		return
	}
	agent, err := s.Auth.Verify(directory{p}, r.Header.Get("Authorization"))
	if err != nil {
		attrs := []any{"client", r.RemoteAddr, "path", r.URL.Path}
		var ae *agentauth.Error
		if errors.As(err, &ae) {
			attrs = append(attrs, "reason", ae.Reason, "claimed_agent", ae.AgentID) // agentauth keeps it short and printable
		}
		s.Log.Warn("agent authentication failed", attrs...)
		w.Header().Set("WWW-Authenticate", `Bearer realm="orthanc-gcp-broker"`)
		writeError(w, http.StatusUnauthorized, "unauthenticated", "missing or invalid agent assertion")
		return
	}
	if !s.Limiter.Allow(agent) {
		s.Log.Warn("agent rate limited", "agent", agent, "client", r.RemoteAddr)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "rate_limited", "too many requests; slow down")
		return
	}
	h(w, r, p, agent)
}

type storeJSON struct {
	Name        string `json:"name"`
	DICOMwebURL string `json:"dicomweb_url"`
}

func (s *Server) stores(w http.ResponseWriter, r *http.Request, p *policy.Policy, agent string) {
	out := []storeJSON{}
	for _, a := range p.Grants(agent) {
		out = append(out, storeJSON{Name: a.Name(), DICOMwebURL: a.DICOMwebURL()})
	}
	writeJSON(w, http.StatusOK, map[string]any{"stores": out})
}

type tokenRequest struct {
	Stores []string `json:"stores"`
}

type tokenJSON struct {
	Store       string `json:"store"`
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresAt   string `json:"expires_at"`
	DICOMwebURL string `json:"dicomweb_url"`
}

type itemError struct {
	Store   string `json:"store"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

type tokenResponse struct {
	Error  *errorBody  `json:"error,omitempty"`
	Tokens []tokenJSON `json:"tokens"`
	Errors []itemError `json:"errors"`
}

func (s *Server) tokens(w http.ResponseWriter, r *http.Request, p *policy.Policy, agent string) {
	req, status, err := decodeTokenRequest(w, r)
	if err != nil {
		code := "bad_request"
		if status == http.StatusRequestEntityTooLarge {
			code = "too_large"
		}
		writeError(w, status, code, err.Error())
		return
	}
	names := req.Stores
	if len(names) == 0 {
		for _, a := range p.Grants(agent) {
			names = append(names, a.Name())
		}
	}
	resp := tokenResponse{Tokens: []tokenJSON{}, Errors: []itemError{}}
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		a, ok := p.Allowed(agent, name)
		if !ok {
			resp.Errors = append(resp.Errors, itemError{Store: name, Code: "forbidden", Message: "this agent may not use this store"})
			continue
		}
		res, err := s.Tokens.Token(r.Context(), a)
		if err != nil {
			code, msg := mintFailure(err)
			s.Log.Error("token mint failed", "agent", agent, "account", name, "code", code, "error", msg)
			resp.Errors = append(resp.Errors, itemError{Store: name, Code: code, Message: msg})
			continue
		}
		if res.Fallback {
			s.Log.Warn("mint failed; served a cached token that is still valid", "agent", agent, "account", name, "expires_at", res.Token.Expiry.UTC().Format(time.RFC3339))
		}
		resp.Tokens = append(resp.Tokens, tokenJSON{
			Store:       name,
			AccessToken: res.Token.AccessToken,
			TokenType:   "Bearer",
			ExpiresAt:   res.Token.Expiry.UTC().Format(time.RFC3339),
			DICOMwebURL: a.DICOMwebURL(),
		})
		s.Audit.Issued(r.Context(), audit.Record{
			Agent: agent, Account: name, ExpiresAt: res.Token.Expiry, Token: res.Token.AccessToken,
			Client: r.RemoteAddr, Forwarded: r.Header.Get("X-Forwarded-For"), Cached: res.Cached,
		})
	}
	status = http.StatusOK
	if len(resp.Tokens) == 0 && len(resp.Errors) > 0 {
		// Nothing issued: the status tells plain HTTP clients what happened.
		first := resp.Errors[0]
		status = statusFor(first.Code)
		for _, e := range resp.Errors {
			if statusFor(e.Code) != status {
				status = http.StatusBadGateway
				first = itemError{Code: "upstream", Message: "no token could be issued; see errors"}
				break
			}
		}
		resp.Error = &errorBody{Code: first.Code, Message: first.Message}
	}
	writeJSON(w, status, resp)
}

func decodeTokenRequest(w http.ResponseWriter, r *http.Request) (tokenRequest, int, error) {
	var req tokenRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodySize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return req, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", MaxBodySize)
		}
		return req, http.StatusBadRequest, errors.New("cannot read request body")
	}
	if len(body) == 0 {
		return req, 0, nil
	}
	if err := decodeStrict(body, &req); err != nil {
		return req, http.StatusBadRequest, err
	}
	if len(req.Stores) > MaxStoresPerRequest {
		return req, http.StatusBadRequest, fmt.Errorf("at most %d stores per request", MaxStoresPerRequest)
	}
	for _, n := range req.Stores {
		if n == "" || len(n) > 256 {
			return req, http.StatusBadRequest, errors.New("store names must be 1-256 characters")
		}
	}
	return req, 0, nil
}

// decodeStrict parses exactly one JSON object with no unknown fields.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return fmt.Errorf("invalid JSON at byte %d", syn.Offset)
		case errors.As(err, &typ):
			return fmt.Errorf("field %q has the wrong type", typ.Field)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			return fmt.Errorf("unknown field %s", truncate(strings.TrimPrefix(err.Error(), "json: unknown field "), 80))
		}
		return errors.New("invalid JSON body")
	}
	if dec.More() {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}

func mintFailure(err error) (code, msg string) {
	var me *mint.Error
	if errors.As(err, &me) {
		return me.Code, me.Error()
	}
	return "upstream", "could not obtain a Google token"
}

func statusFor(code string) int {
	switch code {
	case "forbidden":
		return http.StatusForbidden
	case "unavailable":
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]errorBody{"error": {Code: code, Message: msg}})
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "bad_request", "method not allowed")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
