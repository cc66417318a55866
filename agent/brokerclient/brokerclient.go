// Package brokerclient is where the agent pulls tokens: it calls the
// broker's v1 API (GET /v1/stores, POST /v1/tokens) with a fresh EdDSA
// assertion on every request, verifies TLS, caps response sizes and
// classifies failures as retryable or not. Tokens never appear in its
// errors or in their string forms.
package brokerclient

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/tokenseal"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// MaxResponseBytes caps every broker answer; a token list for a few
// hundred stores is far below it.
const MaxResponseBytes = 1 << 20

// Secret is a string that must not be printed: its String, GoString and
// JSON forms are redacted. Use string(s) where the real value is needed.
type Secret string

// String returns a fixed placeholder.
func (Secret) String() string { return "[redacted]" }

// GoString returns a fixed placeholder (for %#v).
func (Secret) GoString() string { return "[redacted]" }

// MarshalJSON writes a fixed placeholder.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

// Store is one entry of GET /v1/stores. Its name is not checked against
// wire.StoreNameRule here: the reconcile loop refuses, and reports, the names
// that fail it.
type Store = wire.Store

// Token is one issued access token, checked and parsed: unlike
// wire.Token its access token is a Secret and its expiry a time.
type Token struct {
	Store       string
	AccessToken Secret
	TokenType   string
	ExpiresAt   time.Time
	DicomWebURL string
}

// StoreError is a per-store failure from POST /v1/tokens (Code is one of
// the wire.Code* words), or a token item the agent refused (Code is
// CodeBadResponse).
type StoreError = wire.StoreError

// CodeBadResponse is the StoreError code of a token item the agent refused.
// It is not a broker word: the broker never sends it.
const CodeBadResponse = ReasonBadResponse

// Tokens is the answer of POST /v1/tokens.
type Tokens struct {
	Tokens []Token
	Errors []StoreError
}

// Failure reasons: a small fixed set, safe as metric label values.
const (
	ReasonTransport       = "broker_unreachable"
	ReasonServerError     = "broker_error"
	ReasonRateLimited     = "rate_limited"
	ReasonUnauthenticated = "unauthenticated"
	ReasonForbidden       = "forbidden"
	ReasonRejected        = "rejected"
	ReasonBadResponse     = "bad_response"
)

// Reasons lists every value Reason can return, so a metric can
// pre-register them.
func Reasons() []string {
	return []string{ReasonTransport, ReasonServerError, ReasonRateLimited, ReasonUnauthenticated,
		ReasonForbidden, ReasonRejected, ReasonBadResponse}
}

// Error is a failed broker call.
type Error struct {
	Op     string // "GET /v1/stores"
	Status int    // 0 for transport errors
	Code   string // the broker's error word (wire.Code*), if any
	Msg    string
	// Reason is one of the Reason* constants.
	Reason string
	// Retryable is true for transport errors, 5xx, 429 and unreadable
	// answers: trying again later may succeed. 401/403/4xx are not.
	Retryable bool
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("broker ")
	b.WriteString(e.Op)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Msg != "" {
		b.WriteString(": " + e.Msg)
	}
	return b.String()
}

// IsRetryable reports whether err is worth retrying soon.
func IsRetryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable
	}
	return !errors.Is(err, context.Canceled)
}

// Reason returns the failure reason of err (ReasonTransport if unknown).
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonTransport
}

// Options configure a Client.
type Options struct {
	// URL is Broker.Url as configured; requests go to URL/v1/..., and the
	// assertion's aud is URL unchanged.
	URL     string
	AgentID string
	// Key signs the assertions: an ed25519.PrivateKey (EdDSA) or any
	// crypto.Signer of a P-256 key, such as a TPM key (ES256).
	Key crypto.Signer
	// CAFile, when set, is a PEM bundle used instead of the system roots.
	CAFile  string
	Timeout time.Duration
	// Now is the clock for assertions; nil means time.Now.
	Now func() time.Time
	// Transport overrides the HTTP transport (tests); CAFile is then ignored.
	Transport http.RoundTripper
}

// Client talks to one broker.
type Client struct {
	base, aud, agentID string
	key                crypto.Signer
	now                func() time.Time
	http               *http.Client
}

// New builds a Client; it fails if CAFile cannot be used.
func New(o Options) (*Client, error) {
	if o.URL == "" || o.AgentID == "" || !usableKey(o.Key) {
		return nil, errors.New("brokerclient: URL, AgentID and Key (Ed25519 or ECDSA P-256) are required")
	}
	rt := o.Transport
	if rt == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if o.CAFile != "" {
			pem, err := os.ReadFile(o.CAFile)
			if err != nil {
				return nil, fmt.Errorf("brokerclient: HttpsCACertificates: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("brokerclient: HttpsCACertificates: %s holds no usable PEM certificate", o.CAFile)
			}
			tr.TLSClientConfig.RootCAs = pool
		}
		rt = tr
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	return &Client{
		base:    strings.TrimSuffix(o.URL, "/"),
		aud:     o.URL,
		agentID: o.AgentID,
		key:     o.Key,
		now:     now,
		http: &http.Client{
			Transport: rt,
			Timeout:   timeout,
			// A redirect would carry the assertion elsewhere; the API has none.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// usableKey reports whether key can sign an assertion: a whole Ed25519
// private key, or a signer of a P-256 public key.
func usableKey(key crypto.Signer) bool {
	switch k := key.(type) {
	case nil:
		return false
	case ed25519.PrivateKey:
		return len(k) == ed25519.PrivateKeySize
	}
	pub, ok := key.Public().(*ecdsa.PublicKey)
	return ok && pub != nil && pub.Curve != nil && pub.Curve.Params().Name == "P-256"
}

// CloseIdleConnections closes the pooled idle connections to the broker.
// The reconcile loop calls it on the client a reload replaces, so the old
// pool does not linger until its idle timeout.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Stores returns the stores the broker grants this agent.
func (c *Client) Stores(ctx context.Context) ([]Store, error) {
	const op = http.MethodGet + " " + wire.PathStores
	var out wire.StoresResponse
	if err := c.do(ctx, http.MethodGet, wire.PathStores, nil, nil, &out); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, s := range out.Stores {
		if s.Name == "" || seen[s.Name] {
			return nil, &Error{Op: op, Reason: ReasonBadResponse, Retryable: true, Msg: "store list has an empty or repeated name"}
		}
		seen[s.Name] = true
	}
	return out.Stores, nil
}

// Tokens asks for tokens of the named stores. names must not be empty
// (the API reads an empty list as "all stores") and each must match
// wire.StoreNameRule. Per-store failures are in Tokens.Errors; items that fail
// validation are moved there too.
func (c *Client) Tokens(ctx context.Context, names []string) (*Tokens, error) {
	if len(names) == 0 {
		return nil, errors.New("brokerclient: Tokens needs at least one store name")
	}
	for _, n := range names {
		if !wire.ValidStoreName(n) {
			return nil, fmt.Errorf("brokerclient: store name %q does not match %s", logtext.Clip(n), wire.StoreNameRule)
		}
	}
	// A key for this request only: the broker seals every token of the
	// answer to it, so the answer is useless to anyone who replays the
	// request. The private half lives in memory until this call returns.
	recipient, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, &Error{Op: http.MethodPost + " " + wire.PathTokens, Reason: ReasonRejected, Msg: "cannot make the request's X25519 key"}
	}
	body, _ := json.Marshal(wire.TokenRequest{Stores: names})
	var raw json.RawMessage
	if err := c.do(ctx, http.MethodPost, wire.PathTokens, body, recipient.PublicKey(), &raw); err != nil {
		return nil, err
	}
	return decodeTokens(names, raw, recipient)
}

// tokenAnswer is the answer of POST /v1/tokens as the agent decodes it:
// wire's shape, plus the plaintext field an old or wrong broker would send,
// so that such an answer is refused, never used.
type tokenAnswer struct {
	Tokens []struct {
		wire.Token
		Plaintext json.RawMessage `json:"access_token"`
	} `json:"tokens"`
	Errors []wire.StoreError `json:"errors"`
}

// decodeTokens is what Tokens does with a 200 answer's body: decode it as
// do does, open each sealed token with recipient, then check it. The fuzz
// target drives it.
func decodeTokens(asked []string, data []byte, recipient *ecdh.PrivateKey) (*Tokens, error) {
	const op = http.MethodPost + " " + wire.PathTokens
	var ans tokenAnswer
	if err := decode(op, data, &ans); err != nil {
		return nil, err
	}
	out := &wire.TokenResponse{Errors: ans.Errors}
	var opened []Secret
	for _, t := range ans.Tokens {
		if t.Plaintext != nil {
			return nil, &Error{Op: op, Status: http.StatusOK, Reason: ReasonBadResponse, Retryable: true,
				Msg: "the answer carries a plaintext " + wire.PlaintextTokenField + " field: the broker is too old or not this agent's (tokens must come sealed)"}
		}
		out.Tokens = append(out.Tokens, t.Token)
		plain, err := tokenseal.Open(recipient, t.Store, t.SealedAccessToken)
		if err != nil {
			plain = "" // checkTokens refuses the item
		}
		opened = append(opened, Secret(plain))
	}
	return checkTokens(asked, out, opened), nil
}

// minRedactLen is the shortest access token value that is scrubbed from
// the text of the answer's errors; shorter strings would mangle ordinary
// words.
const minRedactLen = 8

// checkTokens turns the decoded answer of POST /v1/tokens into Tokens;
// opened[i] is the plaintext of out.Tokens[i], "" when it could not be
// opened. It trusts nothing in the answer: a token item becomes a Token
// only if it is for a store in asked and its token, type, expiry and URL
// pass; anything else is a StoreError (or ignored, for stores not asked).
// Every access token value of the answer is scrubbed from the error texts,
// so a broker that echoes a token in a message cannot put it into the
// agent's logs.
func checkTokens(asked []string, out *wire.TokenResponse, opened []Secret) *Tokens {
	want := make(map[string]bool, len(asked))
	for _, n := range asked {
		want[n] = true
	}
	var secrets []string
	for _, o := range opened {
		// The value, and the forms logtext.Clip can turn it into.
		tok := string(o)
		clipped := strings.TrimSuffix(logtext.Clip(tok), "…")
		for _, v := range []string{tok, clipped, strings.TrimSpace(clipped)} {
			if len(v) >= minRedactLen {
				secrets = append(secrets, v)
			}
		}
	}
	res := &Tokens{}
	for _, e := range out.Errors {
		if !want[e.Store] {
			continue // not asked for: nothing of the agent's to report
		}
		e.Code, e.Message = scrubClip(e.Code, secrets), scrubClip(e.Message, secrets)
		res.Errors = append(res.Errors, e)
	}
	for i, t := range out.Tokens {
		tok := string(opened[i])
		bad := func(msg string) {
			res.Errors = append(res.Errors, StoreError{Store: t.Store, Code: CodeBadResponse, Message: scrubClip(msg, secrets)})
		}
		exp, err := time.Parse(time.RFC3339, t.ExpiresAt)
		urlErr := urlrule.CheckBearerURL(t.DicomWebURL)
		switch {
		case !want[t.Store]:
			continue // not asked for: ignore rather than manage it
		case tok == "":
			bad("sealed_access_token cannot be opened with this request's key for this store")
		case strings.ContainsFunc(tok, notTokenChar):
			bad("the opened access token has characters not allowed in an HTTP header")
		case !strings.EqualFold(t.TokenType, wire.TokenType):
			bad(fmt.Sprintf("token_type %q is not %s", logtext.Clip(t.TokenType), wire.TokenType))
		case err != nil:
			bad("expires_at is not an RFC 3339 time")
		case urlErr != nil:
			bad(fmt.Sprintf("dicomweb_url %v", urlErr))
		default:
			res.Tokens = append(res.Tokens, Token{
				Store: t.Store, AccessToken: Secret(tok), TokenType: wire.TokenType,
				ExpiresAt: exp, DicomWebURL: t.DicomWebURL,
			})
		}
	}
	return res
}

// scrubClip is s scrubbed of secrets, clipped for a log line, and
// scrubbed again (clipping can turn a secret's control characters into
// the spaces of one of its other forms).
func scrubClip(s string, secrets []string) string {
	return scrub(logtext.Clip(scrub(s, secrets)), secrets)
}

// scrub replaces every secret in s with "[redacted]". Should a secret
// still be found afterwards (the replacement can join with the text around
// it), the whole text is dropped.
func scrub(s string, secrets []string) string {
	for _, sec := range secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			return ""
		}
	}
	return s
}

// notTokenChar rejects anything that could break or smuggle into the
// Authorization header Orthanc will send.
func notTokenChar(r rune) bool { return r <= ' ' || r >= 0x7f }

// do makes one call. recipient, when not nil, is the request's X25519 key,
// carried in the assertion's cnf claim.
func (c *Client) do(ctx context.Context, method, path string, body []byte, recipient *ecdh.PublicKey, out any) error {
	op := method + " " + path
	jwt, err := assertion.Sign(c.key, c.agentID, c.aud, c.now(), assertion.DefaultLifetime, recipient)
	if err != nil {
		return &Error{Op: op, Reason: ReasonRejected, Msg: "cannot sign assertion"}
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return &Error{Op: op, Reason: ReasonRejected, Msg: "bad request URL"}
	}
	req.Header.Set("Authorization", "Bearer "+jwt)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// url.Error holds the URL (no secrets: the assertion is a header).
		return &Error{Op: op, Reason: ReasonTransport, Retryable: true, Msg: transportMsg(err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return &Error{Op: op, Status: resp.StatusCode, Reason: ReasonTransport, Retryable: true, Msg: "reading answer: " + transportMsg(err)}
	}
	if len(data) > MaxResponseBytes {
		return &Error{Op: op, Status: resp.StatusCode, Reason: ReasonBadResponse, Retryable: true, Msg: fmt.Sprintf("answer larger than %d bytes", MaxResponseBytes)}
	}
	if resp.StatusCode != http.StatusOK {
		return statusError(op, resp.StatusCode, data)
	}
	return decode(op, data, out)
}

// decode reads a 200 answer. Unknown fields are allowed: a newer broker
// may add some.
func decode(op string, data []byte, out any) error {
	if err := json.Unmarshal(data, out); err != nil {
		return &Error{Op: op, Status: http.StatusOK, Reason: ReasonBadResponse, Retryable: true, Msg: "answer is not the expected JSON"}
	}
	return nil
}

func statusError(op string, status int, data []byte) error {
	var body wire.ErrorResponse
	_ = json.Unmarshal(data, &body) // a proxy's HTML page is not echoed
	e := &Error{Op: op, Status: status, Code: logtext.Clip(body.Error.Code), Msg: logtext.Clip(body.Error.Message)}
	switch {
	case status == http.StatusTooManyRequests:
		e.Reason, e.Retryable = ReasonRateLimited, true
	case status >= 500:
		e.Reason, e.Retryable = ReasonServerError, true
	case status == http.StatusUnauthorized:
		e.Reason = ReasonUnauthenticated
	case status == http.StatusForbidden:
		e.Reason = ReasonForbidden
	default:
		e.Reason = ReasonRejected
	}
	return e
}

func transportMsg(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return logtext.Clip(err.Error())
}
