package fakegcp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/logcapture"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	runSA    = "dicom-sa@demo-project.iam.gserviceaccount.com"
	runUser  = "alice@example.com"
	runStore = "projects/demo-project/locations/europe-west2/datasets/d/dicomStores/s"
	runProj  = "demo-project"
)

// startRun runs Run in-process with a setup document and waits until it is ready.
func startRun(t *testing.T, setup string, extra ...string) (State, string) {
	t.Helper()
	dir := t.TempDir()
	setupPath := filepath.Join(dir, "setup.json")
	if err := os.WriteFile(setupPath, []byte(setup), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.json"), []byte(`{"Accounts":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(dir, "out")
	statePath := filepath.Join(dir, "state.json")
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan State, 1)
	done := make(chan error, 1)
	var logs logcapture.Buffer
	args := append([]string{"--setup", setupPath, "--state", statePath, "--out-dir", outDir}, extra...)
	go func() { done <- Run(ctx, args, &logs, func(s State) { readyc <- s }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case st := <-readyc:
		b, err := os.ReadFile(statePath)
		if err != nil {
			t.Fatal(err)
		}
		var fromFile State
		if err := json.Unmarshal(b, &fromFile); err != nil {
			t.Fatalf("state file: %v", err)
		}
		if fromFile.TokenURL != st.TokenURL || fromFile.AdminURL == "" || fromFile.DICOMwebBaseURL != st.DICOMwebBaseURL {
			t.Fatalf("state file differs from ready state")
		}
		return fromFile, logs.String()
	case err := <-done:
		t.Fatalf("Run ended early: %v (logs %s)", err, logs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("Run not ready")
	}
	return State{}, ""
}

func adminCall(t *testing.T, st State, method, path string, in any, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, st.AdminURL+path, body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

func TestRunSetupEndToEnd(t *testing.T) {
	orthanc := newFakeOrthanc(t)
	setup := `{
  "ProjectId": "demo-project",
  "TokenLifetime": "30m",
  "ServiceAccounts": [{"Email": "` + runSA + `", "Secret": "projects/demo-project/secrets/dicom-sa", "File": "keys/dicom-sa.json"}],
  "AuthorizedUsers": [{"Principal": "` + runUser + `", "Secret": "projects/demo-project/secrets/alice"}],
  "TokenCreators": [{"Caller": "broker@demo-project.iam.gserviceaccount.com", "Target": "store@demo-project.iam.gserviceaccount.com"}],
  "Secrets": [{"Name": "projects/demo-project/secrets/broker-config", "FromFile": "policy.json"}],
  "Stores": [{"Path": "` + runStore + `", "Upstream": "` + orthanc.URL + `/dicom-web/", "Username": "orthanc", "Password": "pw",
              "Principals": ["` + runSA + `", "` + runUser + `"]}]
}`
	st, _ := startRun(t, setup)
	if st.MetadataServiceAccount != "broker@demo-project.iam.gserviceaccount.com" || st.ProjectID != runProj {
		t.Errorf("identity %q %q", st.MetadataServiceAccount, st.ProjectID)
	}
	if !strings.HasSuffix(st.DICOMwebBaseURL, "/v1/") || !strings.HasSuffix(st.TokenURL, "/token") || st.SecretManagerAddr == "" ||
		st.MetadataHost == "" || st.IAMCredentialsURL == "" || st.Pid != os.Getpid() {
		t.Fatalf("endpoints: %+v", st)
	}
	if len(st.ServiceAccounts) != 1 || st.ServiceAccounts[0].SecretVersion != "projects/demo-project/secrets/dicom-sa/versions/1" ||
		st.ServiceAccounts[0].KeyID == "" || len(st.Stores) != 1 || st.Stores[0] != runStore {
		t.Fatalf("provisioned: %+v", st)
	}

	// The key file: 0600, a service_account JSON the real client uses.
	fi, err := os.Stat(st.ServiceAccounts[0].File)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v", fi, err)
	}
	cred, _ := os.ReadFile(st.ServiceAccounts[0].File)
	creds, err := google.CredentialsFromJSONWithType(context.Background(), cred, google.ServiceAccount, ScopeCloudHealthcare)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := creds.TokenSource.Token()
	if err != nil {
		t.Fatalf("token from file key: %v", err)
	}
	if d := time.Until(tok.Expiry); d > 31*time.Minute || d < 29*time.Minute {
		t.Errorf("TokenLifetime not applied: %v", d)
	}

	// The same key through Secret Manager, and the user and policy secrets.
	sm, err := secretmanager.NewClient(context.Background(), ClientOptions(st.SecretManagerAddr)...)
	if err != nil {
		t.Fatal(err)
	}
	defer sm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := sm.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: "projects/demo-project/secrets/dicom-sa/versions/latest"})
	if err != nil || !bytes.Equal(got.Payload.Data, cred) {
		t.Fatalf("secret != key file (%v)", err)
	}
	pol, err := sm.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: "projects/demo-project/secrets/broker-config/versions/1"})
	if err != nil || string(pol.Payload.Data) != `{"Accounts":{}}` {
		t.Fatalf("policy secret: %v", err)
	}
	user, err := sm.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: "projects/demo-project/secrets/alice/versions/latest"})
	if err != nil {
		t.Fatal(err)
	}
	ucreds, err := google.CredentialsFromJSONWithType(ctx, user.Payload.Data, google.AuthorizedUser, ScopeCloudHealthcare)
	if err != nil {
		t.Fatal(err)
	}
	utok, err := ucreds.TokenSource.Token()
	if err != nil {
		t.Fatalf("user token: %v", err)
	}

	// Both tokens open the store through the DICOMweb front.
	storeURL := st.DICOMwebBaseURL + runStore + "/dicomWeb/studies"
	for _, tk := range []string{tok.AccessToken, utok.AccessToken} {
		if code := getWithBearer(t, storeURL, tk); code != 200 {
			t.Errorf("store GET: %d", code)
		}
	}
	if code := getWithBearer(t, st.DICOMwebBaseURL+"projects/demo-project/locations/europe-west2/datasets/d/dicomStores/other/dicomWeb/studies", tok.AccessToken); code != 403 {
		t.Errorf("other store: %d", code)
	}

	// Admin: disable the key -> invalid_grant; rotate -> new version works.
	if code := adminCall(t, st, "POST", "/keys/disable", map[string]string{"KeyId": st.ServiceAccounts[0].KeyID}, nil); code != 200 {
		t.Fatalf("disable: %d", code)
	}
	creds2, _ := google.CredentialsFromJSONWithType(context.Background(), cred, google.ServiceAccount, ScopeCloudHealthcare)
	_, err = creds2.TokenSource.Token()
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("disabled key: %v", err)
	}
	var rotated StateServiceAccount
	if code := adminCall(t, st, "POST", "/keys/rotate", map[string]any{"Email": runSA, "Secret": "projects/demo-project/secrets/dicom-sa", "DisableOld": true}, &rotated); code != 200 {
		t.Fatalf("rotate: %d", code)
	}
	if rotated.SecretVersion != "projects/demo-project/secrets/dicom-sa/versions/2" || rotated.KeyID == st.ServiceAccounts[0].KeyID {
		t.Fatalf("rotated %+v", rotated)
	}
	got, err = sm.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: "projects/demo-project/secrets/dicom-sa/versions/latest"})
	if err != nil {
		t.Fatal(err)
	}
	creds3, _ := google.CredentialsFromJSONWithType(context.Background(), got.Payload.Data, google.ServiceAccount, ScopeCloudHealthcare)
	if _, err := creds3.TokenSource.Token(); err != nil {
		t.Fatalf("rotated key: %v", err)
	}

	// Admin: revoke the user, fail the token endpoint, secret manager down, add a version.
	adminCall(t, st, "POST", "/users/revoke", map[string]string{"Principal": runUser}, nil)
	ucreds2, _ := google.CredentialsFromJSONWithType(ctx, user.Payload.Data, google.AuthorizedUser, ScopeCloudHealthcare)
	if _, err := ucreds2.TokenSource.Token(); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("revoked user: %v", err)
	}
	adminCall(t, st, "POST", "/token/fail-next", map[string]int{"Count": 1, "Status": 503}, nil)
	creds4, _ := google.CredentialsFromJSONWithType(context.Background(), got.Payload.Data, google.ServiceAccount, ScopeCloudHealthcare)
	if _, err := creds4.TokenSource.Token(); !errors.As(err, &re) || re.Response.StatusCode != 503 {
		t.Errorf("fail-next: %v", err)
	}
	var added map[string]string
	adminCall(t, st, "POST", "/secretmanager/versions", map[string]string{"Secret": "projects/demo-project/secrets/broker-config", "Data": "v2"}, &added)
	if added["Version"] != "projects/demo-project/secrets/broker-config/versions/2" {
		t.Errorf("added %v", added)
	}
	if code := adminCall(t, st, "POST", "/secretmanager/version-state", map[string]string{"Version": added["Version"], "State": "DISABLED"}, nil); code != 200 {
		t.Errorf("version-state: %d", code)
	}
	// Google's rule: latest is v2 even while disabled, and does not fall back.
	if _, err = sm.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: "projects/demo-project/secrets/broker-config/versions/latest"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("latest after disabling v2: %v, want FailedPrecondition", err)
	}
	pol, err = sm.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: "projects/demo-project/secrets/broker-config/versions/1"})
	if err != nil || string(pol.Payload.Data) != `{"Accounts":{}}` {
		t.Errorf("pinned v1 after disabling v2: %v", err)
	}

	// Clock: advancing past the token lifetime expires tokens at the front.
	adminCall(t, st, "POST", "/clock/advance", map[string]string{"By": "31m"}, nil)
	if code := getWithBearer(t, storeURL, tok.AccessToken); code != 401 {
		t.Errorf("after clock advance: %d", code)
	}

	var ctr Counters
	if code := adminCall(t, st, "GET", "/counters", nil, &ctr); code != 200 {
		t.Fatalf("counters: %d", code)
	}
	if ctr.Minted[runSA] != 2 || ctr.Minted[runUser] != 1 || ctr.MintedByKey[rotated.KeyID] != 1 ||
		ctr.SecretAccesses["projects/demo-project/secrets/dicom-sa"] != 2 || ctr.DicomWeb[runStore].Accepted != 2 ||
		ctr.DicomWeb[runStore].Refused != 1 || ctr.TokenRequests != 6 {
		t.Errorf("counters %+v", ctr)
	}
	var st2 State
	adminCall(t, st, "GET", "/state", nil, &st2)
	if len(st2.ServiceAccounts) != 2 {
		t.Errorf("state after rotate has %d keys", len(st2.ServiceAccounts))
	}

	// Bad admin input: 400 with an error body.
	var e map[string]map[string]string
	if code := adminCall(t, st, "POST", "/secretmanager/version-state", map[string]string{"Version": added["Version"], "State": "BOGUS"}, &e); code != 400 || e["error"]["code"] != "bad_request" {
		t.Errorf("bad state: %d %v", code, e)
	}
	if code := adminCall(t, st, "POST", "/keys/disable", map[string]string{"Nope": "x"}, nil); code != 400 {
		t.Errorf("unknown field: %d", code)
	}
}

func TestRunAdminStores(t *testing.T) {
	orthanc := newFakeOrthanc(t)
	st, _ := startRun(t, `{}`, "--quiet")
	if st.ProjectID != "demo-project" || len(st.Stores) != 0 {
		t.Fatalf("defaults: %+v", st)
	}
	tok := issueVia(t, st, "late@demo-project.iam.gserviceaccount.com")
	store := map[string]any{"Path": runStore, "Upstream": orthanc.URL + "/dicom-web/", "Username": "u", "Password": "p"}
	if code := adminCall(t, st, "POST", "/stores", store, nil); code != 200 {
		t.Fatalf("add store: %d", code)
	}
	url := st.DICOMwebBaseURL + runStore + "/dicomWeb/studies"
	if code := getWithBearer(t, url, tok); code != 403 {
		t.Errorf("unbound principal: %d", code)
	}
	adminCall(t, st, "POST", "/stores/bind", map[string]string{"Path": runStore, "Principal": "late@demo-project.iam.gserviceaccount.com"}, nil)
	if code := getWithBearer(t, url, tok); code != 200 {
		t.Errorf("bound principal: %d", code)
	}
	if code := adminCall(t, st, "POST", "/stores", map[string]any{"Path": "projects/x", "Upstream": "http://127.0.0.1:1/"}, nil); code != 400 {
		t.Errorf("bad store path: %d", code)
	}
}

// issueVia gets a metadata-free token for principal: an SA key made through /keys/rotate.
func issueVia(t *testing.T, st State, email string) string {
	t.Helper()
	var sa StateServiceAccount
	if code := adminCall(t, st, "POST", "/keys/rotate", map[string]any{"Email": email, "File": "late.json"}, &sa); code != 200 {
		t.Fatalf("rotate: %d", code)
	}
	cred, err := os.ReadFile(sa.File)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := google.CredentialsFromJSONWithType(context.Background(), cred, google.ServiceAccount, ScopeCloudHealthcare)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := creds.TokenSource.Token()
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

func getWithBearer(t *testing.T, url, tok string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestSetupValidation(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unknown field", `{"Bogus": 1}`, "unknown field"},
		{"sa without output", `{"ServiceAccounts":[{"Email":"a@b"}]}`, "set Secret and/or File"},
		{"bad secret name", `{"ServiceAccounts":[{"Email":"a@b","Secret":"secrets/x"}]}`, "projects/P/secrets/S"},
		{"bad lifetime", `{"TokenLifetime":"soon"}`, "TokenLifetime"},
		{"bad store", `{"Stores":[{"Path":"projects/p/dicomStores/s","Upstream":"http://x/"}]}`, "Stores[0]"},
		{"store without upstream", `{"Stores":[{"Path":"` + runStore + `"}]}`, "Upstream is required"},
		{"user without principal", `{"AuthorizedUsers":[{"File":"u.json"}]}`, "Principal is required"},
		{"sa without email", `{"ServiceAccounts":[{"File":"k.json"}]}`, "ServiceAccounts[0]: Email is required"},
		{"user bad secret name", `{"AuthorizedUsers":[{"Principal":"u@x","Secret":"x"}]}`, "AuthorizedUsers[0] (u@x): Secret"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "s.json")
			os.WriteFile(p, []byte(tc.doc), 0o600)
			_, err := LoadSetup(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// Run refuses a bad setup before listening.
	p := filepath.Join(t.TempDir(), "s.json")
	os.WriteFile(p, []byte(`{"Bogus":1}`), 0o600)
	if err := Run(context.Background(), []string{"--setup", p}, io.Discard, nil); err == nil {
		t.Error("Run accepted a bad setup")
	}
	// A relative File needs --out-dir.
	os.WriteFile(p, []byte(`{"ServiceAccounts":[{"Email":"a@p.iam.gserviceaccount.com","File":"a.json"}]}`), 0o600)
	if err := Run(context.Background(), []string{"--setup", p}, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "output directory") {
		t.Errorf("relative file without out-dir: %v", err)
	}
}

func TestRunLogsNoSecrets(t *testing.T) {
	setup := `{"ServiceAccounts": [{"Email": "` + runSA + `", "Secret": "projects/demo-project/secrets/dicom-sa", "File": "sa.json"}],
	           "AuthorizedUsers": [{"Principal": "` + runUser + `", "File": "user.json"}]}`
	dir := t.TempDir()
	setupPath := filepath.Join(dir, "setup.json")
	os.WriteFile(setupPath, []byte(setup), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	var logs logcapture.Buffer
	readyc := make(chan State, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, []string{"--setup", setupPath, "--out-dir", dir}, &logs, func(s State) { readyc <- s })
	}()
	st := <-readyc
	cred, _ := os.ReadFile(st.ServiceAccounts[0].File)
	ucred, _ := os.ReadFile(st.AuthorizedUsers[0].File)
	var secrets []string
	for _, c := range [][]byte{cred, ucred} {
		var m map[string]string
		json.Unmarshal(c, &m)
		for _, k := range []string{"private_key", "refresh_token", "client_secret"} {
			if m[k] != "" {
				secrets = append(secrets, m[k])
				if lines := strings.Split(m[k], "\n"); len(lines) > 2 {
					secrets = append(secrets, lines[1]) // one base64 line of the PEM
				}
			}
		}
	}
	creds, _ := google.CredentialsFromJSONWithType(ctx, cred, google.ServiceAccount, ScopeCloudHealthcare)
	tok, err := creds.TokenSource.Token()
	if err != nil {
		t.Fatal(err)
	}
	getWithBearer(t, st.DICOMwebBaseURL+runStore+"/dicomWeb/studies", tok.AccessToken)
	adminCall(t, st, "POST", "/keys/disable", map[string]string{"KeyId": st.ServiceAccounts[0].KeyID}, nil)
	creds2, _ := google.CredentialsFromJSONWithType(ctx, cred, google.ServiceAccount, ScopeCloudHealthcare)
	creds2.TokenSource.Token()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "token minted") || !strings.Contains(out, "key disabled") {
		t.Fatalf("expected activity in logs:\n%s", out)
	}
	secrets = append(secrets, tok.AccessToken)
	for _, s := range secrets {
		if s != "" && strings.Contains(out, s) {
			t.Errorf("logs contain a secret value")
		}
	}
}

func TestRunAdminTokenSlowNext(t *testing.T) {
	st, _ := startRun(t, `{}`, "--quiet")
	if code := adminCall(t, st, "POST", "/token/slow-next", map[string]any{"Count": 1, "Delay": "300ms"}, nil); code != 200 {
		t.Fatalf("slow-next: %d", code)
	}
	start := time.Now()
	resp, err := http.Post(st.TokenURL, "application/x-www-form-urlencoded", strings.NewReader("grant_type=refresh_token"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("slowed answer took %v", took)
	}
	adminCall(t, st, "POST", "/token/fail-next", map[string]int{"Count": 1, "Status": 502}, nil)
	resp, err = http.Post(st.TokenURL, "application/x-www-form-urlencoded", strings.NewReader("grant_type=refresh_token"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("fail-next 502: got %d", resp.StatusCode)
	}
	var ctr Counters
	adminCall(t, st, "GET", "/counters", nil, &ctr)
	if ctr.TokenSlowedAnswers != 1 || ctr.TokenInjectedFailures != 1 || ctr.TokenRequests != 2 {
		t.Errorf("counters %+v", ctr)
	}
	for _, bad := range []map[string]any{{"Count": 2, "Delay": "soon"}, {"Count": 2, "Delay": "-1s"}} {
		if code := adminCall(t, st, "POST", "/token/slow-next", bad, nil); code != 400 {
			t.Errorf("slow-next %v: %d, want 400", bad, code)
		}
	}
	if code := adminCall(t, st, "POST", "/token/slow-next", map[string]any{"Count": 0}, nil); code != 200 {
		t.Errorf("slow-next reset: %d", code)
	}
}
