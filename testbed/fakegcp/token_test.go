package fakegcp

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/clocktest"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

func newClock() *clocktest.Clock { return clocktest.New(time.Now()) }

func startTokens(t *testing.T) *TokenServer {
	t.Helper()
	s := NewTokenServer()
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func saToken(t *testing.T, credJSON []byte, scopes ...string) (*oauth2.Token, error) {
	t.Helper()
	creds, err := google.CredentialsFromJSONWithType(context.Background(), credJSON, google.ServiceAccount, scopes...)
	if err != nil {
		t.Fatalf("CredentialsFromJSONWithType: %v", err)
	}
	return creds.TokenSource.Token()
}

func TestServiceAccountKeyJSON(t *testing.T) {
	s := startTokens(t)
	const email = "dicom-sa@osimis-test.iam.gserviceaccount.com"
	cred, keyID, err := s.NewServiceAccountKey(email)
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]string
	if err := json.Unmarshal(cred, &f); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"type": "service_account", "project_id": "osimis-test", "private_key_id": keyID,
		"client_email": email, "token_uri": s.TokenURL(),
	}
	for k, v := range want {
		if f[k] != v {
			t.Errorf("%s = %q, want %q", k, f[k], v)
		}
	}
	if len(keyID) != 40 || f["client_id"] == "" {
		t.Errorf("key id %q / client id %q look wrong", keyID, f["client_id"])
	}
	blk, _ := pem.Decode([]byte(f["private_key"]))
	if blk == nil || blk.Type != "PRIVATE KEY" {
		t.Fatalf("private_key is not a PKCS#8 PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if rk, ok := k.(*rsa.PrivateKey); !ok || rk.N.BitLen() != 2048 {
		t.Errorf("want an RSA-2048 key")
	}
	if !strings.HasSuffix(s.TokenURL(), "/token") || !strings.HasPrefix(s.TokenURL(), "http://127.0.0.1:") {
		t.Errorf("TokenURL = %q", s.TokenURL())
	}
}

func TestJWTGrantWithRealClient(t *testing.T) {
	s := startTokens(t)
	clock := newClock()
	s.SetNow(clock.Now)
	s.SetLifetime(30 * time.Minute)
	const email = "sa@p.iam.gserviceaccount.com"
	cred, keyID, err := s.NewServiceAccountKey(email)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := saToken(t, cred, ScopeCloudHealthcare)
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if !strings.HasPrefix(tok.AccessToken, "ya29.fake-") || tok.TokenType != "Bearer" {
		t.Errorf("token %q type %q", "<redacted>", tok.TokenType)
	}
	if d := time.Until(tok.Expiry); d < 29*time.Minute || d > 31*time.Minute {
		t.Errorf("client expiry in %v, want ~30m", d)
	}
	ti, ok := s.Introspect(tok.AccessToken)
	if !ok {
		t.Fatal("Introspect: unknown token")
	}
	if ti.Principal != email || ti.KeyID != keyID || len(ti.Scopes) != 1 || ti.Scopes[0] != ScopeCloudHealthcare {
		t.Errorf("Introspect = %+v", ti)
	}
	if !ti.Expiry.Equal(clock.Now().Add(30 * time.Minute)) {
		t.Errorf("expiry %v, want clock+30m", ti.Expiry)
	}
	if s.Minted(email) != 1 || s.MintedByKey(keyID) != 1 {
		t.Errorf("Minted=%d MintedByKey=%d, want 1/1", s.Minted(email), s.MintedByKey(keyID))
	}
	if _, ok := s.Introspect("ya29.unknown"); ok {
		t.Error("Introspect accepted an unknown token")
	}
	if _, ok := s.Valid(tok.AccessToken); !ok {
		t.Error("Valid refused a fresh token")
	}
	clock.Advance(31 * time.Minute)
	if _, ok := s.Valid(tok.AccessToken); ok {
		t.Error("Valid accepted an expired token")
	}
}

func TestDisabledKeyInvalidGrant(t *testing.T) {
	s := startTokens(t)
	const email = "sa@p.iam.gserviceaccount.com"
	oldCred, oldKey, err := s.NewServiceAccountKey(email)
	if err != nil {
		t.Fatal(err)
	}
	newCred, newKey, err := s.NewServiceAccountKey(email)
	if err != nil {
		t.Fatal(err)
	}
	s.DisableKey(oldKey)
	_, err = saToken(t, oldCred, ScopeCloudHealthcare)
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want *oauth2.RetrieveError", err)
	}
	if re.Response.StatusCode != http.StatusBadRequest || !strings.Contains(err.Error(), "invalid_grant") {
		t.Errorf("status %d, err %q: want 400 invalid_grant", re.Response.StatusCode, err)
	}
	// x/oauth2's jwt source does not parse ErrorCode; the body carries it.
	var body map[string]string
	if json.Unmarshal(re.Body, &body) != nil || body["error"] != "invalid_grant" || body["error_description"] == "" {
		t.Errorf("body = %s", re.Body)
	}
	if _, err := saToken(t, newCred, ScopeCloudHealthcare); err != nil {
		t.Errorf("rotated key refused: %v", err)
	}
	if s.MintedByKey(oldKey) != 0 || s.MintedByKey(newKey) != 1 {
		t.Errorf("by key: old %d new %d", s.MintedByKey(oldKey), s.MintedByKey(newKey))
	}
	s.EnableKey(oldKey)
	if _, err := saToken(t, oldCred, ScopeCloudHealthcare); err != nil {
		t.Errorf("re-enabled key refused: %v", err)
	}
}

// assertion builds a JWT-bearer assertion by hand so each check can be violated.
type assertionSpec struct {
	kid      string
	iss      string
	aud      string
	scope    string
	iat, exp time.Time
	signer   *rsa.PrivateKey
}

func (a assertionSpec) encode(t *testing.T) string {
	t.Helper()
	// Signed by hand (not jws.Encode) so that invalid claim sets can be built too.
	hdr := map[string]string{"alg": "RS256", "typ": "JWT"}
	if a.kid != "" {
		hdr["kid"] = a.kid
	}
	hb, _ := json.Marshal(hdr)
	cb, _ := json.Marshal(map[string]any{"iss": a.iss, "aud": a.aud, "scope": a.scope, "iat": a.iat.Unix(), "exp": a.exp.Unix()})
	signed := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, a.signer, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func postForm(t *testing.T, u string, v url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(u, v)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return resp.StatusCode, body
}

func privateKeyOf(t *testing.T, cred []byte) *rsa.PrivateKey {
	t.Helper()
	var f struct {
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal(cred, &f); err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(f.PrivateKey))
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

func TestJWTAssertionChecks(t *testing.T) {
	s := startTokens(t)
	clock := newClock()
	s.SetNow(clock.Now)
	const email = "sa@p.iam.gserviceaccount.com"
	cred, keyID, err := s.NewServiceAccountKey(email)
	if err != nil {
		t.Fatal(err)
	}
	key := privateKeyOf(t, cred)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	good := assertionSpec{kid: keyID, iss: email, aud: s.TokenURL(), scope: ScopeCloudHealthcare,
		iat: now.Add(-10 * time.Second), exp: now.Add(time.Hour - 10*time.Second), signer: key}

	tests := []struct {
		name     string
		mod      func(a *assertionSpec)
		status   int
		errCode  string
		minted   bool
		errWords string
	}{
		{"good", func(*assertionSpec) {}, 200, "", true, ""},
		{"no kid falls back to iss", func(a *assertionSpec) { a.kid = "" }, 200, "", true, ""},
		{"unknown kid", func(a *assertionSpec) { a.kid = "0123" }, 400, "invalid_grant", false, "Signature"},
		{"wrong signer", func(a *assertionSpec) { a.signer = other }, 400, "invalid_grant", false, "Signature"},
		{"wrong signer without kid", func(a *assertionSpec) { a.kid = ""; a.signer = other }, 400, "invalid_grant", false, "Signature"},
		{"iss is not key owner", func(a *assertionSpec) { a.iss = "x@p.iam.gserviceaccount.com" }, 400, "invalid_grant", false, "email"},
		{"wrong aud", func(a *assertionSpec) { a.aud = "https://oauth2.googleapis.com/token" }, 400, "invalid_grant", false, "audience"},
		{"expired", func(a *assertionSpec) { a.iat = now.Add(-2 * time.Hour); a.exp = now.Add(-61 * time.Minute) }, 400, "invalid_grant", false, "iat and exp"},
		{"expired within skew", func(a *assertionSpec) { a.iat = now.Add(-60 * time.Minute); a.exp = now.Add(-30 * time.Second) }, 200, "", true, ""},
		{"future iat", func(a *assertionSpec) { a.iat = now.Add(2 * time.Minute); a.exp = now.Add(30 * time.Minute) }, 400, "invalid_grant", false, "iat and exp"},
		{"future iat within skew", func(a *assertionSpec) { a.iat = now.Add(30 * time.Second); a.exp = now.Add(30 * time.Minute) }, 200, "", true, ""},
		{"too long", func(a *assertionSpec) { a.exp = a.iat.Add(time.Hour + time.Second) }, 400, "invalid_grant", false, "60 minutes"},
		{"exp before iat", func(a *assertionSpec) { a.exp = a.iat.Add(-time.Second) }, 400, "invalid_grant", false, ""},
		{"no scope", func(a *assertionSpec) { a.scope = "" }, 400, "invalid_scope", false, "scope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := good
			tc.mod(&a)
			before := s.Minted(email)
			assertion := a.encode(t)
			st, body := postForm(t, s.TokenURL(), url.Values{"grant_type": {jwtBearerGrant}, "assertion": {assertion}})
			if st != tc.status {
				t.Fatalf("status %d, want %d (body %v)", st, tc.status, body["error_description"])
			}
			if tc.errCode != "" && body["error"] != tc.errCode {
				t.Errorf("error = %v, want %s", body["error"], tc.errCode)
			}
			if d, _ := body["error_description"].(string); !strings.Contains(d, tc.errWords) {
				t.Errorf("error_description %q lacks %q", d, tc.errWords)
			}
			if got := s.Minted(email) - before; (got == 1) != tc.minted {
				t.Errorf("minted %d", got)
			}
			if tc.status == 200 {
				if body["token_type"] != "Bearer" || body["expires_in"].(float64) != 3600 {
					t.Errorf("body %v", body["token_type"])
				}
			}
		})
	}
}

func TestRefreshGrantWithRealClient(t *testing.T) {
	s := startTokens(t)
	const user = "alice@example.com"
	cred, err := s.NewAuthorizedUser(user)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := google.CredentialsFromJSONWithType(context.Background(), cred, google.AuthorizedUser, ScopeCloudHealthcare)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := creds.TokenSource.Token()
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	ti, ok := s.Introspect(tok.AccessToken)
	if !ok || ti.Principal != user || !ti.HasScope(ScopeCloudPlatform) || ti.KeyID != "" {
		t.Errorf("Introspect = %+v, %v", ti, ok)
	}
	if s.Minted(user) != 1 {
		t.Errorf("Minted = %d", s.Minted(user))
	}

	s.RevokeAuthorizedUser(user)
	creds2, err := google.CredentialsFromJSONWithType(context.Background(), cred, google.AuthorizedUser, ScopeCloudHealthcare)
	if err != nil {
		t.Fatal(err)
	}
	_, err = creds2.TokenSource.Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" || re.Response.StatusCode != 400 {
		t.Fatalf("after revoke: err = %v, want RetrieveError invalid_grant", err)
	}
	if strings.Contains(err.Error(), "1//0fake-") {
		t.Error("error text leaks the refresh token")
	}
	// A new consent works again.
	cred3, err := s.NewAuthorizedUser(user)
	if err != nil {
		t.Fatal(err)
	}
	creds3, _ := google.CredentialsFromJSONWithType(context.Background(), cred3, google.AuthorizedUser, ScopeCloudHealthcare)
	if _, err := creds3.TokenSource.Token(); err != nil {
		t.Errorf("new user token refused: %v", err)
	}
}

func TestRefreshGrantChecks(t *testing.T) {
	s := startTokens(t)
	cred, err := s.NewAuthorizedUser("bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]string
	if err := json.Unmarshal(cred, &f); err != nil {
		t.Fatal(err)
	}
	if f["type"] != "authorized_user" || f["token_uri"] != s.TokenURL() {
		t.Fatalf("cred JSON %v", f["type"])
	}
	base := url.Values{"grant_type": {"refresh_token"}, "client_id": {f["client_id"]},
		"client_secret": {f["client_secret"]}, "refresh_token": {f["refresh_token"]}}
	tests := []struct {
		name   string
		key    string
		val    string
		status int
		code   string
	}{
		{"good", "", "", 200, ""},
		{"bad client id", "client_id", "nope.apps.googleusercontent.com", 401, "invalid_client"},
		{"bad secret", "client_secret", "nope", 401, "invalid_client"},
		{"bad refresh token", "refresh_token", "1//0nope", 400, "invalid_grant"},
		{"scope subset", "scope", ScopeCloudPlatform, 200, ""},
		{"scope not granted", "scope", "https://www.googleapis.com/auth/gmail", 400, "invalid_scope"},
		{"bad grant type", "grant_type", "password", 400, "unsupported_grant_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := url.Values{}
			for k, vv := range base {
				v[k] = vv
			}
			if tc.key != "" {
				v.Set(tc.key, tc.val)
			}
			st, body := postForm(t, s.TokenURL(), v)
			if st != tc.status || (tc.code != "" && body["error"] != tc.code) {
				t.Errorf("got %d %v, want %d %s", st, body["error"], tc.status, tc.code)
			}
			if st == 200 && (body["access_token"] == "" || body["token_type"] != "Bearer") {
				t.Errorf("body lacks token fields")
			}
		})
	}
}

func TestFailNextAndLatency(t *testing.T) {
	s := startTokens(t)
	cred, _, err := s.NewServiceAccountKey("sa@p.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	s.FailNext(2, http.StatusServiceUnavailable)
	for i := 0; i < 2; i++ {
		_, err := saToken(t, cred, ScopeCloudHealthcare)
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.Response.StatusCode != 503 {
			t.Fatalf("call %d: err = %v, want 503", i, err)
		}
		var body map[string]string
		if json.Unmarshal(re.Body, &body) != nil || body["error"] == "" {
			t.Errorf("503 body is not OAuth JSON: %s", re.Body)
		}
	}
	if _, err := saToken(t, cred, ScopeCloudHealthcare); err != nil {
		t.Fatalf("third call: %v", err)
	}
	s.FailNext(-1, 0)
	for i := 0; i < 3; i++ {
		if _, err := saToken(t, cred, ScopeCloudHealthcare); err == nil {
			t.Fatal("want failure while FailNext(-1)")
		}
	}
	s.FailNext(0, 0)
	if _, err := saToken(t, cred, ScopeCloudHealthcare); err != nil {
		t.Fatalf("after reset: %v", err)
	}
	if s.Requests() != 7 { // 2 failed, 1 ok, 3 failed, 1 ok
		t.Errorf("Requests = %d, want 7", s.Requests())
	}
	s.SetLatency(150 * time.Millisecond)
	start := time.Now()
	if _, err := saToken(t, cred, ScopeCloudHealthcare); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("latency %v < 150ms", d)
	}
}

func TestIssueAndTokenInfo(t *testing.T) {
	s := startTokens(t)
	clock := newClock()
	s.SetNow(clock.Now)
	tok, exp := s.Issue("x@p.iam.gserviceaccount.com", []string{ScopeCloudPlatform}, 10*time.Minute)
	if !exp.Equal(clock.Now().Add(10 * time.Minute)) {
		t.Errorf("expiry %v", exp)
	}
	resp, err := http.Get(s.URL() + "/tokeninfo?access_token=" + url.QueryEscape(tok))
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]string
	json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if resp.StatusCode != 200 || info["email"] != "x@p.iam.gserviceaccount.com" || info["expires_in"] != "600" {
		t.Errorf("tokeninfo %d %v", resp.StatusCode, info)
	}
	clock.Advance(11 * time.Minute)
	resp, err = http.Get(s.URL() + "/tokeninfo?access_token=" + url.QueryEscape(tok))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("expired tokeninfo status %d", resp.StatusCode)
	}
	if s.Minted("x@p.iam.gserviceaccount.com") != 1 {
		t.Error("Issue not counted")
	}
}

func TestSlowNext(t *testing.T) {
	s := startTokens(t)
	cred, _, err := s.NewServiceAccountKey("sa@p.iam.gserviceaccount.com")
	if err != nil {
		t.Fatal(err)
	}
	const d = 200 * time.Millisecond
	timed := func() (time.Duration, error) {
		start := time.Now()
		_, err := saToken(t, cred, ScopeCloudHealthcare)
		return time.Since(start), err
	}
	s.SlowNext(2, d)
	for i := 0; i < 2; i++ {
		took, err := timed()
		if err != nil {
			t.Fatalf("slowed call %d: %v", i, err)
		}
		if took < d {
			t.Errorf("slowed call %d took %v, want >= %v", i, took, d)
		}
	}
	if took, err := timed(); err != nil || took >= d {
		t.Errorf("third call: %v after %v, want fast success", err, took)
	}
	// A slowed answer can also be an injected failure: both apply.
	s.SlowNext(1, d)
	s.FailNext(1, http.StatusBadGateway)
	took, err := timed()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.Response.StatusCode != http.StatusBadGateway || took < d {
		t.Errorf("slow failure: %v after %v", err, took)
	}
	if s.SlowedAnswers() != 3 || s.InjectedFailures() != 1 {
		t.Errorf("SlowedAnswers = %d, InjectedFailures = %d, want 3 and 1", s.SlowedAnswers(), s.InjectedFailures())
	}
	// Until reset, then reset.
	s.SlowNext(-1, d)
	for i := 0; i < 2; i++ {
		if took, err := timed(); err != nil || took < d {
			t.Errorf("SlowNext(-1) call %d: %v after %v", i, err, took)
		}
	}
	s.SlowNext(0, 0)
	if took, err := timed(); err != nil || took >= d {
		t.Errorf("after reset: %v after %v", err, took)
	}
	// A client that gives up is not held for the whole delay.
	s.SlowNext(1, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.TokenURL(), strings.NewReader("grant_type=x"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	start := time.Now()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Error("want the client's deadline to end the slowed request")
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("cancelled request took %v", time.Since(start))
	}
}

func TestSetLifetimeFor(t *testing.T) {
	s := startTokens(t)
	const a, b = "a@p.iam.gserviceaccount.com", "b@p.iam.gserviceaccount.com"
	credA, _, err := s.NewServiceAccountKey(a)
	if err != nil {
		t.Fatal(err)
	}
	credB, _, err := s.NewServiceAccountKey(b)
	if err != nil {
		t.Fatal(err)
	}
	s.SetLifetime(10 * time.Minute)
	s.SetLifetimeFor(a, 90*time.Second)
	life := func(cred []byte) time.Duration {
		tok, err := saToken(t, cred, ScopeCloudHealthcare)
		if err != nil {
			t.Fatal(err)
		}
		ti, ok := s.Valid(tok.AccessToken)
		if !ok {
			t.Fatal("minted token not valid")
		}
		return time.Until(ti.Expiry).Round(time.Minute / 2)
	}
	if got := life(credA); got != 90*time.Second {
		t.Errorf("overridden principal: lifetime %v, want 1m30s", got)
	}
	if got := life(credB); got != 10*time.Minute {
		t.Errorf("other principal: lifetime %v, want 10m", got)
	}
	if _, exp := s.Issue(a, []string{ScopeCloudPlatform}, 0); time.Until(exp).Round(time.Minute/2) != 90*time.Second {
		t.Errorf("Issue without a lifetime ignores the override")
	}
	if _, exp := s.Issue(a, []string{ScopeCloudPlatform}, time.Hour); time.Until(exp).Round(time.Minute) != time.Hour {
		t.Errorf("Issue with a lifetime must keep it")
	}
	s.SetLifetimeFor(a, 0)
	if got := life(credA); got != 10*time.Minute {
		t.Errorf("after removing the override: lifetime %v, want 10m", got)
	}
}
