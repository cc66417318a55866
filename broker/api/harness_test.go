package api

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/agentauth"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/audit"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/tokencache"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/cloudlog"
)

const (
	testAudience = "https://broker.example.test"
	testToken    = "ya29.c.test-access-token-<&>-value"
)

var testExpiry = time.Date(2030, 1, 2, 4, 0, 0, 0, time.UTC)

// fixedTokens hands out one cached token for every account.
type fixedTokens struct{}

func (fixedTokens) Token(ctx context.Context, a *policy.Account) (tokencache.Result, error) {
	return tokencache.Result{Token: &oauth2.Token{AccessToken: testToken, Expiry: testExpiry}, Cached: true}, nil
}

type allowAll struct{}

func (allowAll) Allow(string) bool { return true }

// stubAuth accepts any header as agent "clinic-a".
type stubAuth struct{}

func (stubAuth) Check(agentauth.Directory, string) (agentauth.Verified, error) {
	return agentauth.Verified{Agent: "clinic-a"}, nil
}

func (stubAuth) Record(agentauth.Verified) error { return nil }

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) {
	return 0, errors.New("write /dev/stdout: broken pipe")
}

type harness struct {
	srv  *Server
	priv ed25519.PrivateKey
	// recipient is the X25519 key the harness's assertions carry (cnf);
	// an agent makes one per request.
	recipient *ecdh.PrivateKey
	logs      *safeBuffer
}

type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// newHarness is a Server with a real policy and verifier; logs (operational
// and audit) go to w, or to a buffer the harness keeps when w is nil.
func newHarness(t testing.TB, w io.Writer) *harness {
	t.Helper()
	pub, priv, err := agentkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := json.Marshal(map[string]any{
		"Audience": testAudience,
		"BaseUrl":  "https://healthcare.googleapis.com/v1/",
		"Accounts": map[string]any{
			"store-a": map[string]any{"Project": "p", "Location": "l", "Dataset": "d", "DicomStore": "a", "ServiceAccountSecret": "/nonexistent/a.json"},
			"store-b": map[string]any{"Project": "p", "Location": "l", "Dataset": "d", "DicomStore": "b", "ServiceAccountSecret": "/nonexistent/b.json"},
			"other":   map[string]any{"Project": "p", "Location": "l", "Dataset": "d", "DicomStore": "o", "ServiceAccountSecret": "/nonexistent/o.json"},
		},
		"Agents": map[string]any{"clinic-a": map[string]any{"PublicKey": agentkey.FormatPublicKey(pub), "Accounts": []string{"store-a", "store-b"}}},
	})
	p, err := policy.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	recipient, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{priv: priv, recipient: recipient}
	if w == nil {
		h.logs = &safeBuffer{}
		w = h.logs
	}
	log := cloudlog.New(w, slog.LevelInfo)
	h.srv = &Server{
		Policy:  func() *policy.Policy { return p },
		Auth:    agentauth.NewVerifier(agentauth.Options{}),
		Limiter: allowAll{},
		Tokens:  fixedTokens{},
		Audit:   audit.New(log.Handler()),
		Log:     log,
	}
	return h
}

func (h *harness) assertion(t testing.TB) string {
	t.Helper()
	tok, err := assertion.Sign(h.priv, "clinic-a", testAudience, time.Now(), assertion.DefaultLifetime, h.recipient.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return "Bearer " + tok
}

func (h *harness) post(t testing.TB, body string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest("POST", "/v1/tokens", strings.NewReader(body))
	r.Header.Set("Authorization", h.assertion(t))
	rec := httptest.NewRecorder()
	h.srv.ServeHTTP(rec, r)
	return rec
}

// discardWriter is the cheapest http.ResponseWriter, for benchmarks.
type discardWriter struct {
	h      http.Header
	status int
	n      int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(s int)           { d.status = s }
func (d *discardWriter) Write(p []byte) (int, error) { d.n += len(p); return len(p), nil }

func newTokenRequest(authorization, body string) *http.Request {
	r := httptest.NewRequest("POST", "/v1/tokens", strings.NewReader(body))
	r.Header.Set("Authorization", authorization)
	return r
}
