package broker_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/golang-jwt/jwt/v5"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/cloudlog"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/tokenseal"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/clocktest"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/logcapture"
)

const (
	project     = "osimis-test"
	brokerEmail = "broker@osimis-test.iam.gserviceaccount.com"
	saEmail     = "store-a@osimis-test.iam.gserviceaccount.com"
	keylessSA   = "store-k@osimis-test.iam.gserviceaccount.com"
	userEmail   = "pacs-admin@example.org"
	inlineEmail = "radiology-lead@example.org"
	policyName  = "projects/osimis-test/secrets/broker-policy"
	saSecret    = "projects/osimis-test/secrets/store-a-key"
)

// env is a broker wired to the Google fakes through the real Google clients:
// Secret Manager over gRPC, the OAuth2 token endpoint (JWT-bearer and
// refresh-token grants), IAM Credentials over REST authenticated from the
// metadata server.
type env struct {
	t      *testing.T
	cloud  *fakegcp.Cloud
	clk    *clocktest.Clock
	url    string
	broker *broker.Broker
	logs   *logcapture.Buffer
	keys   map[string]ed25519.PrivateKey
	// recipient is the X25519 key every assertion carries (cnf), so the
	// tests can open the sealed tokens; an agent makes one per request.
	recipient *ecdh.PrivateKey
	saKeyID   string
	policy    map[string]any
	secrets   []string // every credential value, to look for in logs
	issued    []string // every token the broker answered with
	// assertions holds the signature part of every assertion sent.
	assertions []string
	issuedMu   sync.Mutex
}

func newEnv(t *testing.T) *env {
	t.Helper()
	t.Setenv("HOME", t.TempDir()) // no gcloud ADC file: the broker's identity comes from metadata
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	cloud, err := fakegcp.StartCloud(brokerEmail, project)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cloud.Close)
	t.Setenv("GCE_METADATA_HOST", cloud.Metadata.Host())

	recipient, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, cloud: cloud, clk: clocktest.New(time.Now().UTC().Truncate(time.Second)), logs: &logcapture.Buffer{},
		keys: map[string]ed25519.PrivateKey{}, recipient: recipient}
	cloud.Tokens.SetNow(e.clk.Now)
	dir := t.TempDir()

	saJSON, keyID, err := cloud.Tokens.NewServiceAccountKey(saEmail)
	if err != nil {
		t.Fatal(err)
	}
	e.saKeyID = keyID
	cloud.SecretManager.AddVersion(saSecret, saJSON)
	userJSON, err := cloud.Tokens.NewAuthorizedUser(userEmail)
	if err != nil {
		t.Fatal(err)
	}
	userFile := filepath.Join(dir, "user.json")
	if err := os.WriteFile(userFile, userJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	inlineJSON, err := cloud.Tokens.NewAuthorizedUser(inlineEmail)
	if err != nil {
		t.Fatal(err)
	}
	var inline map[string]string
	if err := json.Unmarshal(inlineJSON, &inline); err != nil {
		t.Fatal(err)
	}
	cloud.IAM.AllowCaller(brokerEmail, keylessSA)
	e.secrets = append(e.secrets, credentialValues(t, saJSON)...)
	e.secrets = append(e.secrets, credentialValues(t, userJSON)...)
	e.secrets = append(e.secrets, credentialValues(t, inlineJSON)...)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.url = "http://" + lis.Addr().String()
	for _, id := range []string{"clinic-a", "clinic-b", "clinic-off"} {
		pub, priv, _ := agentkey.Generate()
		e.keys[id] = priv
		_ = pub
	}
	store := func(name string) map[string]any {
		return map[string]any{"Project": project, "Location": "europe-west2", "Dataset": "ds", "DicomStore": name}
	}
	sa := store("a")
	sa["ServiceAccountSecret"] = "sm://" + saSecret + "/versions/latest"
	user := store("u")
	user["AuthorizedUserSecret"] = userFile
	keyless := store("k")
	keyless["ImpersonateServiceAccount"] = keylessSA
	keyless["TokenLifetime"] = "20m"
	inlineUser := store("i")
	inlineUser["AuthorizedUserClientId"] = inline["client_id"]
	inlineUser["AuthorizedUserClientSecret"] = inline["client_secret"]
	inlineUser["AuthorizedUserRefreshToken"] = inline["refresh_token"]
	other := store("b")
	other["ServiceAccountSecret"] = "sm://projects/osimis-test/secrets/never-written/versions/latest"
	e.policy = map[string]any{
		"Audience": e.url + "/",
		"BaseUrl":  cloud.DICOMweb.URL() + "/v1/",
		"Accounts": map[string]any{"my-google": sa, "user-store": user, "keyless": keyless, "inline-user": inlineUser, "other": other},
		"Agents": map[string]any{
			"clinic-a":   map[string]any{"PublicKey": e.pub("clinic-a"), "Accounts": []string{"my-google", "user-store", "keyless", "inline-user"}},
			"clinic-b":   map[string]any{"PublicKey": e.pub("clinic-b"), "Accounts": []string{"other"}},
			"clinic-off": map[string]any{"PublicKey": e.pub("clinic-off"), "Accounts": []string{"my-google"}, "Disabled": true},
		},
	}
	e.writePolicy()

	b, err := broker.New(context.Background(), broker.Config{
		PolicyRef:              "sm://" + policyName + "/versions/latest",
		Refresh:                time.Hour, // reloads are driven by the tests
		MinRemaining:           15 * time.Minute,
		RateLimit:              100000,
		RateBurst:              100000,
		SecretManagerEndpoint:  cloud.SecretManager.Addr(),
		IAMCredentialsEndpoint: cloud.IAM.URL(),
		AuthorizedUserTokenURI: cloud.Tokens.TokenURL(),
		Log:                    cloudlog.New(e.logs, slog.LevelDebug),
		Now:                    e.clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.broker = b
	srv := &http.Server{Handler: b}
	go srv.Serve(lis)
	t.Cleanup(func() {
		srv.Close()
		b.Close()
		e.assertNoSecretsInLogs()
	})
	return e
}

func (e *env) pub(id string) string {
	return agentkey.FormatPublicKey(e.keys[id].Public().(ed25519.PublicKey))
}

func (e *env) writePolicy() {
	data, err := json.Marshal(e.policy)
	if err != nil {
		e.t.Fatal(err)
	}
	e.cloud.SecretManager.AddVersion(policyName, data)
}

// credentialValues lists the secret parts of a credential JSON.
func credentialValues(t *testing.T, data []byte) []string {
	var m map[string]string
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range []string{"private_key", "client_secret", "refresh_token"} {
		if v := m[k]; v != "" {
			if k == "private_key" {
				// A line of the PEM body is enough to spot a leak.
				lines := strings.Split(v, "\n")
				v = lines[len(lines)/2]
			}
			out = append(out, v)
		}
	}
	return out
}

func (e *env) assertion(id string, mutate func(c *jwt.RegisteredClaims)) string {
	return e.assertionBy(id, e.keys[id], mutate)
}

// assertionBy signs an assertion claiming to be id with key (which may be
// the wrong one) and remembers its signature for the log leak check.
func (e *env) assertionBy(id string, key ed25519.PrivateKey, mutate func(c *jwt.RegisteredClaims)) string {
	now := e.clk.Now()
	c := assertion.Claims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer: id, Subject: id, Audience: jwt.ClaimStrings{e.url},
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(2 * time.Minute)),
		ID: fmt.Sprintf("%d-%d", now.UnixNano(), jtiSeq.next()),
	}, Cnf: &assertion.Confirmation{JWK: assertion.X25519JWK(e.recipient.PublicKey())}}
	if mutate != nil {
		mutate(&c.RegisteredClaims)
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c).SignedString(key)
	if err != nil {
		e.t.Fatal(err)
	}
	e.issuedMu.Lock()
	e.assertions = append(e.assertions, tok[strings.LastIndexByte(tok, '.')+1:])
	e.issuedMu.Unlock()
	return tok
}

type seq struct {
	mu sync.Mutex
	n  int
}

func (s *seq) next() int { s.mu.Lock(); defer s.mu.Unlock(); s.n++; return s.n }

var jtiSeq seq

type tokenItem struct {
	Store       string `json:"store"`
	Sealed      string `json:"sealed_access_token"`
	AccessToken string `json:"-"` // opened by tokens
	TokenType   string `json:"token_type"`
	ExpiresAt   string `json:"expires_at"`
	DICOMwebURL string `json:"dicomweb_url"`
}

type itemErr struct{ Store, Code, Message string }

type tokensResp struct {
	Error  *struct{ Code, Message string } `json:"error"`
	Tokens []tokenItem                     `json:"tokens"`
	Errors []itemErr                       `json:"errors"`
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1000, MaxConnsPerHost: 1000}}

// do sends a request with the given Authorization value and returns status
// and body.
func (e *env) do(method, path, auth string, body []byte) (int, []byte) {
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Error(err)
		return 0, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func (e *env) tokens(agent string, stores ...string) (int, tokensResp) {
	var body []byte
	if stores != nil {
		body, _ = json.Marshal(map[string]any{"stores": stores})
	}
	status, data := e.do("POST", "/v1/tokens", "Bearer "+e.assertion(agent, nil), body)
	var r tokensResp
	if err := json.Unmarshal(data, &r); err != nil {
		e.t.Errorf("POST /v1/tokens: %d %s", status, data)
	}
	if bytes.Contains(data, []byte(`"access_token"`)) {
		e.t.Errorf("POST /v1/tokens answered a plaintext access_token: %s", data)
	}
	e.issuedMu.Lock()
	for i, tok := range r.Tokens {
		plain, err := tokenseal.Open(e.recipient, tok.Store, tok.Sealed)
		if err != nil {
			e.t.Errorf("sealed token of %s: %v", tok.Store, err)
		}
		r.Tokens[i].AccessToken = plain
		e.issued = append(e.issued, plain)
	}
	e.issuedMu.Unlock()
	return status, r
}

func (e *env) assertNoSecretsInLogs() {
	logs := e.logs.String()
	if logs == "" {
		e.t.Error("no log lines captured; the leak check would be vacuous")
	}
	e.issuedMu.Lock()
	defer e.issuedMu.Unlock()
	if len(e.assertions) == 0 {
		e.t.Error("no assertions recorded; the leak check would be vacuous")
	}
	for _, list := range [][]string{e.secrets, e.issued, e.assertions} {
		for _, s := range list {
			if s != "" && strings.Contains(logs, s) {
				e.t.Errorf("a secret, token or assertion appears in the broker's logs")
			}
		}
	}
}

func TestIssuesTokensForEveryCredentialKind(t *testing.T) {
	e := newEnv(t)
	status, r := e.tokens("clinic-a")
	if status != 200 || len(r.Errors) != 0 || len(r.Tokens) != 4 {
		t.Fatalf("status %d, %+v", status, r)
	}
	want := map[string]string{"my-google": saEmail, "user-store": userEmail, "keyless": keylessSA, "inline-user": inlineEmail}
	for _, tok := range r.Tokens {
		info, ok := e.cloud.Tokens.Valid(tok.AccessToken)
		if !ok {
			t.Fatalf("%s: the token endpoint never issued that token", tok.Store)
		}
		if info.Principal != want[tok.Store] {
			t.Errorf("%s: token for %q, want %q", tok.Store, info.Principal, want[tok.Store])
		}
		// A refresh-token grant keeps the scopes the user consented to.
		if !info.HasScope("https://www.googleapis.com/auth/cloud-healthcare", "https://www.googleapis.com/auth/cloud-platform") {
			t.Errorf("%s: scopes %v", tok.Store, info.Scopes)
		}
		exp, err := time.Parse(time.RFC3339, tok.ExpiresAt)
		// The broker states expiry from when it asked: never later than
		// Google's, and short of it by at most the round trip.
		if err != nil || exp.After(info.Expiry) || info.Expiry.Sub(exp) > 2*time.Second {
			t.Errorf("%s: expires_at %q vs %v", tok.Store, tok.ExpiresAt, info.Expiry)
		}
		wantURL := e.cloud.DICOMweb.URL() + "/v1/projects/" + project + "/locations/europe-west2/datasets/ds/dicomStores/"
		if !strings.HasPrefix(tok.DICOMwebURL, wantURL) || !strings.HasSuffix(tok.DICOMwebURL, "/dicomWeb/") || tok.TokenType != "Bearer" {
			t.Errorf("%s: %+v", tok.Store, tok)
		}
	}
	if got := e.cloud.IAM.Calls(keylessSA); got != 1 {
		t.Errorf("generateAccessToken calls = %d", got)
	}
	// Keyless honours TokenLifetime.
	for _, tok := range r.Tokens {
		if tok.Store == "keyless" {
			exp, _ := time.Parse(time.RFC3339, tok.ExpiresAt)
			if d := exp.Sub(e.clk.Now()); d != 20*time.Minute {
				t.Errorf("keyless lifetime %v, want 20m", d)
			}
		}
	}

	// One audit line per issued token, with its fingerprint.
	var audits int
	for _, line := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if _, ok := m["severity"]; !ok {
			t.Errorf("log line without severity: %q", line)
		}
		if m["event"] == "token_issued" {
			audits++
			if m["agent"] != "clinic-a" || m["client"] == "" || len(m["token_sha256"].(string)) != 16 || m["expires_at"] == "" {
				t.Errorf("audit line %v", m)
			}
		}
	}
	if audits != 4 {
		t.Errorf("audit lines = %d, want 4", audits)
	}

	// GET /v1/stores lists exactly the grants.
	status, body := e.do("GET", "/v1/stores", "Bearer "+e.assertion("clinic-a", nil), nil)
	var stores struct {
		Stores []struct{ Name, Dicomweb_url string }
	}
	if err := json.Unmarshal(body, &stores); status != 200 || err != nil || len(stores.Stores) != 4 || stores.Stores[0].Name != "inline-user" {
		t.Fatalf("stores: %d %s", status, body)
	}
}

func TestThousandConcurrentRequestsOneMint(t *testing.T) {
	e := newEnv(t)
	e.cloud.Tokens.SetLatency(100 * time.Millisecond) // keep the mint in flight while requests pile up
	burst := func(n int) map[string]int {
		var wg sync.WaitGroup
		var mu sync.Mutex
		seen := map[string]int{}
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, r := e.tokens("clinic-a", "my-google")
				if status != 200 || len(r.Tokens) != 1 {
					t.Errorf("status %d %+v", status, r)
					return
				}
				mu.Lock()
				seen[r.Tokens[0].AccessToken]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		return seen
	}
	if seen := burst(1000); len(seen) != 1 {
		t.Fatalf("distinct tokens = %d, want 1", len(seen))
	}
	if got := e.cloud.Tokens.MintedByKey(e.saKeyID); got != 1 {
		t.Fatalf("upstream mints = %d, want 1", got)
	}
	// Just before the 15-minute margin: still cached.
	e.clk.Advance(45*time.Minute - time.Second)
	burst(50)
	if got := e.cloud.Tokens.MintedByKey(e.saKeyID); got != 1 {
		t.Fatalf("mints before the margin = %d, want 1", got)
	}
	// Past expiry minus margin: exactly one more.
	e.clk.Advance(2 * time.Second)
	if seen := burst(1000); len(seen) != 1 {
		t.Fatalf("distinct tokens after refresh = %d, want 1", len(seen))
	}
	if got := e.cloud.Tokens.MintedByKey(e.saKeyID); got != 2 {
		t.Fatalf("mints after the margin = %d, want 2", got)
	}
}

func TestRotationTakesEffectWithoutRestart(t *testing.T) {
	e := newEnv(t)
	if status, _ := e.tokens("clinic-a", "my-google"); status != 200 {
		t.Fatal(status)
	}
	// Operator rotates: new key as a new secret version, old key disabled.
	newJSON, newKeyID, err := e.cloud.Tokens.NewServiceAccountKey(saEmail)
	if err != nil {
		t.Fatal(err)
	}
	e.secrets = append(e.secrets, credentialValues(t, newJSON)...)
	e.cloud.SecretManager.AddVersion(saSecret, newJSON)
	e.cloud.Tokens.DisableKey(e.saKeyID)
	accesses := e.cloud.SecretManager.Accesses(saSecret)

	e.clk.Advance(46 * time.Minute) // the cached token needs renewing; the cached secret is still fresh
	status, r := e.tokens("clinic-a", "my-google")
	if status != 200 || len(r.Tokens) != 1 {
		t.Fatalf("after rotation: %d %+v", status, r)
	}
	if got := e.cloud.Tokens.MintedByKey(newKeyID); got != 1 {
		t.Fatalf("mints with the new key = %d, want 1", got)
	}
	if got := e.cloud.SecretManager.Accesses(saSecret); got != accesses+1 {
		t.Fatalf("secret re-read %d times, want exactly 1 (on invalid_grant)", got-accesses)
	}
	if info, ok := e.cloud.Tokens.Valid(r.Tokens[0].AccessToken); !ok || info.KeyID != newKeyID {
		t.Fatalf("token not from the new key: %+v", info)
	}
}

func TestRevokedKeyWithoutNewVersionFailsClearly(t *testing.T) {
	e := newEnv(t)
	e.cloud.Tokens.DisableKey(e.saKeyID)
	status, r := e.tokens("clinic-a", "my-google")
	if status != http.StatusBadGateway || r.Error == nil || r.Error.Code != "upstream" || len(r.Errors) != 1 {
		t.Fatalf("got %d %+v", status, r)
	}
	if !strings.Contains(r.Errors[0].Message, "invalid_grant") {
		t.Errorf("message %q should say invalid_grant", r.Errors[0].Message)
	}
}

func TestOutageServesCachedTokens(t *testing.T) {
	e := newEnv(t)
	status, first := e.tokens("clinic-a", "my-google", "user-store")
	if status != 200 || len(first.Tokens) != 2 {
		t.Fatalf("%d %+v", status, first)
	}
	e.cloud.SecretManager.SetDown(true)
	e.cloud.Tokens.FailNext(-1, 503)
	e.cloud.IAM.FailNext(-1, 503)
	t.Cleanup(func() { e.cloud.Tokens.FailNext(0, 0); e.cloud.IAM.FailNext(0, 0) })

	// Cached and still fresh: served.
	status, r := e.tokens("clinic-a", "my-google")
	if status != 200 || len(r.Tokens) != 1 || r.Tokens[0].AccessToken != first.Tokens[0].AccessToken {
		t.Fatalf("cached token not served during outage: %d %+v", status, r)
	}
	// Past the margin but still valid: minting fails, the cached token is served.
	e.clk.Advance(50 * time.Minute)
	status, r = e.tokens("clinic-a", "my-google", "user-store")
	if status != 200 || len(r.Tokens) != 2 {
		t.Fatalf("still-valid token not served during outage: %d %+v", status, r)
	}
	// Never minted, Google down: upstream 502.
	status, r = e.tokens("clinic-a", "keyless")
	if status != http.StatusBadGateway || r.Error == nil || r.Error.Code != "upstream" {
		t.Fatalf("keyless during IAM outage: %d %+v", status, r)
	}
	// Never read, Secret Manager down: unavailable 503.
	status, r = e.tokens("clinic-b", "other")
	if status != http.StatusServiceUnavailable || r.Error == nil || r.Error.Code != "unavailable" {
		t.Fatalf("uncached secret during SM outage: %d %+v", status, r)
	}
	// Expired: the outage is visible.
	e.clk.Advance(10 * time.Minute)
	status, r = e.tokens("clinic-a", "my-google")
	if status != http.StatusBadGateway || len(r.Tokens) != 0 {
		t.Fatalf("expired token served: %d %+v", status, r)
	}
	// Recovery needs no restart.
	e.cloud.SecretManager.SetDown(false)
	e.cloud.Tokens.FailNext(0, 0)
	e.clk.Advance(10 * time.Second)
	if status, r = e.tokens("clinic-a", "my-google"); status != 200 {
		t.Fatalf("after recovery: %d %+v", status, r)
	}
}

func TestRefusals(t *testing.T) {
	e := newEnv(t)
	_, stranger, _ := agentkey.Generate()
	replayed := e.assertion("clinic-a", nil)
	if status, _ := e.do("GET", "/v1/stores", "Bearer "+replayed, nil); status != 200 {
		t.Fatalf("first use of the assertion: %d", status)
	}
	sign := func(id string, key ed25519.PrivateKey, mutate func(*jwt.RegisteredClaims)) string {
		return "Bearer " + e.assertionBy(id, key, mutate)
	}
	now := e.clk.Now()
	unauth := []struct{ name, auth string }{
		{"no header", ""},
		{"not bearer", "Basic " + "YWdlbnQ6cGFzcw=="},
		{"garbage", "Bearer not.a.jwt"},
		{"forged signature", sign("clinic-a", stranger, nil)},
		{"unknown agent", sign("clinic-zz", stranger, nil)},
		{"disabled agent", sign("clinic-off", e.keys["clinic-off"], nil)},
		{"wrong aud", sign("clinic-a", e.keys["clinic-a"], func(c *jwt.RegisteredClaims) { c.Audience = jwt.ClaimStrings{"https://other-broker"} })},
		{"expired", sign("clinic-a", e.keys["clinic-a"], func(c *jwt.RegisteredClaims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(-4 * time.Minute))
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-2 * time.Minute))
		})},
		{"future iat", sign("clinic-a", e.keys["clinic-a"], func(c *jwt.RegisteredClaims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(2 * time.Minute))
			c.ExpiresAt = jwt.NewNumericDate(now.Add(3 * time.Minute))
		})},
		{"lifetime over 5 min", sign("clinic-a", e.keys["clinic-a"], func(c *jwt.RegisteredClaims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(6 * time.Minute)) })},
		{"replayed jti", "Bearer " + replayed},
	}
	var first []byte
	for _, tt := range unauth {
		for _, path := range []string{"/v1/stores", "/v1/tokens"} {
			method := map[string]string{"/v1/stores": "GET", "/v1/tokens": "POST"}[path]
			status, body := e.do(method, path, tt.auth, nil)
			if status != http.StatusUnauthorized {
				t.Errorf("%s %s: status %d, want 401", tt.name, path, status)
			}
			if first == nil {
				first = body
			}
			if !bytes.Equal(body, first) {
				t.Errorf("%s: 401 body %q differs from %q (would let callers probe)", tt.name, body, first)
			}
		}
	}
	if !strings.Contains(string(first), `"code":"unauthenticated"`) {
		t.Errorf("401 body %s", first)
	}

	bad := []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"malformed JSON", []byte(`{"stores":`), 400, "bad_request"},
		{"unknown field", []byte(`{"stores":["my-google"],"scope":"x"}`), 400, "bad_request"},
		{"wrong type", []byte(`{"stores":"my-google"}`), 400, "bad_request"},
		{"two objects", []byte(`{"stores":[]} {}`), 400, "bad_request"},
		{"empty name", []byte(`{"stores":[""]}`), 400, "bad_request"},
		{"oversized", append(append([]byte(`{"stores":["`), bytes.Repeat([]byte("a"), 70<<10)...), []byte(`"]}`)...), 413, "too_large"},
		{"store of another agent", []byte(`{"stores":["other"]}`), 403, "forbidden"},
		{"store that does not exist", []byte(`{"stores":["nope"]}`), 403, "forbidden"},
	}
	for _, tt := range bad {
		status, body := e.do("POST", "/v1/tokens", "Bearer "+e.assertion("clinic-a", nil), tt.body)
		if status != tt.status || !strings.Contains(string(body), `"code":"`+tt.code+`"`) {
			t.Errorf("%s: %d %s, want %d %s", tt.name, status, body, tt.status, tt.code)
		}
	}
	// Forbidden beside allowed: 200 with a per-store error, never a token for it.
	status, r := e.tokens("clinic-a", "my-google", "other")
	if status != 200 || len(r.Tokens) != 1 || r.Tokens[0].Store != "my-google" || len(r.Errors) != 1 || r.Errors[0].Code != "forbidden" {
		t.Fatalf("mixed: %d %+v", status, r)
	}
	// A nonexistent and an existing-but-not-granted store read the same.
	_, a := e.tokens("clinic-a", "other")
	_, b := e.tokens("clinic-a", "nope")
	if a.Errors[0].Message != b.Errors[0].Message {
		t.Errorf("messages differ: %q vs %q", a.Errors[0].Message, b.Errors[0].Message)
	}
	if status, _ := e.do("PUT", "/v1/tokens", "", nil); status != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d", status)
	}
	if status, _ := e.do("GET", "/healthz", "", nil); status != 200 {
		t.Errorf("healthz: %d", status)
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t)
	// A second broker on the same fakes with a small per-agent budget.
	b, err := broker.New(context.Background(), broker.Config{
		PolicyRef: "sm://" + policyName + "/versions/latest", SecretManagerEndpoint: e.cloud.SecretManager.Addr(),
		RateLimit: 1, RateBurst: 3, Log: cloudlog.New(e.logs, slog.LevelInfo), Now: e.clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	codes := []int{}
	for range 5 {
		req, _ := http.NewRequest("GET", "/v1/stores", nil)
		req.Header.Set("Authorization", "Bearer "+e.assertion("clinic-a", nil))
		rec := newRecorder()
		b.ServeHTTP(rec, req)
		codes = append(codes, rec.status)
	}
	want := []int{200, 200, 200, 429, 429}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
	// Another agent has its own budget.
	req, _ := http.NewRequest("GET", "/v1/stores", nil)
	req.Header.Set("Authorization", "Bearer "+e.assertion("clinic-b", nil))
	rec := newRecorder()
	b.ServeHTTP(rec, req)
	if rec.status != 200 {
		t.Fatalf("clinic-b limited by clinic-a: %d", rec.status)
	}
	e.clk.Advance(time.Second)
	req, _ = http.NewRequest("GET", "/v1/stores", nil)
	req.Header.Set("Authorization", "Bearer "+e.assertion("clinic-a", nil))
	rec = newRecorder()
	b.ServeHTTP(rec, req)
	if rec.status != 200 {
		t.Fatalf("after a second: %d", rec.status)
	}
}

func TestPolicyReload(t *testing.T) {
	e := newEnv(t)
	// Revoke clinic-a's keyless grant and add a new agent.
	_, newKey, _ := agentkey.Generate()
	e.keys["clinic-new"] = newKey
	e.policy["Agents"].(map[string]any)["clinic-new"] = map[string]any{"PublicKey": e.pub("clinic-new"), "Accounts": []string{"keyless"}}
	e.policy["Agents"].(map[string]any)["clinic-a"].(map[string]any)["Accounts"] = []string{"my-google"}
	e.writePolicy()
	if err := e.broker.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if status, r := e.tokens("clinic-new", "keyless"); status != 200 || len(r.Tokens) != 1 {
		t.Fatalf("new agent: %d %+v", status, r)
	}
	if status, r := e.tokens("clinic-a", "keyless"); status != 403 || r.Errors[0].Code != "forbidden" {
		t.Fatalf("revoked grant: %d %+v", status, r)
	}
	// A broken version is refused; the last good policy stays.
	e.cloud.SecretManager.AddVersion(policyName, []byte(`{"Audience":"https://x","Accounts":{"a":{"Project":"p"}}}`))
	if err := e.broker.Reload(context.Background()); err == nil {
		t.Fatal("broken policy accepted")
	}
	if !strings.Contains(e.logs.String(), `account \"a\": Location: required`) {
		t.Error("the refusal was not logged with the account and field")
	}
	if status, _ := e.tokens("clinic-new", "keyless"); status != 200 {
		t.Fatalf("last good policy not in force: %d", status)
	}
	// Google's rule: disabling the newest version does not fall back to an
	// older one; "latest" fails with FAILED_PRECONDITION. The last good
	// policy and the cached tokens keep serving, and each refresh logs the
	// failure once, naming the secret reference, never a value.
	if err := e.cloud.SecretManager.SetVersionState(policyName+"/versions/3", secretmanagerpb.SecretVersion_DISABLED); err != nil {
		t.Fatal(err)
	}
	before := strings.Count(e.logs.String(), "version is disabled or destroyed")
	if err := e.broker.Reload(context.Background()); err == nil {
		t.Fatal("reload with a disabled latest version succeeded")
	}
	logs := e.logs.String()
	if n := strings.Count(logs, "version is disabled or destroyed") - before; n != 1 {
		t.Errorf("the disabled version was logged %d times in one refresh, want 1", n)
	}
	if !strings.Contains(logs, "sm://"+policyName+"/versions/latest") {
		t.Error("the failure does not name the secret reference")
	}
	if status, r := e.tokens("clinic-new", "keyless"); status != 200 || len(r.Tokens) != 1 {
		t.Fatalf("cached token not served while latest is disabled: %d %+v", status, r)
	}
	// Roll back the runbook's way: add the good document as a new version.
	e.writePolicy()
	if err := e.broker.Reload(context.Background()); err != nil {
		t.Fatalf("reload after adding a good version: %v", err)
	}
}

// Reload does the ticker's whole refresh: an account that leaves the
// policy loses its cached token and its cached secret, so when it comes
// back it is minted from a fresh read of its key (both caches would
// otherwise still be fresh: the token has 1 h left, the secret TTL is 1 h).
func TestReloadDropsTokensAndSecretsOfRemovedAccounts(t *testing.T) {
	e := newEnv(t)
	if status, r := e.tokens("clinic-a", "my-google"); status != 200 || len(r.Tokens) != 1 {
		t.Fatalf("%d %+v", status, r)
	}
	if got := e.cloud.Tokens.MintedByKey(e.saKeyID); got != 1 {
		t.Fatalf("mints = %d, want 1", got)
	}
	accesses := e.cloud.SecretManager.Accesses(saSecret)

	accounts := e.policy["Accounts"].(map[string]any)
	agents := e.policy["Agents"].(map[string]any)
	saved := accounts["my-google"]
	grants := map[string]any{}
	for _, id := range []string{"clinic-a", "clinic-off"} {
		ag := agents[id].(map[string]any)
		grants[id] = ag["Accounts"]
		var rest []string
		for _, n := range ag["Accounts"].([]string) {
			if n != "my-google" {
				rest = append(rest, n)
			}
		}
		ag["Accounts"] = rest
	}
	delete(accounts, "my-google")
	e.writePolicy()
	if err := e.broker.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if status, r := e.tokens("clinic-a", "my-google"); status != http.StatusForbidden || r.Errors[0].Code != "forbidden" {
		t.Fatalf("removed account: %d %+v", status, r)
	}

	accounts["my-google"] = saved
	for id, g := range grants {
		agents[id].(map[string]any)["Accounts"] = g
	}
	e.writePolicy()
	if err := e.broker.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	status, r := e.tokens("clinic-a", "my-google")
	if status != 200 || len(r.Tokens) != 1 {
		t.Fatalf("re-added account: %d %+v", status, r)
	}
	if got := e.cloud.Tokens.MintedByKey(e.saKeyID); got != 2 {
		t.Errorf("mints = %d, want 2 (the cached token should have been dropped)", got)
	}
	if got := e.cloud.SecretManager.Accesses(saSecret); got != accesses+1 {
		t.Errorf("secret reads since the first mint = %d, want 1 (the cached secret should have been dropped)", got-accesses)
	}
}

func TestStartRefusesInvalidPolicy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.json")
	os.WriteFile(path, []byte(`{"Audience":"https://b","Accounts":{"s":{"Project":"p","Location":"l","Dataset":"d","DicomStore":"x"}},"Agents":{}}`), 0o600)
	_, err := broker.New(context.Background(), broker.Config{PolicyRef: path, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), `account "s": no credential`) {
		t.Fatalf("err = %v", err)
	}
	_, err = broker.New(context.Background(), broker.Config{PolicyRef: filepath.Join(dir, "missing.json"), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Fatalf("err = %v", err)
	}
}

func TestConfigFromEnv(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string // error substring, "" for success
	}{
		{map[string]string{"BROKER_CONFIG": "/p.json"}, ""},
		{map[string]string{}, "BROKER_CONFIG: required"},
		{map[string]string{"BROKER_CONFIG": "/p", "BROKER_REFRESH": "soon"}, "BROKER_REFRESH"},
		{map[string]string{"BROKER_CONFIG": "/p", "BROKER_MIN_REMAINING": "-1m"}, "BROKER_MIN_REMAINING"},
		{map[string]string{"BROKER_CONFIG": "/p", "BROKER_RATE_LIMIT": "x"}, "BROKER_RATE_LIMIT"},
		{map[string]string{"BROKER_CONFIG": "/p", "BROKER_RATE_BURST": "0"}, "BROKER_RATE_BURST"},
		{map[string]string{"BROKER_CONFIG": "/p.json", "BROKER_TRUSTED_PROXY_HOPS": "0"}, ""},
		{map[string]string{"BROKER_CONFIG": "/p.json", "BROKER_TRUSTED_PROXY_HOPS": "2"}, ""},
		{map[string]string{"BROKER_CONFIG": "/p", "BROKER_TRUSTED_PROXY_HOPS": "-1"}, `BROKER_TRUSTED_PROXY_HOPS: "-1" is not a whole number >= 0`},
		{map[string]string{"BROKER_CONFIG": "/p", "BROKER_TRUSTED_PROXY_HOPS": "one"}, `BROKER_TRUSTED_PROXY_HOPS: "one"`},
		{map[string]string{"BROKER_CONFIG": "/p", "BROKER_TRUSTED_PROXY_HOPS": "1.5"}, "BROKER_TRUSTED_PROXY_HOPS"},
	}
	for _, tt := range tests {
		c, err := broker.ConfigFromEnv(func(k string) string { return tt.env[k] })
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%v: %v", tt.env, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%v: err %v, want %q", tt.env, err, tt.want)
		case tt.want == "" && (c.Refresh != broker.DefaultRefresh || c.MinRemaining != 15*time.Minute):
			t.Errorf("defaults: %+v", c)
		case tt.want == "" && strconv.Itoa(c.TrustedProxyHops) != cmp.Or(tt.env["BROKER_TRUSTED_PROXY_HOPS"], "0"):
			t.Errorf("TrustedProxyHops = %d for %v", c.TrustedProxyHops, tt.env)
		}
	}
}

type recorder struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder                    { return &recorder{h: http.Header{}} }
func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(p []byte) (int, error) { return r.body.Write(p) }
func (r *recorder) WriteHeader(s int)           { r.status = s }

var _ = assertion.MaxLifetime
