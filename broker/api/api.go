// Package api is the broker's HTTP API (v1): GET /healthz, GET /v1/stores
// and POST /v1/tokens, with agent authentication, per-agent rate limiting,
// body limits and the JSON error format of docs/design.md.
package api

import (
	"context"
	"crypto"
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
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/clientaddr"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/mint"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/tokencache"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/strictjson"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/tokenseal"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// MaxBodySize caps request bodies; larger ones get 413.
const MaxBodySize = 64 << 10

// MaxStoresPerRequest bounds the "stores" list of one token request.
const MaxStoresPerRequest = 256

// Tokens hands out a Google token for an account (broker/tokencache).
type Tokens interface {
	Token(ctx context.Context, a *policy.Account) (tokencache.Result, error)
}

// Authenticator checks an agent's Authorization header (broker/agentauth's
// Verifier). Check verifies without recording the jti; Record records it
// (refusing a replay atomically). The server applies its rate limit in
// between, so requests refused with 429 never fill the replay cache.
type Authenticator interface {
	Check(dir agentauth.Directory, header string) (agentauth.Verified, error)
	Record(a agentauth.Verified) error
}

// Limiter says whether an agent may make one more request now.
type Limiter interface {
	Allow(agentID string) bool
}

// Server serves the API. All fields but TrustedProxyHops are required.
type Server struct {
	Policy  func() *policy.Policy
	Auth    Authenticator
	Limiter Limiter
	Tokens  Tokens
	Audit   *audit.Logger
	Log     *slog.Logger

	// TrustedProxyHops is BROKER_TRUSTED_PROXY_HOPS: how many proxies in
	// front of the broker append to X-Forwarded-For, so where a request
	// comes from is that header's entry this far from the right; 0 is the
	// TCP peer (broker/clientaddr). The address is logged and checked
	// against an agent's AllowedSourceRanges.
	TrustedProxyHops int
}

// ServeHTTP routes a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	switch r.URL.Path {
	case wire.PathHealthz:
		s.healthz(w, r)
	case wire.PathStores:
		if r.Method != http.MethodGet {
			methodNotAllowed(w, http.MethodGet)
			return
		}
		s.authenticated(w, r, false, s.stores)
	case wire.PathTokens:
		if r.Method != http.MethodPost {
			methodNotAllowed(w, http.MethodPost)
			return
		}
		s.authenticated(w, r, true, s.tokens)
	default:
		writeError(w, wire.CodeNotFound, "no such endpoint")
	}
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, http.MethodGet)
		return
	}
	if s.Policy() == nil {
		writeError(w, wire.CodeUnavailable, "policy not loaded")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// directory adapts the policy to what the authenticator needs.
type directory struct{ p *policy.Policy }

func (d directory) Audience() string { return d.p.AudienceURL() }
func (d directory) AgentKeys(id string) ([]crypto.PublicKey, bool) {
	return d.p.AgentKeys(id)
}

// AgentCount sizes the replay cache: one share per agent in the policy.
func (d directory) AgentCount() int { return d.p.NumAgents() }

// authenticated runs h for a verified, rate-limited agent. Every
// authentication failure gets the same answer, so nobody can learn which
// agent ids exist; the reason goes to the server log only. sealed says the
// answer holds tokens, so the assertion must carry the key to seal them to.
func (s *Server) authenticated(w http.ResponseWriter, r *http.Request, sealed bool, h func(http.ResponseWriter, *http.Request, *policy.Policy, agentauth.Verified)) {
	p := s.Policy()
	if p == nil {
		writeError(w, wire.CodeUnavailable, "policy not loaded")
		return
	}
	v, err := s.Auth.Check(directory{p}, r.Header.Get("Authorization"))
	if err == nil && sealed && v.Recipient == nil {
		err = &agentauth.Error{Reason: agentauth.ReasonNoConfirmationKey, AgentID: v.Agent}
	}
	if err != nil {
		s.authFailed(w, r, err)
		return
	}
	// The agent's networks are checked once its key has proven who it is
	// (so the refusal can name it) and before the rate limit and Record:
	// a stolen key or a captured assertion used from elsewhere spends
	// neither the agent's budget nor its replay share, and does not burn
	// the jti. The answer is the 401 of every other failure. An address
	// that cannot be told (an X-Forwarded-For chain shorter than the
	// trusted hops) is refused for an agent that has ranges.
	if addr, _ := clientaddr.FromRequest(r, s.TrustedProxyHops); !p.SourceAllowed(v.Agent, addr) {
		s.authFailed(w, r, &agentauth.Error{Reason: agentauth.ReasonSourceNotAllowed, AgentID: v.Agent})
		return
	}
	// The limit comes after the signature check (only a real agent spends
	// its own budget; Check has already refused a replayed jti) and before
	// the jti is recorded, so refused requests cannot fill the replay cache.
	if !s.Limiter.Allow(v.Agent) {
		s.Log.Warn("agent rate limited", "agent", v.Agent, "client", s.client(r))
		w.Header().Set("Retry-After", "1")
		writeError(w, wire.CodeRateLimited, "too many requests; slow down")
		return
	}
	if err := s.Auth.Record(v); err != nil {
		s.authFailed(w, r, err)
		return
	}
	h(w, r, p, v)
}

// The "event" field of the two failure lines the fleet's log-based metrics
// count (terraform/monitoring.tf): a stable key, so rewording a message
// cannot silently zero a metric.
const (
	EventAuthFailed = "auth_failed"
	EventMintFailed = "mint_failed"
)

// authFailed answers every authentication failure the same way; the reason
// goes to the server log only, with the client address it was judged by.
// A source_not_allowed line also carries the right end of X-Forwarded-For
// when the broker reads it, so a wrong BROKER_TRUSTED_PROXY_HOPS shows.
func (s *Server) authFailed(w http.ResponseWriter, r *http.Request, err error) {
	attrs := []any{"event", EventAuthFailed, "client", s.client(r), "path", r.URL.Path}
	var ae *agentauth.Error
	if errors.As(err, &ae) {
		attrs = append(attrs, "reason", ae.Reason, "claimed_agent", ae.AgentID) // agentauth keeps it short and printable
		if ae.Reason == agentauth.ReasonSourceNotAllowed && s.TrustedProxyHops > 0 {
			attrs = append(attrs, "forwarded_for", forwardedTail(r))
		}
	}
	s.Log.Warn("agent authentication failed", attrs...)
	w.Header().Set("WWW-Authenticate", `Bearer realm="orthanc-gcp-broker"`)
	writeError(w, wire.CodeUnauthenticated, "missing or invalid agent assertion")
}

// client is where r came from (broker/clientaddr), for log and audit
// lines: the address, or "unknown" when it cannot be told.
func (s *Server) client(r *http.Request) string {
	if a, ok := clientaddr.FromRequest(r, s.TrustedProxyHops); ok {
		return a.String()
	}
	return "unknown"
}

// maxForwardedLog bounds forwardedTail.
const maxForwardedLog = 200

// forwardedTail is the right end of r's X-Forwarded-For chain (the part
// the trusted proxies wrote; the client wrote the rest), at most
// maxForwardedLog bytes, control characters blanked.
func forwardedTail(r *http.Request) string {
	chain := strings.Join(r.Header.Values(clientaddr.Header), ",")
	if len(chain) > maxForwardedLog {
		chain = chain[len(chain)-maxForwardedLog:]
	}
	return logtext.Clip(strings.ToValidUTF8(chain, ""))
}

func (s *Server) stores(w http.ResponseWriter, r *http.Request, p *policy.Policy, v agentauth.Verified) {
	agent := v.Agent
	out := wire.StoresResponse{Stores: []wire.Store{}}
	for _, a := range p.Grants(agent) {
		out.Stores = append(out.Stores, wire.Store{Name: a.Name(), DicomWebURL: a.DICOMwebURL()})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) tokens(w http.ResponseWriter, r *http.Request, p *policy.Policy, v agentauth.Verified) {
	agent := v.Agent
	req, status, err := decodeTokenRequest(w, r)
	if err != nil {
		code := wire.CodeBadRequest
		if status == http.StatusRequestEntityTooLarge {
			code = wire.CodeTooLarge
		}
		writeError(w, code, err.Error())
		return
	}
	names := req.Stores
	if len(names) == 0 {
		for _, a := range p.Grants(agent) {
			names = append(names, a.Name())
		}
	}
	resp := wire.TokenResponse{Tokens: []wire.Token{}, Errors: []wire.StoreError{}}
	var recs []audit.Record
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		a, ok := p.Allowed(agent, name)
		if !ok {
			resp.Errors = append(resp.Errors, wire.StoreError{Store: name, Code: wire.CodeForbidden, Message: "this agent may not use this store"})
			continue
		}
		res, err := s.Tokens.Token(r.Context(), a)
		if err != nil {
			code, msg, detail := mintFailure(err)
			s.Log.Error("token mint failed", "event", EventMintFailed, "agent", agent, "account", name, "code", code, "error", detail)
			resp.Errors = append(resp.Errors, wire.StoreError{Store: name, Code: code, Message: msg})
			continue
		}
		// Sealed to the request's own key: a replay of this request, to
		// this instance or another, gets nothing it can open.
		sealed, err := tokenseal.Seal(v.Recipient, name, res.Token.AccessToken)
		if err != nil {
			s.Log.Error("token not sealed; not handed out", "agent", agent, "account", name, "error", logtext.Clip(err.Error()))
			resp.Errors = append(resp.Errors, wire.StoreError{Store: name, Code: wire.CodeUnavailable, Message: "the token could not be sealed"})
			continue
		}
		expires := res.Token.Expiry.UTC().Format(time.RFC3339)
		if res.Fallback {
			s.Log.Warn("mint failed; served a cached token that is still valid", "agent", agent, "account", name, "expires_at", expires)
		}
		resp.Tokens = append(resp.Tokens, wire.Token{
			Store:             name,
			SealedAccessToken: sealed,
			TokenType:         wire.TokenType,
			ExpiresAt:         expires,
			DicomWebURL:       a.DICOMwebURL(),
		})
		recs = append(recs, audit.Record{
			Agent: agent, Account: name, ExpiresAt: res.Token.Expiry, Token: res.Token.AccessToken,
			Client: s.client(r), Forwarded: r.Header.Get("X-Forwarded-For"), Cached: res.Cached,
		})
	}
	// The audit lines are written before any token leaves: a token is
	// never handed out without its line, and one whose line could not be
	// written is not handed out.
	if err := s.Audit.Issued(r.Context(), recs...); err != nil {
		s.Log.Error("audit line not written; no token handed out", "agent", agent, "tokens", len(recs), "error", logtext.Clip(err.Error()))
		writeError(w, wire.CodeUnavailable, "the issuance could not be recorded; no token was issued")
		return
	}
	status = http.StatusOK
	if len(resp.Tokens) == 0 && len(resp.Errors) > 0 {
		// Nothing issued: the status tells plain HTTP clients what happened.
		first := resp.Errors[0]
		status = wire.Status(first.Code)
		for _, e := range resp.Errors {
			if wire.Status(e.Code) != status {
				status = wire.Status(wire.CodeUpstream)
				first = wire.StoreError{Code: wire.CodeUpstream, Message: "no token could be issued; see errors"}
				break
			}
		}
		resp.Error = &wire.ErrorBody{Code: first.Code, Message: first.Message}
	}
	writeJSON(w, status, resp)
}

func decodeTokenRequest(w http.ResponseWriter, r *http.Request) (wire.TokenRequest, int, error) {
	var req wire.TokenRequest
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
	if err := strictjson.Unmarshal(body, &req); err != nil {
		return wire.TokenRequest{}, http.StatusBadRequest, err
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

// mintFailure returns the error word and agent-safe message for a failed
// mint, and the detail for the broker's log. Only mint.Error's Error() is
// agent-safe: any other error (which may name a secret, project, service
// account or file) gets a generic message, its text going to the log only.
func mintFailure(err error) (code, msg, detail string) {
	var me *mint.Error
	if errors.As(err, &me) {
		code = me.Code
		if code == "" {
			code = wire.CodeUpstream
		}
		return code, me.Error(), logtext.Clip(me.Detail())
	}
	return wire.CodeUpstream, "could not obtain a Google token", logtext.Clip(err.Error())
}

// writeError answers with the error word's status (wire.Status).
func writeError(w http.ResponseWriter, code, msg string) {
	writeErrorStatus(w, wire.Status(code), code, msg)
}

func writeErrorStatus(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, wire.ErrorResponse{Error: wire.ErrorBody{Code: code, Message: msg}})
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeErrorStatus(w, http.StatusMethodNotAllowed, wire.CodeBadRequest, "method not allowed")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
