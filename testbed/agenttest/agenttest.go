// Package agenttest holds test doubles for the agent's packages: a broker
// that speaks the v1 HTTP contract of docs/design.md and checks the agent's
// assertions (EdDSA for an Ed25519 key, ES256 for a P-256 key such as a TPM
// key; any of the agent's keys), and an in-memory Orthanc DICOMweb server registry that
// mimics Orthanc 1.10's REST semantics (PUT replaces, ?expand hides header
// values and stringifies user properties, DELETE of a missing entry is 400).
package agenttest

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/tokenseal"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/clocktest"
)

// StoreError is a per-store error the fake broker returns; Code is one of
// the wire.Code* words.
type StoreError struct{ Code, Message string }

// Broker is a fake broker on 127.0.0.1.
type Broker struct {
	URL string
	srv *httptest.Server

	mu sync.Mutex
	// AgentID and Keys authenticate the agent: an assertion signed by any
	// of Keys (ed25519.PublicKey or *ecdsa.PublicKey on P-256) is
	// accepted, as the broker does with a policy entry's PublicKeys.
	AgentID string
	Keys    []crypto.PublicKey
	// Refused counts requests refused for authentication; RefusedKeys
	// counts them by the key that signed them when it is one of
	// KnownKeys (agentkey policy lines), so a test can see which key an
	// agent tried.
	Refused     int
	KnownKeys   map[string]crypto.PublicKey
	RefusedKeys map[string]int
	// AcceptedKeys counts accepted requests by the policy line of the key
	// that signed them (lines of Keys and KnownKeys).
	AcceptedKeys map[string]int
	// Grants maps store name to dicomweb_url.
	Grants map[string]string
	// TokenURLs, when it has a store, is the dicomweb_url of that store's
	// tokens instead of its Grants URL (a broker whose two answers
	// disagree).
	TokenURLs map[string]string
	// Lifetime of issued tokens; Now is the broker's clock.
	Lifetime time.Duration
	Now      func() time.Time
	// Fail, when non-zero, is the status every request gets, with the
	// error word of that status (wire.Status).
	Fail int
	// StoreErrors answer per-store errors instead of tokens.
	StoreErrors map[string]StoreError
	// Issued lists every access token handed out, in order.
	Issued []string
	// StoresCalls and TokenCalls count requests; Asked records each
	// POST /v1/tokens body's store list.
	StoresCalls, TokenCalls int
	Asked                   [][]string
	seenJTI                 map[string]bool
}

// NewBroker starts a fake broker for agentID with public key pub
// (ed25519.PublicKey or *ecdsa.PublicKey on P-256).
func NewBroker(t testing.TB, agentID string, pub crypto.PublicKey) *Broker {
	b := &Broker{AgentID: agentID, Keys: []crypto.PublicKey{pub}, KnownKeys: map[string]crypto.PublicKey{},
		RefusedKeys: map[string]int{}, AcceptedKeys: map[string]int{}, Grants: map[string]string{}, TokenURLs: map[string]string{}, Lifetime: time.Hour,
		Now: time.Now, StoreErrors: map[string]StoreError{}, seenJTI: map[string]bool{}}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	b.URL = b.srv.URL
	t.Cleanup(b.srv.Close)
	return b
}

// Set runs f with the broker locked, to change its behaviour.
func (b *Broker) Set(f func(b *Broker)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(b)
}

// Snapshot returns counters under the lock.
func (b *Broker) Snapshot() (storesCalls, tokenCalls int, issued []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.StoresCalls, b.TokenCalls, append([]string(nil), b.Issued...)
}

// codes are the error words of API v1, to answer a Fail status with its own.
var codes = []string{wire.CodeBadRequest, wire.CodeUnauthenticated, wire.CodeForbidden, wire.CodeNotFound,
	wire.CodeTooLarge, wire.CodeRateLimited, wire.CodeUpstream, wire.CodeUnavailable}

// codeFor is the error word whose status is status; a status without one
// (500) is an upstream failure, as the broker reports it.
func codeFor(status int) string {
	for _, c := range codes {
		if wire.Status(c) == status {
			return c
		}
	}
	return wire.CodeUpstream
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeErr answers the error word code with its status.
func writeErr(w http.ResponseWriter, code, msg string) {
	writeJSON(w, wire.Status(code), wire.ErrorResponse{Error: wire.ErrorBody{Code: code, Message: msg}})
}

func (b *Broker) serve(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.Fail != 0 {
		writeJSON(w, b.Fail, wire.ErrorResponse{Error: wire.ErrorBody{Code: codeFor(b.Fail), Message: "test failure"}})
		return
	}
	recipient, err := b.checkAssertion(r)
	if err == nil && r.URL.Path == wire.PathTokens && recipient == nil {
		err = fmt.Errorf("token request without a cnf key")
	}
	if err != nil {
		b.Refused++
		writeErr(w, wire.CodeUnauthenticated, "authentication failed")
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == wire.PathStores:
		b.StoresCalls++
		out := wire.StoresResponse{Stores: []wire.Store{}}
		for _, n := range slices.Sorted(maps.Keys(b.Grants)) {
			out.Stores = append(out.Stores, wire.Store{Name: n, DicomWebURL: b.Grants[n]})
		}
		writeJSON(w, http.StatusOK, out)
	case r.Method == http.MethodPost && r.URL.Path == wire.PathTokens:
		b.TokenCalls++
		var req wire.TokenRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeErr(w, wire.CodeBadRequest, "bad body")
			return
		}
		b.Asked = append(b.Asked, req.Stores)
		if len(req.Stores) == 0 {
			req.Stores = slices.Sorted(maps.Keys(b.Grants))
		}
		out := wire.TokenResponse{Tokens: []wire.Token{}, Errors: []wire.StoreError{}}
		for _, s := range req.Stores {
			if e, ok := b.StoreErrors[s]; ok {
				out.Errors = append(out.Errors, wire.StoreError{Store: s, Code: e.Code, Message: e.Message})
				continue
			}
			u, ok := b.Grants[s]
			if !ok {
				out.Errors = append(out.Errors, wire.StoreError{Store: s, Code: wire.CodeForbidden, Message: "not allowed"})
				continue
			}
			if tu, ok := b.TokenURLs[s]; ok {
				u = tu
			}
			tok := "ya29.fake-" + randHex(24)
			b.Issued = append(b.Issued, tok)
			sealed, err := tokenseal.Seal(recipient, s, tok)
			if err != nil {
				writeErr(w, wire.CodeUnavailable, "cannot seal")
				return
			}
			out.Tokens = append(out.Tokens, wire.Token{
				Store: s, SealedAccessToken: sealed, TokenType: wire.TokenType,
				ExpiresAt: b.Now().Add(b.Lifetime).UTC().Format(time.RFC3339), DicomWebURL: u,
			})
		}
		writeJSON(w, http.StatusOK, out)
	default:
		writeErr(w, wire.CodeNotFound, "no such endpoint")
	}
}

// checkAssertion verifies the request's JWT as docs/design.md says (the
// algorithm follows the key: EdDSA for Ed25519, ES256 for P-256, never the
// token's header) and returns the X25519 key of its cnf claim (nil when
// there is none) to seal the answer's tokens to.
func (b *Broker) checkAssertion(r *http.Request) (*ecdh.PublicKey, error) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return nil, fmt.Errorf("no bearer")
	}
	var (
		claims assertion.Claims
		err    error
	)
	for _, k := range b.Keys {
		claims = assertion.Claims{}
		if err = b.verify(raw, k, &claims); err == nil {
			b.AcceptedKeys[keyLine(k)]++
			break
		}
	}
	if err == nil && len(b.Keys) == 0 {
		err = fmt.Errorf("no keys")
	}
	if err != nil {
		for line, k := range b.KnownKeys {
			if b.verify(raw, k, &assertion.Claims{}) == nil {
				b.RefusedKeys[line]++
			}
		}
		return nil, err
	}
	if claims.ID == "" || b.seenJTI[claims.ID] {
		return nil, fmt.Errorf("jti replay")
	}
	if claims.ExpiresAt.Sub(claims.IssuedAt.Time) > 5*time.Minute {
		return nil, fmt.Errorf("lifetime")
	}
	var recipient *ecdh.PublicKey
	if claims.Cnf != nil {
		if recipient, err = claims.Cnf.JWK.X25519(); err != nil {
			return nil, err
		}
	}
	b.seenJTI[claims.ID] = true
	return recipient, nil
}

func (b *Broker) verify(raw string, key crypto.PublicKey, claims *assertion.Claims) error {
	alg := "EdDSA"
	if _, ok := key.(*ecdsa.PublicKey); ok {
		alg = "ES256"
	}
	_, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return key, nil },
		jwt.WithValidMethods([]string{alg}), jwt.WithAudience(b.URL),
		jwt.WithIssuer(b.AgentID), jwt.WithSubject(b.AgentID), jwt.WithTimeFunc(b.Now),
		jwt.WithLeeway(time.Minute), jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	return err
}

// keyLine is the policy line of key ("ed25519:…", "ecdsa-p256:…").
func keyLine(key crypto.PublicKey) string {
	switch k := key.(type) {
	case ed25519.PublicKey:
		return agentkey.FormatPublicKey(k)
	case *ecdsa.PublicKey:
		line, _ := agentkey.FormatECDSAP256(k)
		return line
	}
	return fmt.Sprintf("%T", key)
}

// Orthanc is a fake Orthanc DICOMweb server registry on 127.0.0.1.
type Orthanc struct {
	URL string
	srv *httptest.Server

	mu sync.Mutex
	// User and Password, when User is set, are required (Basic auth).
	User, Password string
	// Servers holds each entry's last PUT body.
	Servers map[string]map[string]any
	// Puts and Deletes count successful calls per server name.
	Puts, Deletes map[string]int
	// Down makes every request fail with 503.
	Down bool
	// Requests lists every request as "METHOD escaped-path", in order.
	Requests []string
}

// NewOrthanc starts a fake Orthanc with the given servers already
// configured (as from its configuration file: no marker).
func NewOrthanc(t testing.TB, user, password string) *Orthanc {
	o := &Orthanc{User: user, Password: password, Servers: map[string]map[string]any{},
		Puts: map[string]int{}, Deletes: map[string]int{}}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	o.URL = o.srv.URL
	t.Cleanup(o.srv.Close)
	return o
}

// Set runs f with the fake locked.
func (o *Orthanc) Set(f func(o *Orthanc)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f(o)
}

// Restart forgets every server created over REST, as Orthanc does on
// restart with ServersInDatabase false; keep lists the config-file ones.
func (o *Orthanc) Restart(keep ...string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for n := range o.Servers {
		if !contains(keep, n) {
			delete(o.Servers, n)
		}
	}
}

// Bearer returns the token in the Authorization header of entry name.
func (o *Orthanc) Bearer(name string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.Servers[name]
	if !ok {
		return ""
	}
	h, _ := s["HttpHeaders"].(map[string]any)
	v, _ := h["Authorization"].(string)
	return strings.TrimPrefix(v, "Bearer ")
}

// Entry returns a copy of the entry's last PUT body (nil if absent).
func (o *Orthanc) Entry(name string) map[string]any {
	o.mu.Lock()
	defer o.mu.Unlock()
	s, ok := o.Servers[name]
	if !ok {
		return nil
	}
	out := map[string]any{}
	for k, v := range s {
		out[k] = v
	}
	return out
}

// Counts returns PUT and DELETE counts for name.
func (o *Orthanc) Counts(name string) (puts, deletes int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.Puts[name], o.Deletes[name]
}

const root = "/dicom-web/servers"

// RequestLog returns a copy of Requests.
func (o *Orthanc) RequestLog() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.Requests...)
}

func (o *Orthanc) serve(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.Requests = append(o.Requests, r.Method+" "+r.URL.EscapedPath())
	if o.Down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if o.User != "" {
		u, p, ok := r.BasicAuth()
		if !ok || u != o.User || p != o.Password {
			w.Header().Set("WWW-Authenticate", `Basic realm="Orthanc Secure Area"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	}
	orthErr := func(status int, msg string) {
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"HttpStatus": status, "Message": msg, "Details": "details"})
	}
	switch {
	case r.URL.Path == "/system":
		json.NewEncoder(w).Encode(map[string]any{"Version": "1.10.1"})
	case r.URL.Path == root && r.Method == http.MethodGet:
		if _, ok := r.URL.Query()["expand"]; !ok {
			json.NewEncoder(w).Encode(slices.Sorted(maps.Keys(o.Servers)))
			return
		}
		out := map[string]any{}
		for n, s := range o.Servers {
			out[n] = expand(s)
		}
		json.NewEncoder(w).Encode(out)
	case strings.HasPrefix(r.URL.Path, root+"/"):
		name := strings.TrimPrefix(r.URL.Path, root+"/")
		switch r.Method {
		case http.MethodPut:
			var def map[string]any
			if err := json.NewDecoder(r.Body).Decode(&def); err != nil {
				orthErr(400, "Bad file format")
				return
			}
			if u, _ := def["Url"].(string); u == "" {
				orthErr(400, "Empty URL")
				return
			}
			if h, ok := def["HttpHeaders"]; ok {
				hm, ok := h.(map[string]any)
				if !ok {
					orthErr(400, "Bad file format")
					return
				}
				for _, v := range hm {
					if _, ok := v.(string); !ok {
						orthErr(400, "Bad file format")
						return
					}
				}
			}
			o.Servers[name] = def // a PUT replaces the whole entry
			o.Puts[name]++
			w.Write([]byte("{}"))
		case http.MethodDelete:
			if _, ok := o.Servers[name]; !ok {
				orthErr(400, "Parameter out of range")
				return
			}
			delete(o.Servers, name)
			o.Deletes[name]++
			w.Write([]byte("{}"))
		default:
			orthErr(405, "Method not allowed")
		}
	default:
		orthErr(404, "Unknown resource")
	}
}

// expand renders an entry as GET servers?expand does in Orthanc 1.10.
func expand(def map[string]any) map[string]any {
	out := map[string]any{"HttpHeaders": []string{}, "Pkcs11": false, "Timeout": 0}
	for k, v := range def {
		switch k {
		case "Url", "Pkcs11", "Timeout", "Username":
			out[k] = v
		case "Password":
			out[k] = nil
		case "HttpHeaders":
			out[k] = slices.Sorted(maps.Keys(v.(map[string]any)))
		default:
			switch x := v.(type) {
			case bool:
				if x {
					out[k] = "1"
				} else {
					out[k] = "0"
				}
			case float64:
				out[k] = fmt.Sprint(x)
			default:
				out[k] = x
			}
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Clock is a settable test clock.
type Clock = clocktest.Clock

// NewClock starts at t.
func NewClock(t time.Time) *Clock { return clocktest.New(t) }
