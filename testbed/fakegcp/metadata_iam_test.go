package fakegcp

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	credentials "cloud.google.com/go/iam/credentials/apiv1"
	"cloud.google.com/go/iam/credentials/apiv1/credentialspb"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/impersonate"
	"google.golang.org/api/option"
	"google.golang.org/protobuf/types/known/durationpb"
)

const brokerEmail = "broker@demo-project.iam.gserviceaccount.com"

// startCloud starts every fake and points GCE_METADATA_HOST at the metadata fake, with
// no ADC file reachable.
func startCloud(t *testing.T) *Cloud {
	t.Helper()
	c, err := StartCloud(brokerEmail, "demo-project")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	t.Setenv("GCE_METADATA_HOST", c.Metadata.Host())
	t.Setenv("HOME", t.TempDir())
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("CLOUDSDK_CONFIG", t.TempDir())
	return c
}

func TestMetadataComputeTokenSource(t *testing.T) {
	c := startCloud(t)
	tok, err := google.ComputeTokenSource("").Token()
	if err != nil {
		t.Fatalf("ComputeTokenSource: %v", err)
	}
	ti, ok := c.Tokens.Valid(tok.AccessToken)
	if !ok || ti.Principal != brokerEmail || !ti.HasScope(ScopeCloudPlatform) {
		t.Fatalf("token info %+v %v", ti, ok)
	}
	if d := time.Until(tok.Expiry); d < 55*time.Minute || d > time.Hour {
		t.Errorf("expiry in %v", d)
	}
	// The real server hands out its cached token until close to expiry.
	tok2, err := google.ComputeTokenSource("").Token()
	if err != nil || tok2.AccessToken != tok.AccessToken {
		t.Errorf("second token differs (err %v)", err)
	}
	if c.Metadata.TokenRequests() != 2 || c.Tokens.Minted(brokerEmail) != 1 {
		t.Errorf("requests %d minted %d", c.Metadata.TokenRequests(), c.Tokens.Minted(brokerEmail))
	}
	// Scoped requests get their own token with those scopes.
	tok3, err := google.ComputeTokenSource("", ScopeCloudHealthcare).Token()
	if err != nil {
		t.Fatal(err)
	}
	ti3, _ := c.Tokens.Introspect(tok3.AccessToken)
	if len(ti3.Scopes) != 1 || ti3.Scopes[0] != ScopeCloudHealthcare {
		t.Errorf("scoped token scopes %v", ti3.Scopes)
	}
}

func TestMetadataFindDefaultCredentials(t *testing.T) {
	c := startCloud(t)
	creds, err := google.FindDefaultCredentials(context.Background(), ScopeCloudPlatform)
	if err != nil {
		t.Fatalf("FindDefaultCredentials: %v", err)
	}
	if creds.ProjectID != "demo-project" {
		t.Errorf("ProjectID = %q", creds.ProjectID)
	}
	if ud, err := creds.GetUniverseDomain(); err != nil || ud != "googleapis.com" {
		t.Errorf("universe domain %q %v", ud, err)
	}
	tok, err := creds.TokenSource.Token()
	if err != nil {
		t.Fatal(err)
	}
	if ti, ok := c.Tokens.Valid(tok.AccessToken); !ok || ti.Principal != brokerEmail {
		t.Errorf("token not for the broker: %+v", ti)
	}
}

func TestMetadataHTTP(t *testing.T) {
	c := startCloud(t)
	base := "http://" + c.Metadata.Host() + "/computeMetadata/v1/"
	tests := []struct {
		path     string
		flavor   bool
		xff      bool
		status   int
		contains string
	}{
		{"instance/service-accounts/default/email", true, false, 200, brokerEmail},
		{"instance/service-accounts/" + brokerEmail + "/email", true, false, 200, brokerEmail},
		{"project/project-id", true, false, 200, "demo-project"},
		{"instance/service-accounts/", true, false, 200, "default/"},
		{"instance/service-accounts/default/?recursive=true", true, false, 200, `"email":"` + brokerEmail},
		{"instance/service-accounts/default/scopes", true, false, 200, ScopeCloudPlatform},
		{"instance/service-accounts/default/token", true, false, 200, `"token_type":"Bearer"`},
		{"instance/service-accounts/default/email", false, false, 403, "Metadata-Flavor"},
		{"instance/service-accounts/default/email", true, true, 403, "X-Forwarded-For"},
		{"instance/service-accounts/other@x.iam.gserviceaccount.com/token", true, false, 404, ""},
		{"instance/attributes/nope", true, false, 404, ""},
	}
	for _, tc := range tests {
		req, _ := http.NewRequest("GET", base+tc.path, nil)
		if tc.flavor {
			req.Header.Set("Metadata-Flavor", "Google")
		}
		if tc.xff {
			req.Header.Set("X-Forwarded-For", "10.0.0.1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.contains) {
			t.Errorf("%s: %d %q", tc.path, resp.StatusCode, b)
		}
		if resp.Header.Get("Metadata-Flavor") != "Google" {
			t.Errorf("%s: no Metadata-Flavor answer header", tc.path)
		}
	}
}

func TestMetadataExpiryRefresh(t *testing.T) {
	c := startCloud(t)
	clock := newClock()
	c.Tokens.SetNow(clock.Now)
	t1, err := google.ComputeTokenSource("").Token()
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(56 * time.Minute) // under 5 min left: the server fetches a new one
	t2, err := google.ComputeTokenSource("").Token()
	if err != nil {
		t.Fatal(err)
	}
	if t1.AccessToken == t2.AccessToken {
		t.Error("metadata served a nearly expired token")
	}
	if d := time.Until(t2.Expiry); d < 55*time.Minute {
		t.Errorf("new token expires in %v", d)
	}
}

// iamClient returns the real generated REST client authenticated by the metadata server.
func iamClient(t *testing.T, c *Cloud, ts oauth2.TokenSource) *credentials.IamCredentialsClient {
	t.Helper()
	if ts == nil {
		ts = google.ComputeTokenSource("")
	}
	cl, err := credentials.NewIamCredentialsRESTClient(context.Background(), option.WithEndpoint(c.IAM.URL()), option.WithTokenSource(ts))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func httpCode(err error) int {
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		return ge.Code
	}
	return 0
}

func TestIAMGenerateAccessToken(t *testing.T) {
	c := startCloud(t)
	const target = "store-dicom@demo-project.iam.gserviceaccount.com"
	const other = "store-other@demo-project.iam.gserviceaccount.com"
	c.IAM.AllowCaller(brokerEmail, target)
	c.IAM.AllowCaller("someone@else.com", other)
	cl := iamClient(t, c, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clock := newClock()
	c.Tokens.SetNow(clock.Now)

	name := func(e string) string { return "projects/-/serviceAccounts/" + e }
	tests := []struct {
		desc     string
		target   string
		lifetime *durationpb.Duration
		scopes   []string
		status   int
		wantLife time.Duration
	}{
		{"default lifetime", target, nil, []string{ScopeCloudHealthcare}, 200, time.Hour},
		{"15 minutes", target, durationpb.New(15 * time.Minute), []string{ScopeCloudHealthcare}, 200, 15 * time.Minute},
		{"12 hours", target, durationpb.New(12 * time.Hour), []string{ScopeCloudHealthcare}, 200, 12 * time.Hour},
		{"over 12 hours", target, durationpb.New(12*time.Hour + time.Second), []string{ScopeCloudHealthcare}, 400, 0},
		{"under 1 s", target, durationpb.New(500 * time.Millisecond), []string{ScopeCloudHealthcare}, 400, 0},
		{"no scope", target, nil, nil, 400, 0},
		{"not allowed", other, nil, []string{ScopeCloudHealthcare}, 403, 0},
		{"unknown target", "ghost@demo-project.iam.gserviceaccount.com", nil, []string{ScopeCloudHealthcare}, 403, 0},
	}
	for _, tc := range tests {
		resp, err := cl.GenerateAccessToken(ctx, &credentialspb.GenerateAccessTokenRequest{
			Name: name(tc.target), Scope: tc.scopes, Lifetime: tc.lifetime})
		if tc.status != 200 {
			if httpCode(err) != tc.status {
				t.Errorf("%s: err %v, want HTTP %d", tc.desc, err, tc.status)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.desc, err)
		}
		ti, ok := c.Tokens.Valid(resp.AccessToken)
		if !ok || ti.Principal != tc.target || !ti.HasScope(ScopeCloudHealthcare) {
			t.Errorf("%s: minted token %+v", tc.desc, ti)
		}
		want := clock.Now().Add(tc.wantLife)
		if got := resp.ExpireTime.AsTime(); got.After(want) || want.Sub(got) > time.Second {
			t.Errorf("%s: expireTime %v, want %v", tc.desc, got, want)
		}
	}
	if got := c.IAM.Calls(target); got != 6 {
		t.Errorf("Calls(target) = %d, want 6", got)
	}

	// Deleted account: 404 for a caller that holds a binding.
	c.IAM.DeleteServiceAccount(target)
	_, err := cl.GenerateAccessToken(ctx, &credentialspb.GenerateAccessTokenRequest{Name: name(target), Scope: []string{ScopeCloudHealthcare}})
	if httpCode(err) != 404 {
		t.Errorf("deleted: %v", err)
	}
}

func TestIAMAuthAndFailures(t *testing.T) {
	c := startCloud(t)
	const target = "store-dicom@demo-project.iam.gserviceaccount.com"
	c.IAM.AllowCaller(brokerEmail, target)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &credentialspb.GenerateAccessTokenRequest{Name: "projects/-/serviceAccounts/" + target, Scope: []string{ScopeCloudHealthcare}}

	// Unknown bearer: 401.
	bogus := iamClient(t, c, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "ya29.bogus", Expiry: time.Now().Add(time.Hour)}))
	if _, err := bogus.GenerateAccessToken(ctx, req); httpCode(err) != 401 {
		t.Errorf("bogus token: %v", err)
	}
	// Expired caller token (injected clock): 401.
	tok, _ := c.Tokens.Issue(brokerEmail, []string{ScopeCloudPlatform}, time.Minute)
	expired := iamClient(t, c, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok, Expiry: time.Now().Add(time.Hour)}))
	clock := newClock()
	c.Tokens.SetNow(clock.Now)
	clock.Advance(2 * time.Minute)
	if _, err := expired.GenerateAccessToken(ctx, req); httpCode(err) != 401 {
		t.Errorf("expired token: %v", err)
	}
	// Caller token without cloud-platform: 403.
	narrow, _ := c.Tokens.Issue(brokerEmail, []string{ScopeCloudHealthcare}, time.Hour)
	nc := iamClient(t, c, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: narrow, Expiry: time.Now().Add(time.Hour)}))
	if _, err := nc.GenerateAccessToken(ctx, req); httpCode(err) != 403 {
		t.Errorf("narrow scopes: %v", err)
	}

	cl := iamClient(t, c, nil)
	before := c.IAM.Calls(target)
	c.IAM.FailNext(1, http.StatusInternalServerError)
	if _, err := cl.GenerateAccessToken(ctx, req); httpCode(err) != 500 {
		t.Errorf("FailNext(500): %v", err)
	}
	// The REST client retries 503 by itself (100 ms backoff): one failure is absorbed.
	c.IAM.FailNext(1, http.StatusServiceUnavailable)
	if _, err := cl.GenerateAccessToken(ctx, req); err != nil {
		t.Errorf("FailNext(503) not retried: %v", err)
	}
	if got := c.IAM.Calls(target) - before; got != 3 {
		t.Errorf("calls = %d, want 3 (500, 503, retry)", got)
	}

	// Delegation: broker -> mid -> target needs both hops.
	const mid = "mid@demo-project.iam.gserviceaccount.com"
	const far = "far@demo-project.iam.gserviceaccount.com"
	c.IAM.AllowCaller(mid, far)
	dreq := &credentialspb.GenerateAccessTokenRequest{Name: "projects/-/serviceAccounts/" + far,
		Delegates: []string{"projects/-/serviceAccounts/" + mid}, Scope: []string{ScopeCloudHealthcare}}
	if _, err := cl.GenerateAccessToken(ctx, dreq); httpCode(err) != 403 {
		t.Errorf("delegation without first hop: %v", err)
	}
	c.IAM.AllowCaller(brokerEmail, mid)
	if resp, err := cl.GenerateAccessToken(ctx, dreq); err != nil {
		t.Errorf("delegation: %v", err)
	} else if ti, _ := c.Tokens.Introspect(resp.AccessToken); ti.Principal != far {
		t.Errorf("delegated token for %q", ti.Principal)
	}
}

func TestIAMEscapedEmailPath(t *testing.T) {
	c := startCloud(t)
	const target = "t@demo-project.iam.gserviceaccount.com"
	c.IAM.AllowCaller(brokerEmail, target)
	caller, _ := c.Tokens.Issue(brokerEmail, []string{ScopeCloudPlatform}, time.Hour)
	for _, p := range []string{
		"/v1/projects/-/serviceAccounts/t@demo-project.iam.gserviceaccount.com:generateAccessToken",
		"/v1/projects/-/serviceAccounts/t%40demo-project.iam.gserviceaccount.com:generateAccessToken",
		"/v1/projects/demo-project/serviceAccounts/t%40demo-project.iam.gserviceaccount.com:generateAccessToken",
	} {
		req, _ := http.NewRequest("POST", c.IAM.URL()+p, strings.NewReader(`{"scope":["`+ScopeCloudHealthcare+`"],"lifetime":"900s"}`))
		req.Header.Set("Authorization", "Bearer "+caller)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"accessToken"`) || !strings.Contains(string(b), `"expireTime"`) {
			t.Errorf("%s: %d %s", p, resp.StatusCode, b)
		}
	}
	// Google-style error body.
	req, _ := http.NewRequest("POST", c.IAM.URL()+"/v1/projects/-/serviceAccounts/nobody@x.iam.gserviceaccount.com:generateAccessToken", strings.NewReader(`{"scope":["x"]}`))
	req.Header.Set("Authorization", "Bearer "+caller)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(b), `"status":"PERMISSION_DENIED"`) || !strings.Contains(string(b), `"code":403`) {
		t.Errorf("403 body: %s", b)
	}
}

// rewriteHost sends every request to base instead of the host it names, the way a
// test routes google.golang.org/api/impersonate (which hard-codes its endpoint).
type rewriteHost struct{ base string }

func (r rewriteHost) RoundTrip(req *http.Request) (*http.Response, error) {
	u, err := url.Parse(r.base)
	if err != nil {
		return nil, err
	}
	out := req.Clone(req.Context())
	out.URL.Scheme, out.URL.Host, out.Host = u.Scheme, u.Host, ""
	return http.DefaultTransport.RoundTrip(out)
}

func TestIAMWithImpersonatePackage(t *testing.T) {
	c := startCloud(t)
	const target = "store-dicom@demo-project.iam.gserviceaccount.com"
	c.IAM.AllowCaller(brokerEmail, target)
	hc := &http.Client{Transport: &oauth2.Transport{Source: google.ComputeTokenSource(""), Base: rewriteHost{c.IAM.URL()}}}
	ts, err := impersonate.CredentialsTokenSource(context.Background(), impersonate.CredentialsConfig{
		TargetPrincipal: target, Scopes: []string{ScopeCloudHealthcare}}, option.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Token()
	if err != nil {
		t.Fatalf("impersonated Token: %v", err)
	}
	ti, ok := c.Tokens.Valid(tok.AccessToken)
	if !ok || ti.Principal != target || !ti.HasScope(ScopeCloudHealthcare) {
		t.Errorf("impersonated token %+v", ti)
	}
	if d := time.Until(tok.Expiry); d < 59*time.Minute || d > time.Hour {
		t.Errorf("expiry in %v", d)
	}
	// Not allowed: the package's error carries the 403.
	ts2, _ := impersonate.CredentialsTokenSource(context.Background(), impersonate.CredentialsConfig{
		TargetPrincipal: "other@demo-project.iam.gserviceaccount.com", Scopes: []string{ScopeCloudHealthcare}}, option.WithHTTPClient(hc))
	if _, err := ts2.Token(); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("not allowed: %v", err)
	}
}

// The generated client with no explicit credentials finds the metadata server itself
// (through cloud.google.com/go/auth's detection), as the broker does on Cloud Run.
func TestIAMClientWithDetectedCredentials(t *testing.T) {
	c := startCloud(t)
	const target = "store-dicom@demo-project.iam.gserviceaccount.com"
	c.IAM.AllowCaller(brokerEmail, target)
	cl, err := credentials.NewIamCredentialsRESTClient(context.Background(), option.WithEndpoint(c.IAM.URL()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.GenerateAccessToken(ctx, &credentialspb.GenerateAccessTokenRequest{
		Name: "projects/-/serviceAccounts/" + target, Scope: []string{ScopeCloudHealthcare}, Lifetime: durationpb.New(15 * time.Minute)})
	if err != nil {
		t.Fatalf("GenerateAccessToken: %v", err)
	}
	if ti, ok := c.Tokens.Valid(resp.AccessToken); !ok || ti.Principal != target {
		t.Errorf("token %+v", ti)
	}
}
