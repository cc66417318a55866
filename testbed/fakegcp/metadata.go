package fakegcp

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// metadataRefreshBefore mirrors the real server: it hands out its cached token until
// it has less than about 5 minutes left, then fetches a new one.
const metadataRefreshBefore = 5 * time.Minute

// Metadata is the GCE/Cloud Run metadata server (for GCE_METADATA_HOST). It requires
// and answers "Metadata-Flavor: Google", refuses requests carrying X-Forwarded-For, and
// serves under /computeMetadata/v1/: instance/service-accounts/{default|EMAIL}/token
// (?scopes=a,b; tokens cached until 5 min before expiry, as the real server does),
// .../email, .../scopes, .../aliases, the account listing and ?recursive=true view,
// project/project-id, project/numeric-project-id, instance/id, instance/zone,
// instance/region and universe/universe-domain. That covers
// cloud.google.com/go/compute/metadata, x/oauth2/google's ComputeTokenSource and
// FindDefaultCredentials, and cloud.google.com/go/auth's detection.
type Metadata struct {
	hs        httpServer
	tokens    *TokenServer
	email     string
	projectID string
	numericID string

	mu       sync.Mutex
	defaults []string
	cache    map[string]cachedToken // by joined scopes
	requests int
	fail     failer
	log      *slog.Logger
}

type cachedToken struct {
	token  string
	expiry time.Time
}

// NewMetadata returns a metadata server whose default service account is email in projectID.
func NewMetadata(tokens *TokenServer, email, projectID string) *Metadata {
	return &Metadata{
		tokens:    tokens,
		email:     email,
		projectID: projectID,
		numericID: randomDigits(12),
		defaults:  []string{ScopeCloudPlatform, ScopeUserinfoEmail},
		cache:     map[string]cachedToken{},
		log:       discardLogger(),
	}
}

// Start listens on addr (like "127.0.0.1:0") and serves until Close.
func (s *Metadata) Start(addr string) error { return s.hs.start(addr, s) }

// Host is "127.0.0.1:PORT", the value for GCE_METADATA_HOST.
func (s *Metadata) Host() string { return s.hs.host() }

// Close stops serving.
func (s *Metadata) Close() error { return s.hs.close() }

// Email is the default service account's email.
func (s *Metadata) Email() string { return s.email }

// SetLogger sets where the server logs (never token values). Default: discard.
func (s *Metadata) SetLogger(l *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = l
}

// SetDefaultScopes sets the scopes of tokens requested without ?scopes= (default
// cloud-platform and userinfo.email, as Cloud Run grants).
func (s *Metadata) SetDefaultScopes(scopes []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.defaults = slices.Clone(scopes)
}

// FailNext makes the next n token requests answer status (n < 0: until FailNext(0, 0)).
// Status 0 means 503. Note the metadata client retries 5xx a few times.
func (s *Metadata) FailNext(n int, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = failer{n: n, status: status}
}

// TokenRequests counts token requests, cached answers included.
func (s *Metadata) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// ServeHTTP serves the metadata tree.
func (s *Metadata) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Metadata-Flavor", "Google")
	w.Header().Set("Server", "Metadata Server for VM")
	if r.Header.Get("X-Forwarded-For") != "" {
		http.Error(w, "Request denied: X-Forwarded-For header present.", http.StatusForbidden)
		return
	}
	if r.URL.Path == "/" {
		// The probe OnGCE makes without GCE_METADATA_HOST: answer like the real root.
		w.Header().Set("Content-Type", "application/text")
		_, _ = w.Write([]byte("computeMetadata/\n"))
		return
	}
	if r.Header.Get("Metadata-Flavor") != "Google" {
		http.Error(w, "Missing required header \"Metadata-Flavor\": \"Google\"", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet {
		http.Error(w, "Method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p, ok := strings.CutPrefix(r.URL.Path, "/computeMetadata/v1/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	recursive := r.URL.Query().Get("recursive") == "true"
	switch p {
	case "project/project-id":
		text(w, s.projectID)
	case "project/numeric-project-id":
		text(w, s.numericID)
	case "instance/id":
		text(w, "00"+s.numericID+"0000")
	case "instance/zone":
		text(w, "projects/"+s.numericID+"/zones/europe-west2-1")
	case "instance/region":
		text(w, "projects/"+s.numericID+"/regions/europe-west2")
	case "universe/universe-domain":
		text(w, "googleapis.com")
	case "instance/service-accounts", "instance/service-accounts/":
		text(w, "default/\n"+s.email+"/\n")
	default:
		rest, ok := strings.CutPrefix(p, "instance/service-accounts/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		acct, leaf, _ := strings.Cut(rest, "/")
		if acct != "default" && acct != s.email {
			http.NotFound(w, r)
			return
		}
		switch leaf {
		case "":
			if !recursive {
				text(w, "aliases\nemail\nidentity\nscopes\ntoken\n")
				return
			}
			s.mu.Lock()
			scopes := slices.Clone(s.defaults)
			s.mu.Unlock()
			writeJSON(w, http.StatusOK, map[string]any{"aliases": []string{"default"}, "email": s.email, "scopes": scopes})
		case "email":
			text(w, s.email)
		case "aliases":
			text(w, "default\n")
		case "scopes":
			s.mu.Lock()
			scopes := slices.Clone(s.defaults)
			s.mu.Unlock()
			text(w, strings.Join(scopes, "\n")+"\n")
		case "token":
			s.serveToken(w, r)
		default:
			http.NotFound(w, r)
		}
	}
}

func text(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "application/text")
	_, _ = w.Write([]byte(s))
}

func (s *Metadata) serveToken(w http.ResponseWriter, r *http.Request) {
	var scopes []string
	for _, part := range r.URL.Query()["scopes"] {
		for _, sc := range strings.Split(part, ",") {
			if sc = strings.TrimSpace(sc); sc != "" {
				scopes = append(scopes, sc)
			}
		}
	}
	s.mu.Lock()
	s.requests++
	if st, failing := s.fail.take(); failing {
		s.mu.Unlock()
		http.Error(w, "fakegcp: injected failure", st)
		return
	}
	if len(scopes) == 0 {
		scopes = slices.Clone(s.defaults)
	}
	key := strings.Join(scopes, ",")
	now := s.tokens.Now()
	c, ok := s.cache[key]
	if !ok || c.expiry.Sub(now) < metadataRefreshBefore {
		c.token, c.expiry = s.tokens.Issue(s.email, scopes, 0)
		s.cache[key] = c
		s.log.Info("fakegcp: metadata token minted", "principal", s.email)
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	body, _ := json.Marshal(map[string]any{
		"access_token": c.token,
		"expires_in":   int64(c.expiry.Sub(now) / time.Second),
		"token_type":   "Bearer",
	})
	_, _ = w.Write(body)
}
