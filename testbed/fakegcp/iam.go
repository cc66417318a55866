package fakegcp

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/iam/credentials/apiv1/credentialspb"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Lifetime bounds of generateAccessToken (12 h needs an org policy at Google; allowed here).
const (
	iamDefaultLifetime = time.Hour
	iamMaxLifetime     = 12 * time.Hour
)

// IAMCredentials serves the REST IAM Credentials API:
// POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken, as the generated client
// cloud.google.com/go/iam/credentials/apiv1 NewIamCredentialsRESTClient (and
// google.golang.org/api/impersonate) send it.
type IAMCredentials struct {
	hs     httpServer
	tokens *TokenServer

	mu       sync.Mutex
	allowed  map[[2]string]bool // {caller, target}
	accounts map[string]bool    // service accounts known to exist
	deleted  map[string]bool
	fail     failer
	calls    map[string]int
	log      *slog.Logger
}

// NewIAMCredentials returns the IAM Credentials fake; callers authenticate with tokens
// issued by tokens, and minted tokens are issued by it.
func NewIAMCredentials(tokens *TokenServer) *IAMCredentials {
	return &IAMCredentials{
		tokens:   tokens,
		allowed:  map[[2]string]bool{},
		accounts: map[string]bool{},
		deleted:  map[string]bool{},
		calls:    map[string]int{},
		log:      discardLogger(),
	}
}

// Start listens on addr (like "127.0.0.1:0") and serves until Close.
func (s *IAMCredentials) Start(addr string) error { return s.hs.start(addr, s) }

// URL is "http://127.0.0.1:PORT", the value for option.WithEndpoint.
func (s *IAMCredentials) URL() string { return s.hs.url() }

// Close stops serving.
func (s *IAMCredentials) Close() error { return s.hs.close() }

// SetLogger sets where the server logs (never token values). Default: discard.
func (s *IAMCredentials) SetLogger(l *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = l
}

// AllowCaller grants caller roles/iam.serviceAccountTokenCreator on target (and makes
// target a known service account).
func (s *IAMCredentials) AllowCaller(caller, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allowed[[2]string{caller, target}] = true
	s.accounts[target] = true
}

// RevokeCaller removes a binding made by AllowCaller.
func (s *IAMCredentials) RevokeCaller(caller, target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.allowed, [2]string{caller, target})
}

// DeleteServiceAccount makes target answer 404 to callers that hold a binding on it
// (callers without one still get 403, as Google does not reveal existence).
func (s *IAMCredentials) DeleteServiceAccount(target string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleted[target] = true
}

// FailNext makes the next n calls answer status with a Google JSON error
// (n < 0: until FailNext(0, 0)). Status 0 means 503.
func (s *IAMCredentials) FailNext(n int, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = failer{n: n, status: status}
}

// Calls counts generateAccessToken calls naming target, every outcome included.
func (s *IAMCredentials) Calls(target string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[target]
}

// CallCounts snapshots Calls for every target.
func (s *IAMCredentials) CallCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.calls))
	for k, v := range s.calls {
		out[k] = v
	}
	return out
}

// parseSAResource accepts "projects/{-|P}/serviceAccounts/EMAIL" and returns EMAIL.
func parseSAResource(name string) (string, bool) {
	p := strings.Split(name, "/")
	if len(p) != 4 || p[0] != "projects" || p[1] == "" || p[2] != "serviceAccounts" || !strings.Contains(p[3], "@") {
		return "", false
	}
	return p[3], true
}

func (s *IAMCredentials) permissionDenied(w http.ResponseWriter, target string) {
	writeGoogleError(w, http.StatusForbidden,
		"Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
		map[string]any{
			"@type":  "type.googleapis.com/google.rpc.ErrorInfo",
			"reason": "IAM_PERMISSION_DENIED",
			"domain": "iam.googleapis.com",
			"metadata": map[string]string{
				"permission": "iam.serviceAccounts.getAccessToken",
			},
		})
	s.log.Info("fakegcp: generateAccessToken denied", "target", target)
}

// ServeHTTP serves generateAccessToken.
func (s *IAMCredentials) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Path: /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken (the generated client
	// sends '@' unescaped; decoding also accepts %40).
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	if !ok {
		writeGoogleError(w, http.StatusNotFound, "Not found.")
		return
	}
	resource, method, ok := strings.Cut(rest, ":")
	if !ok || method != "generateAccessToken" {
		writeGoogleError(w, http.StatusNotFound, "Method not found.")
		return
	}
	if r.Method != http.MethodPost {
		writeGoogleError(w, http.StatusMethodNotAllowed, "Method not allowed.")
		return
	}
	target, ok := parseSAResource(resource)
	s.mu.Lock()
	if ok {
		s.calls[target]++
	}
	st, failing := s.fail.take()
	s.mu.Unlock()
	if failing {
		writeGoogleError(w, st, "fakegcp: injected failure")
		return
	}
	if !ok {
		writeGoogleError(w, http.StatusBadRequest, fmt.Sprintf("Invalid form of account ID %s. Should be [Gaia ID |Email |Unique ID |] of the account", resource))
		return
	}

	tok, hasTok := bearerToken(r)
	var caller TokenInfo
	if hasTok {
		caller, hasTok = s.tokens.Valid(tok)
	}
	if !hasTok {
		writeGoogleError(w, http.StatusUnauthorized, "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.")
		return
	}
	if !caller.HasScope(ScopeCloudPlatform, "https://www.googleapis.com/auth/iam") {
		writeGoogleError(w, http.StatusForbidden, "Request had insufficient authentication scopes.")
		return
	}

	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		writeGoogleError(w, http.StatusBadRequest, "could not read request body")
		return
	}
	var req credentialspb.GenerateAccessTokenRequest
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &req); err != nil {
		writeGoogleError(w, http.StatusBadRequest, "Invalid JSON payload received.")
		return
	}
	if len(req.GetScope()) == 0 {
		writeGoogleError(w, http.StatusBadRequest, "Scope required.")
		return
	}
	lifetime := iamDefaultLifetime
	if req.GetLifetime() != nil {
		lifetime = req.GetLifetime().AsDuration()
		if lifetime < time.Second || lifetime > iamMaxLifetime {
			writeGoogleError(w, http.StatusBadRequest, fmt.Sprintf("The lifetime must be between 1s and %ds.", int(iamMaxLifetime/time.Second)))
			return
		}
	}

	// Delegation chain: caller -> delegates[0] -> ... -> target, each hop a binding.
	chain := []string{caller.Principal}
	for _, d := range req.GetDelegates() {
		email, ok := parseSAResource(d)
		if !ok {
			writeGoogleError(w, http.StatusBadRequest, "Invalid delegate "+d)
			return
		}
		chain = append(chain, email)
	}
	chain = append(chain, target)
	s.mu.Lock()
	var denied bool
	for i := 0; i+1 < len(chain); i++ {
		if !s.allowed[[2]string{chain[i], chain[i+1]}] {
			denied = true
		}
	}
	gone := s.deleted[target] || !(s.accounts[target] || s.tokens.HasServiceAccount(target))
	s.mu.Unlock()
	if denied {
		s.permissionDenied(w, target)
		return
	}
	if gone {
		writeGoogleError(w, http.StatusNotFound, fmt.Sprintf("Not found; Gaia id not found for email %s", target))
		return
	}

	access, expiry := s.tokens.Issue(target, req.GetScope(), lifetime)
	s.log.Info("fakegcp: impersonated token minted", "caller", caller.Principal, "target", target, "lifetime", lifetime.String())
	out, err := protojson.Marshal(&credentialspb.GenerateAccessTokenResponse{
		AccessToken: access,
		ExpireTime:  timestamppb.New(expiry.UTC().Truncate(time.Second)),
	})
	if err != nil {
		writeGoogleError(w, http.StatusInternalServerError, "marshal failed")
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	_, _ = w.Write(out)
}
