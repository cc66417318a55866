package fakegcp

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"maps"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// TokenInfo describes an access token a fake issued.
type TokenInfo struct {
	Principal string
	Scopes    []string
	Expiry    time.Time
	KeyID     string // service-account key that signed the grant; "" for other grants
}

// HasScope reports whether the token carries any of the given scopes.
func (t TokenInfo) HasScope(scopes ...string) bool {
	for _, s := range scopes {
		if slices.Contains(t.Scopes, s) {
			return true
		}
	}
	return false
}

// Scope URLs the fakes check.
const (
	ScopeCloudPlatform   = "https://www.googleapis.com/auth/cloud-platform"
	ScopeCloudHealthcare = "https://www.googleapis.com/auth/cloud-healthcare"
	ScopeUserinfoEmail   = "https://www.googleapis.com/auth/userinfo.email"
)

const (
	jwtBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	// maxAssertionLife is Google's limit on exp-iat of a JWT-bearer assertion.
	maxAssertionLife = time.Hour
	// clockSkew is the tolerance applied to iat and exp.
	clockSkew = 60 * time.Second
)

type saKey struct {
	id       string
	email    string
	pub      *rsa.PublicKey
	disabled bool
}

type refreshGrant struct {
	principal string
	scopes    []string
}

// TokenServer is the OAuth2 token endpoint (oauth2.googleapis.com/token): POST /token.
// It also answers GET /tokeninfo?access_token=T like oauth2.googleapis.com/tokeninfo.
type TokenServer struct {
	hs httpServer

	mu           sync.Mutex
	now          func() time.Time
	lifetime     time.Duration
	lifetimes    map[string]time.Duration // SetLifetimeFor, by principal
	latency      time.Duration
	fail         failer
	slow         slower
	injected     int               // answers failed by FailNext
	slowed       int               // answers delayed by SlowNext
	keys         map[string]*saKey // by private_key_id
	clientID     string
	clientSecret string
	refresh      map[string]*refreshGrant // by refresh token
	tokens       map[string]TokenInfo     // by access token
	minted       map[string]int           // by principal
	mintedByKey  map[string]int
	requests     int
	log          *slog.Logger
}

// NewTokenServer returns a token endpoint with no keys or users; Start it to serve.
func NewTokenServer() *TokenServer {
	return &TokenServer{
		now:          time.Now,
		lifetime:     time.Hour,
		lifetimes:    map[string]time.Duration{},
		keys:         map[string]*saKey{},
		clientID:     fmt.Sprintf("%s-fake%s.apps.googleusercontent.com", randomDigits(12), strings.ToLower(randomToken(6))),
		clientSecret: "GOCSPX-" + randomToken(21),
		refresh:      map[string]*refreshGrant{},
		tokens:       map[string]TokenInfo{},
		minted:       map[string]int{},
		mintedByKey:  map[string]int{},
		log:          discardLogger(),
	}
}

// Start listens on addr (like "127.0.0.1:0") and serves until Close.
func (s *TokenServer) Start(addr string) error { return s.hs.start(addr, s) }

// URL is "http://127.0.0.1:PORT".
func (s *TokenServer) URL() string { return s.hs.url() }

// TokenURL is URL()+"/token", the token_uri written into credential JSON.
func (s *TokenServer) TokenURL() string { return s.URL() + "/token" }

// Close stops serving.
func (s *TokenServer) Close() error { return s.hs.close() }

// SetNow injects the clock used for assertion checks and token expiry (default time.Now).
func (s *TokenServer) SetNow(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now == nil {
		now = time.Now
	}
	s.now = now
}

// Now is the injected clock's current time; the other fakes judge expiry with it.
func (s *TokenServer) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now()
}

// SetLifetime sets the lifetime of tokens minted by /token (default 1h).
func (s *TokenServer) SetLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime = d
}

// SetLifetimeFor sets the lifetime of the tokens minted for one principal
// (a service account's email or an authorized user) by /token, and by Issue
// without a lifetime, overriding SetLifetime; d <= 0 removes the override. Tests use it to give stores
// different refresh schedules.
func (s *TokenServer) SetLifetimeFor(principal string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d <= 0 {
		delete(s.lifetimes, principal)
		return
	}
	s.lifetimes[principal] = d
}

// Lifetime is the lifetime of tokens minted by /token.
func (s *TokenServer) Lifetime() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lifetime
}

// SetLatency delays every /token answer by d (real time).
func (s *TokenServer) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// SetLogger sets where the server logs (never token or key values). Default: discard.
func (s *TokenServer) SetLogger(l *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = l
}

// FailNext makes the next n token requests answer status with an OAuth2 JSON error
// (n < 0: every request until FailNext(0, 0)). Status 0 means 503.
func (s *TokenServer) FailNext(n int, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = failer{n: n, status: status}
}

// SlowNext delays each of the next n token answers by d (real time), on top
// of SetLatency, whatever the answer (an injected failure is delayed too); n < 0:
// every answer until SlowNext(0, 0). The caller's context ending cuts the wait
// short, as a client that gives up would see it.
func (s *TokenServer) SlowNext(n int, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d < 0 {
		d = 0
	}
	s.slow = slower{n: n, d: d}
}

// InjectedFailures counts the token answers that FailNext made fail.
func (s *TokenServer) InjectedFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.injected
}

// SlowedAnswers counts the token answers that SlowNext delayed.
func (s *TokenServer) SlowedAnswers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.slowed
}

// NewServiceAccountKey makes an RSA-2048 key for email, registers its public half, and
// returns a real service_account JSON whose token_uri is TokenURL().
func (s *TokenServer) NewServiceAccountKey(email string) (credJSON []byte, keyID string, err error) {
	if email == "" {
		return nil, "", fmt.Errorf("fakegcp: empty service account email")
	}
	if s.URL() == "" {
		return nil, "", fmt.Errorf("fakegcp: start the token server before making keys (token_uri needs its URL)")
	}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, "", err
	}
	return s.NewServiceAccountKeyFrom(email, priv)
}

// NewServiceAccountKeyFrom is NewServiceAccountKey with the RSA key given:
// a load generator making tens of thousands of accounts reuses a few keys
// (generating one costs about 100 ms). Each call is still its own key id
// and its grants are counted apart (MintedByKey).
func (s *TokenServer) NewServiceAccountKeyFrom(email string, priv *rsa.PrivateKey) (credJSON []byte, keyID string, err error) {
	if email == "" {
		return nil, "", fmt.Errorf("fakegcp: empty service account email")
	}
	if s.URL() == "" {
		return nil, "", fmt.Errorf("fakegcp: start the token server before making keys (token_uri needs its URL)")
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, "", err
	}
	idBytes := make([]byte, 20)
	if _, err := rand.Read(idBytes); err != nil {
		return nil, "", err
	}
	keyID = hex.EncodeToString(idBytes)
	project := projectOfEmail(email)
	clientID := randomDigits(21)
	doc := map[string]string{
		"type":                        "service_account",
		"project_id":                  project,
		"private_key_id":              keyID,
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                email,
		"client_id":                   clientID,
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   s.TokenURL(),
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"client_x509_cert_url":        "https://www.googleapis.com/robot/v1/metadata/x509/" + strings.ReplaceAll(email, "@", "%40"),
		"universe_domain":             "googleapis.com",
	}
	credJSON, err = json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, "", err
	}
	s.mu.Lock()
	s.keys[keyID] = &saKey{id: keyID, email: email, pub: &priv.PublicKey}
	log := s.log
	s.mu.Unlock()
	log.Info("fakegcp: service account key created", "email", email, "key_id", keyID)
	return credJSON, keyID, nil
}

// DisableKey makes JWT grants signed with that key answer 400 invalid_grant.
func (s *TokenServer) DisableKey(keyID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[keyID]; ok {
		k.disabled = true
	}
}

// EnableKey undoes DisableKey.
func (s *TokenServer) EnableKey(keyID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[keyID]; ok {
		k.disabled = false
	}
}

// KeyIDs lists the key ids registered for email (enabled or not).
func (s *TokenServer) KeyIDs(email string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, k := range s.keys {
		if k.email == email {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// HasServiceAccount reports whether any key was ever made for email.
func (s *TokenServer) HasServiceAccount(email string) bool {
	return len(s.KeyIDs(email)) > 0
}

// OAuthClient is the client id and secret authorized-user credentials carry.
func (s *TokenServer) OAuthClient() (clientID, clientSecret string) {
	return s.clientID, s.clientSecret
}

// NewAuthorizedUser returns authorized_user JSON (type, client_id, client_secret,
// refresh_token, token_uri) whose refresh-token grant mints tokens for principal
// with the cloud-platform and userinfo.email scopes, as gcloud's ADC login grants.
func (s *TokenServer) NewAuthorizedUser(principal string) (credJSON []byte, err error) {
	if principal == "" {
		return nil, fmt.Errorf("fakegcp: empty principal")
	}
	if s.URL() == "" {
		return nil, fmt.Errorf("fakegcp: start the token server before making users (token_uri needs its URL)")
	}
	rt := "1//0fake-" + randomToken(48)
	s.mu.Lock()
	s.refresh[rt] = &refreshGrant{principal: principal, scopes: []string{ScopeCloudPlatform, ScopeUserinfoEmail, "openid"}}
	log := s.log
	s.mu.Unlock()
	log.Info("fakegcp: authorized user created", "principal", principal)
	return json.MarshalIndent(map[string]string{
		"type":            "authorized_user",
		"client_id":       s.clientID,
		"client_secret":   s.clientSecret,
		"refresh_token":   rt,
		"token_uri":       s.TokenURL(),
		"universe_domain": "googleapis.com",
	}, "", "  ")
}

// RevokeAuthorizedUser revokes every refresh token issued so far for principal: refresh
// grants with them answer 400 invalid_grant. A later NewAuthorizedUser works again.
func (s *TokenServer) RevokeAuthorizedUser(principal string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for rt, g := range s.refresh {
		if g.principal == principal {
			delete(s.refresh, rt)
		}
	}
}

// Minted counts tokens minted for principal, all grant kinds (JWT, refresh, Issue).
func (s *TokenServer) Minted(principal string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.minted[principal]
}

// MintedByKey counts tokens minted by JWT grants signed with keyID.
func (s *TokenServer) MintedByKey(keyID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mintedByKey[keyID]
}

// Requests counts POST /token requests, failed ones included.
func (s *TokenServer) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// MintedCounts snapshots Minted for every principal.
func (s *TokenServer) MintedCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.minted)
}

// MintedByKeyCounts snapshots MintedByKey for every key.
func (s *TokenServer) MintedByKeyCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.mintedByKey)
}

// Issue mints a token directly (used by the IAM and metadata fakes). lifetime <= 0 means
// the server's lifetime.
func (s *TokenServer) Issue(principal string, scopes []string, lifetime time.Duration) (token string, expiry time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issueLocked(principal, scopes, lifetime, "")
}

func (s *TokenServer) issueLocked(principal string, scopes []string, lifetime time.Duration, keyID string) (string, time.Time) {
	if lifetime <= 0 {
		lifetime = s.lifetime
		if d, ok := s.lifetimes[principal]; ok {
			lifetime = d
		}
	}
	tok := "ya29.fake-" + randomToken(32)
	exp := s.now().Add(lifetime)
	s.tokens[tok] = TokenInfo{Principal: principal, Scopes: slices.Clone(scopes), Expiry: exp, KeyID: keyID}
	s.minted[principal]++
	if keyID != "" {
		s.mintedByKey[keyID]++
	}
	return tok, exp
}

// Introspect describes a token this server issued; ok=false for unknown. The caller
// checks expiry (against Now()).
func (s *TokenServer) Introspect(token string) (TokenInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ti, ok := s.tokens[token]
	ti.Scopes = slices.Clone(ti.Scopes)
	return ti, ok
}

// ByFingerprint returns the token this server minted whose audit
// fingerprint (wire.Fingerprint) is fp. The broker hands tokens out sealed,
// so tests find the plaintext of an audited issuance here.
func (s *TokenServer) ByFingerprint(fp string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok := range s.tokens {
		if wire.Fingerprint(tok) == fp {
			return tok, true
		}
	}
	return "", false
}

// Valid returns the token's info when it is known and unexpired by the injected clock.
func (s *TokenServer) Valid(token string) (TokenInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ti, ok := s.tokens[token]
	if !ok || !s.now().Before(ti.Expiry) {
		return TokenInfo{}, false
	}
	ti.Scopes = slices.Clone(ti.Scopes)
	return ti, true
}

// ServeHTTP serves POST /token and GET /tokeninfo.
func (s *TokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/token":
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "token endpoint requires POST")
			return
		}
		s.serveToken(w, r)
	case "/tokeninfo":
		s.serveTokenInfo(w, r)
	default:
		http.NotFound(w, r)
	}
}

// oauthError answers an RFC 6749 error body as Google's token endpoint does.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func injectedOAuthError(w http.ResponseWriter, status int) {
	code := "internal_failure"
	switch {
	case status == http.StatusBadRequest:
		code = "invalid_grant"
	case status == http.StatusUnauthorized:
		code = "invalid_client"
	case status == http.StatusTooManyRequests:
		code = "rate_limit_exceeded"
	case status == http.StatusServiceUnavailable:
		code = "temporarily_unavailable"
	case status < 500:
		code = "invalid_request"
	}
	oauthError(w, status, code, "fakegcp: injected failure")
}

func (s *TokenServer) serveToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	latency := s.latency
	if extra, ok := s.slow.take(); ok {
		latency += extra
		s.slowed++
	}
	st, failing := s.fail.take()
	if failing {
		s.injected++
	}
	log := s.log
	s.mu.Unlock()
	sleepCtx(r.Context(), latency)
	if failing {
		log.Info("fakegcp: token request failed by injection", "status", st)
		injectedOAuthError(w, st)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "could not parse the request body")
		return
	}
	switch gt := r.PostForm.Get("grant_type"); gt {
	case jwtBearerGrant:
		s.jwtGrant(w, r.PostForm.Get("assertion"))
	case "refresh_token":
		s.refreshGrant(w, r)
	case "":
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: ")
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type: "+gt)
	}
}

type jwtHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Kid string `json:"kid"`
}

type jwtClaims struct {
	Iss   string          `json:"iss"`
	Sub   string          `json:"sub"`
	Scope string          `json:"scope"`
	Aud   json.RawMessage `json:"aud"`
	Iat   int64           `json:"iat"`
	Exp   int64           `json:"exp"`
}

// audiences accepts "aud" as a string or an array of strings.
func (c jwtClaims) audiences() []string {
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		return []string{one}
	}
	var many []string
	_ = json.Unmarshal(c.Aud, &many)
	return many
}

const invalidSignature = "Invalid JWT Signature."

func (s *TokenServer) jwtGrant(w http.ResponseWriter, assertion string) {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid JWT: malformed assertion")
		return
	}
	var hdr jwtHeader
	var claims jwtClaims
	if err := decodeSegment(parts[0], &hdr); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid JWT: bad header")
		return
	}
	if err := decodeSegment(parts[1], &claims); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid JWT: bad claim set")
		return
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || hdr.Alg != "RS256" {
		oauthError(w, http.StatusBadRequest, "invalid_grant", invalidSignature)
		return
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))

	s.mu.Lock()
	defer s.mu.Unlock()
	// Look the key up by kid; without a kid, try every key of the issuer.
	var candidates []*saKey
	if hdr.Kid != "" {
		if k, ok := s.keys[hdr.Kid]; ok {
			candidates = append(candidates, k)
		}
	} else {
		for _, k := range s.keys {
			if k.email == claims.Iss {
				candidates = append(candidates, k)
			}
		}
	}
	var key *saKey
	for _, k := range candidates {
		if rsa.VerifyPKCS1v15(k.pub, crypto.SHA256, digest[:], sig) == nil {
			key = k
			break
		}
	}
	if key == nil {
		s.log.Info("fakegcp: JWT grant refused: unknown key or bad signature", "iss", claims.Iss, "key_id", hdr.Kid)
		oauthError(w, http.StatusBadRequest, "invalid_grant", invalidSignature)
		return
	}
	if key.disabled {
		s.log.Info("fakegcp: JWT grant refused: key disabled", "iss", claims.Iss, "key_id", key.id)
		oauthError(w, http.StatusBadRequest, "invalid_grant", invalidSignature)
		return
	}
	if claims.Iss != key.email {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid email or User ID")
		return
	}
	tokenURL := s.TokenURL()
	if !slices.Contains(claims.audiences(), tokenURL) {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid JWT: Failed audience check. The right audience is "+tokenURL)
		return
	}
	now := s.now()
	iat, exp := time.Unix(claims.Iat, 0), time.Unix(claims.Exp, 0)
	if claims.Iat == 0 || claims.Exp == 0 || !exp.After(iat) || exp.Sub(iat) > maxAssertionLife ||
		iat.After(now.Add(clockSkew)) || !exp.After(now.Add(-clockSkew)) {
		oauthError(w, http.StatusBadRequest, "invalid_grant",
			"Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
		return
	}
	if claims.Sub != "" && claims.Sub != claims.Iss {
		// Domain-wide delegation is not modelled.
		oauthError(w, http.StatusUnauthorized, "unauthorized_client",
			"Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.")
		return
	}
	scopes := strings.Fields(claims.Scope)
	if len(scopes) == 0 {
		oauthError(w, http.StatusBadRequest, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
		return
	}
	tok, expiry := s.issueLocked(key.email, scopes, 0, key.id)
	s.log.Info("fakegcp: token minted", "grant", "jwt-bearer", "principal", key.email, "key_id", key.id)
	writeTokenResponse(w, tok, expiry.Sub(now), scopes)
}

func (s *TokenServer) refreshGrant(w http.ResponseWriter, r *http.Request) {
	clientID, clientSecret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		clientID, clientSecret = u, p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if clientID != s.clientID {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "The OAuth client was not found.")
		return
	}
	if clientSecret != s.clientSecret {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "Unauthorized")
		return
	}
	g, ok := s.refresh[r.PostForm.Get("refresh_token")]
	if !ok {
		s.log.Info("fakegcp: refresh grant refused: unknown or revoked refresh token")
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Token has been expired or revoked.")
		return
	}
	scopes := g.scopes
	if sc := strings.Fields(r.PostForm.Get("scope")); len(sc) > 0 {
		for _, x := range sc {
			if !slices.Contains(g.scopes, x) {
				oauthError(w, http.StatusBadRequest, "invalid_scope", "Bad Request")
				return
			}
		}
		scopes = sc
	}
	tok, expiry := s.issueLocked(g.principal, scopes, 0, "")
	s.log.Info("fakegcp: token minted", "grant", "refresh_token", "principal", g.principal)
	writeTokenResponse(w, tok, expiry.Sub(s.now()), scopes)
}

func writeTokenResponse(w http.ResponseWriter, tok string, life time.Duration, scopes []string) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"token_type":   "Bearer",
		"expires_in":   int64(life.Round(time.Second) / time.Second),
		"scope":        strings.Join(scopes, " "),
	})
}

func (s *TokenServer) serveTokenInfo(w http.ResponseWriter, r *http.Request) {
	tok := r.FormValue("access_token")
	ti, ok := s.Valid(tok)
	if !ok {
		oauthError(w, http.StatusBadRequest, "invalid_token", "Invalid Value")
		return
	}
	left := ti.Expiry.Sub(s.Now())
	writeJSON(w, http.StatusOK, map[string]any{
		"email":      ti.Principal,
		"scope":      strings.Join(ti.Scopes, " "),
		"exp":        fmt.Sprint(ti.Expiry.Unix()),
		"expires_in": fmt.Sprint(int64(left / time.Second)),
	})
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// projectOfEmail extracts P from "name@P.iam.gserviceaccount.com".
func projectOfEmail(email string) string {
	_, dom, ok := strings.Cut(email, "@")
	if p, ok2 := strings.CutSuffix(dom, ".iam.gserviceaccount.com"); ok && ok2 && p != "" {
		return p
	}
	return "fake-project"
}

func randomDigits(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		d, err := rand.Int(rand.Reader, big.NewInt(10))
		if err != nil {
			panic("fakegcp: crypto/rand failed: " + err.Error())
		}
		if i == 0 && d.Int64() == 0 {
			d = big.NewInt(1)
		}
		b.WriteByte(byte('0' + d.Int64()))
	}
	return b.String()
}
