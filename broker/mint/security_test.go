package mint

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/iam/credentials/apiv1/credentialspb"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	gax "github.com/googleapis/gax-go/v2"
	"github.com/googleapis/gax-go/v2/apierror"
	"google.golang.org/api/googleapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/secretref"
)

// recorder is a token endpoint reached through the client's transport:
// every request the minter sends, whatever its host, lands here and is
// answered with answer (a token by default).
type recorder struct {
	mu     sync.Mutex
	hosts  []string
	bodies []string
	status int
	answer string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.hosts = append(r.hosts, req.URL.Scheme+"://"+req.URL.Host)
	r.bodies = append(r.bodies, string(body))
	st, ans := r.status, r.answer
	r.mu.Unlock()
	if st == 0 {
		st, ans = 200, `{"access_token":"ya29.minted","token_type":"Bearer","expires_in":3600}`
	}
	return &http.Response{StatusCode: st, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(ans)), Request: req}, nil
}

func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.hosts...)
}

// memSecrets is mint.Secrets over a map.
type memSecrets map[string][]byte

func (m memSecrets) Get(_ context.Context, ref string) ([]byte, error) {
	if v, ok := m[ref]; ok {
		return v, nil
	}
	return nil, errors.New("no such secret")
}
func (memSecrets) Invalidate(string) {}

var rsaPEM = sync.OnceValue(func() string {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
})

const (
	saRef   = "sm://projects/secret-project-42/secrets/dicom-sa/versions/latest"
	userRef = "sm://projects/secret-project-42/secrets/dicom-user/versions/3"
	saEmail = "leaky-sa@secret-project-42.iam.gserviceaccount.com"
	project = "secret-project-42"
)

// accounts parses a policy with one account of each kind; refs overrides
// the secret references.
func accounts(t *testing.T, saSecret, userSecret string) *policy.Policy {
	t.Helper()
	raw := fmt.Sprintf(`{"Audience":"https://broker.example","Accounts":{
		"sa":{"Project":%[3]q,"Location":"l","Dataset":"d","DicomStore":"s","ServiceAccountSecret":%[1]q},
		"user":{"Project":%[3]q,"Location":"l","Dataset":"d","DicomStore":"s","AuthorizedUserSecret":%[2]q},
		"inline":{"Project":%[3]q,"Location":"l","Dataset":"d","DicomStore":"s","AuthorizedUserClientId":"cid","AuthorizedUserClientSecret":"client-secret-value","AuthorizedUserRefreshToken":"refresh-token-value"},
		"keyless":{"Project":%[3]q,"Location":"l","Dataset":"d","DicomStore":"s","ImpersonateServiceAccount":%[4]q}}}`,
		saSecret, userSecret, project, saEmail)
	p, err := policy.Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func saJSON(tokenURI string) []byte {
	b, _ := json.Marshal(map[string]string{"type": "service_account", "client_email": saEmail,
		"private_key_id": "k1", "private_key": rsaPEM(), "token_uri": tokenURI, "project_id": project})
	return b
}

func userJSON(tokenURI string) []byte {
	b, _ := json.Marshal(map[string]string{"type": "authorized_user", "client_id": "cid",
		"client_secret": "client-secret-value", "refresh_token": "refresh-token-value", "token_uri": tokenURI})
	return b
}

func TestTokenURIIsCheckedBeforeAnyRequest(t *testing.T) {
	tests := []struct {
		uri  string
		host string // "" = refused, else where the one request must go
	}{
		{"", "https://oauth2.googleapis.com"},
		{"https://oauth2.googleapis.com/token", "https://oauth2.googleapis.com"},
		{"https://accounts.google.com/o/oauth2/token", "https://accounts.google.com"},
		{"https://www.googleapis.com/oauth2/v4/token", "https://www.googleapis.com"},
		{"https://oauth2.mtls.googleapis.com/token", "https://oauth2.mtls.googleapis.com"},
		{"http://127.0.0.1:8099/token", "http://127.0.0.1:8099"},
		{"http://localhost:8099/token", "http://localhost:8099"},
		{"https://[::1]:8443/token", "https://[::1]:8443"},

		{"http://evil.example/token", ""},
		{"https://attacker.test/", ""},
		{"http://evil/", ""},
		{"http://oauth2.googleapis.com/token", ""}, // Google, but in clear
		{"https://oauth2.googleapis.com.evil.example/token", ""},
		{"https://evilgoogleapis.com/token", ""},
		{"https://googleapis.com/token", ""},
		{"https://accounts.google.com.evil.example/", ""},
		{"https://accounts.google.com./token", ""},
		{"http://127.0.0.1.evil.example/token", ""},
		{"http://localhost.evil.example/token", ""},
		{"https://user:pw@oauth2.googleapis.com/token", ""},
		{"ftp://oauth2.googleapis.com/token", ""},
		{"//oauth2.googleapis.com/token", ""},
		{"/token", ""},
		{"https://10.0.0.1/token", ""},
	}
	kinds := []struct {
		name    string
		account string
		setup   func(m *Minter, uri string)
	}{
		{"service_account", "sa", func(m *Minter, uri string) { m.Secrets = memSecrets{saRef: saJSON(uri)} }},
		{"authorized_user", "user", func(m *Minter, uri string) { m.Secrets = memSecrets{userRef: userJSON(uri)} }},
		{"inline authorized_user", "inline", func(m *Minter, uri string) { m.Secrets = memSecrets{}; m.AuthorizedUserTokenURI = uri }},
	}
	p := accounts(t, saRef, userRef)
	for _, k := range kinds {
		for _, tt := range tests {
			if k.account == "inline" && tt.uri == "" {
				continue // the override unset is Google's default, covered above
			}
			t.Run(k.name+"/"+tt.uri, func(t *testing.T) {
				rec := &recorder{}
				m := &Minter{HTTPClient: &http.Client{Transport: rec}}
				k.setup(m, tt.uri)
				tok, err := m.Mint(context.Background(), p.Account(k.account))
				got := rec.requests()
				if tt.host != "" {
					if err != nil || tok.AccessToken != "ya29.minted" {
						t.Fatalf("allowed token_uri refused: %v", err)
					}
					if len(got) != 1 || got[0] != tt.host {
						t.Fatalf("requests = %v, want one to %s", got, tt.host)
					}
					return
				}
				if len(got) != 0 {
					t.Fatalf("refused token_uri still received %d request(s): %v", len(got), rec.bodies)
				}
				var me *Error
				if !errors.As(err, &me) || me.Code != CodeUpstream || !strings.Contains(me.Error(), "token_uri") {
					t.Fatalf("err = %v, want an upstream error naming token_uri", err)
				}
				if !strings.Contains(me.Detail(), "token_uri") {
					t.Errorf("detail %q does not say token_uri", me.Detail())
				}
				for _, leak := range []string{"evil", "attacker", saRef, userRef, saEmail, "refresh-token-value", "client-secret-value", "PRIVATE KEY"} {
					if strings.Contains(me.Error(), leak) {
						t.Errorf("agent message %q contains %q", me.Error(), leak)
					}
				}
				for _, leak := range []string{"refresh-token-value", "client-secret-value", "PRIVATE KEY", "pw@"} {
					if strings.Contains(me.Detail(), leak) {
						t.Errorf("log detail %q contains %q", me.Detail(), leak)
					}
				}
			})
		}
	}
}

// The library reads the credential with encoding/json (last key wins, keys
// match case-insensitively) and tries a "web"/"installed" client section
// first; the broker hands it only the fields it checked.
func TestCredentialDocumentIsTheOneChecked(t *testing.T) {
	good := "https://oauth2.googleapis.com/token"
	tests := []struct {
		name, ref, doc string
		host           string // "" = refused
	}{
		{"second token_uri in upper case", userRef, `{"type":"authorized_user","client_id":"c","client_secret":"client-secret-value","refresh_token":"refresh-token-value","token_uri":"` + good + `","TOKEN_URI":"http://evil.example/"}`, ""},
		{"repeated token_uri", userRef, `{"type":"authorized_user","client_id":"c","client_secret":"client-secret-value","refresh_token":"refresh-token-value","token_uri":"` + good + `","token_uri":"http://evil.example/"}`, ""},
		{"installed client section is not obeyed", userRef, `{"type":"authorized_user","client_id":"c","client_secret":"client-secret-value","refresh_token":"refresh-token-value","token_uri":"` + good + `","installed":{"client_id":"c","redirect_uris":["http://x"],"token_uri":"http://evil.example/"}}`, "https://oauth2.googleapis.com"},
		{"bare user document, evil token_uri", userRef, `{"client_id":"c","client_secret":"client-secret-value","refresh_token":"refresh-token-value","token_uri":"http://evil.example/"}`, ""},
	}
	p := accounts(t, saRef, userRef)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			m := &Minter{HTTPClient: &http.Client{Transport: rec}, Secrets: memSecrets{tt.ref: []byte(tt.doc)}}
			_, err := m.Mint(context.Background(), p.Account("user"))
			got := rec.requests()
			if tt.host == "" {
				if err == nil || len(got) != 0 || !strings.Contains(err.Error(), "token_uri") {
					t.Fatalf("err = %v, requests = %v; want refused with none sent", err, got)
				}
				return
			}
			if err != nil || len(got) != 1 || got[0] != tt.host {
				t.Fatalf("err = %v, requests = %v; want one to %s", err, got, tt.host)
			}
		})
	}
}

// fakeSM answers every AccessSecretVersion with err.
type fakeSM struct{ err error }

func (f fakeSM) AccessSecretVersion(context.Context, *secretmanagerpb.AccessSecretVersionRequest, ...gax.CallOption) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	return nil, f.err
}

// fakeIAM answers every GenerateAccessToken with err.
type fakeIAM struct{ err error }

func (f fakeIAM) GenerateAccessToken(context.Context, *credentialspb.GenerateAccessTokenRequest, ...gax.CallOption) (*credentialspb.GenerateAccessTokenResponse, error) {
	return nil, f.err
}

func iamStatus(t *testing.T, code int) error {
	ae, ok := apierror.FromError(&googleapi.Error{Code: code, Message: "Permission denied on " + saEmail})
	if !ok {
		t.Fatalf("no APIError for %d", code)
	}
	return ae
}

func TestAgentErrorsNameNoSecretProjectEmailOrPath(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, project, "dicom-sa.json")
	tests := []struct {
		name    string
		saRef   string         // the sa account's ServiceAccountSecret
		account string         // which account to mint
		minter  func() *Minter // the minter to use
		code    string         // want Code
		word    string         // the error word the agent still gets
		detail  []string       // what the log detail must name
	}{
		{name: "file secret missing", saRef: missing, account: "sa",
			minter: func() *Minter { return &Minter{Secrets: &secretref.Resolver{TTL: time.Minute}} },
			code:   CodeUpstream, word: "no such file", detail: []string{missing}},
		{name: "secret permission denied", saRef: saRef, account: "sa",
			minter: func() *Minter {
				return &Minter{Secrets: &secretref.Resolver{SM: fakeSM{status.Error(codes.PermissionDenied, "denied on "+saRef)}, TTL: time.Minute}}
			},
			code: CodeUpstream, word: "permission denied", detail: []string{saRef}},
		{name: "secret version disabled", saRef: saRef, account: "sa",
			minter: func() *Minter {
				return &Minter{Secrets: &secretref.Resolver{SM: fakeSM{status.Error(codes.FailedPrecondition, saRef+" is disabled")}, TTL: time.Minute}}
			},
			code: CodeUpstream, word: "disabled or destroyed", detail: []string{saRef}},
		{name: "Secret Manager down", saRef: saRef, account: "sa",
			minter: func() *Minter {
				return &Minter{Secrets: &secretref.Resolver{SM: fakeSM{status.Error(codes.Unavailable, "down")}, TTL: time.Minute}}
			},
			code: CodeUnavailable, word: "Unavailable", detail: []string{saRef}},
		{name: "key refused by Google", saRef: saRef, account: "sa",
			minter: func() *Minter {
				return &Minter{Secrets: memSecrets{saRef: saJSON("")},
					HTTPClient: &http.Client{Transport: &recorder{status: 400, answer: `{"error":"invalid_grant","error_description":"` + saEmail + ` key disabled"}`}}}
			},
			code: CodeUpstream, word: "invalid_grant", detail: []string{saRef, saEmail, "oauth2.googleapis.com"}},
		{name: "user refresh token refused", saRef: saRef, account: "user",
			minter: func() *Minter {
				return &Minter{Secrets: memSecrets{userRef: userJSON("")},
					HTTPClient: &http.Client{Transport: &recorder{status: 400, answer: `{"error":"invalid_grant"}`}}}
			},
			code: CodeUpstream, word: "invalid_grant", detail: []string{userRef, "oauth2.googleapis.com"}},
		{name: "token_uri not allowed", saRef: saRef, account: "sa",
			minter: func() *Minter {
				return &Minter{Secrets: memSecrets{saRef: saJSON("https://evil.example/token")}, HTTPClient: &http.Client{Transport: &recorder{}}}
			},
			code: CodeUpstream, word: "token_uri", detail: []string{saRef, saEmail, "evil.example"}},
		{name: "wrong credential type", saRef: saRef, account: "sa",
			minter: func() *Minter { return &Minter{Secrets: memSecrets{saRef: userJSON("")}} },
			code:   CodeUpstream, word: "not allowed", detail: []string{saRef}},
		{name: "IAM denied", account: "keyless",
			minter: func() *Minter { return &Minter{IAM: fakeIAM{iamStatus(t, 403)}} },
			code:   CodeUpstream, word: "roles/iam.serviceAccountTokenCreator", detail: []string{saEmail}},
		{name: "IAM no such account", account: "keyless",
			minter: func() *Minter { return &Minter{IAM: fakeIAM{iamStatus(t, 404)}} },
			code:   CodeUpstream, word: "not found", detail: []string{saEmail}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := tt.saRef
			if ref == "" {
				ref = saRef
			}
			p := accounts(t, ref, userRef)
			_, err := tt.minter().Mint(context.Background(), p.Account(tt.account))
			var me *Error
			if !errors.As(err, &me) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if me.Code != tt.code || !strings.Contains(me.Error(), tt.word) {
				t.Errorf("agent sees %s %q, want %s with %q", me.Code, me.Error(), tt.code, tt.word)
			}
			for _, leak := range []string{saRef, userRef, missing, dir, project, saEmail, "evil.example", "refresh-token-value", "client-secret-value"} {
				if strings.Contains(me.Error(), leak) {
					t.Errorf("agent message %q names %q", me.Error(), leak)
				}
			}
			for _, want := range tt.detail {
				if !strings.Contains(me.Detail(), want) {
					t.Errorf("log detail %q does not name %q", me.Detail(), want)
				}
			}
			for _, leak := range []string{"refresh-token-value", "client-secret-value", "PRIVATE KEY", "key disabled"} {
				if strings.Contains(me.Detail(), leak) {
					t.Errorf("log detail %q holds %q", me.Detail(), leak)
				}
			}
		})
	}
}
