package migrate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/config"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
)

// Planted credential values: none may appear in the output directory, the
// plan, stderr or an error message.
const (
	plantedKeyBody      = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCplantedPrivateKeyBody"
	plantedClientSecret = "GOCSPX-planted-client-secret-4d1e"
	plantedRefreshToken = "1//0planted-refresh-token-93ab"
	plantedInlineSecret = "planted-inline-client-secret-c0ffee"
	plantedInlineToken  = "1//planted-inline-refresh-token-beef"
	plantedPassword     = "planted-orthanc-password-7f7f"
	plantedAccessToken  = "ya29.planted-access-token"
)

var planted = []string{plantedKeyBody, plantedClientSecret, plantedRefreshToken, plantedInlineSecret, plantedInlineToken, plantedPassword, plantedAccessToken}

const plantedPEM = "-----BEGIN PRIVATE KEY-----\n" + plantedKeyBody + "\n-----END PRIVATE KEY-----\n"

// printCredential runs PrintCredential into a pipe, as load-secrets.sh's
// $(…) does, and returns what came through it.
func printCredential(t *testing.T, cfg, name string) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		r.Close()
		got <- b
	}()
	err = PrintCredential(cfg, name, w)
	w.Close()
	return string(<-got), err
}

// saKeyJSON is a service-account key file as Google's console writes it.
func saKeyJSON(email string) string {
	b, _ := json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  "osimis-test",
		"private_key_id":              "0123456789abcdef0123456789abcdef01234567",
		"private_key":                 plantedPEM,
		"client_email":                email,
		"client_id":                   "104200000000000000001",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   "https://oauth2.googleapis.com/token",
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"client_x509_cert_url":        "https://www.googleapis.com/robot/v1/metadata/x509/x",
	}, "", "  ")
	return string(b)
}

// gcloudUserJSON is what `gcloud auth print-access-token --format json`
// writes: no "type" field.
func gcloudUserJSON() string {
	b, _ := json.MarshalIndent(map[string]string{
		"access_token":  plantedAccessToken,
		"client_id":     "32555940559.apps.googleusercontent.com",
		"client_secret": plantedClientSecret,
		"id_tokenb64":   "eyJhbGciOi",
		"invalid":       "False",
		"refresh_token": plantedRefreshToken,
		"scopes":        "['https://www.googleapis.com/auth/cloud-platform']",
		"token_expiry":  "2019-06-27T09:00:00Z",
		"token_uri":     "https://oauth2.googleapis.com/token",
		"user_agent":    "google-cloud-sdk",
	}, "", "  ")
	return string(b)
}

// adcUserJSON is gcloud's application_default_credentials.json.
func adcUserJSON() string {
	return fmt.Sprintf(`{"client_id": "764086051850-x.apps.googleusercontent.com", "client_secret": %q, "refresh_token": %q, "type": "authorized_user"}`,
		plantedClientSecret, plantedRefreshToken)
}

// writeTree writes files (path relative to root → content) under root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// listTree is every path under root with its size, for "nothing changed".
func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, fmt.Sprintf("%s %v %d", rel, fi.Mode(), fi.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// result is what a successful Run produced.
type result struct {
	dir    string
	plan   string
	tfvars map[string]map[string]tfAccount
	script string
	agent  []byte
}

func runOK(t *testing.T, o Options) result {
	t.Helper()
	var out bytes.Buffer
	if err := Run(o, &out); err != nil {
		t.Fatalf("Run: %v", err)
	}
	r := result{dir: o.OutDir, plan: out.String()}
	data, err := os.ReadFile(filepath.Join(o.OutDir, TfvarsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &r.tfvars); err != nil {
		t.Fatalf("tfvars: %v", err)
	}
	if keys := slices.Sorted(maps.Keys(r.tfvars)); !slices.Equal(keys, []string{"accounts"}) {
		t.Fatalf("tfvars top-level keys %v, want [accounts]", keys)
	}
	script, err := os.ReadFile(filepath.Join(o.OutDir, LoadSecretsFile))
	if err != nil {
		t.Fatal(err)
	}
	r.script = string(script)
	if r.agent, err = os.ReadFile(filepath.Join(o.OutDir, AgentConfigFile)); err != nil {
		t.Fatal(err)
	}
	checkModes(t, o.OutDir)
	return r
}

// resolveAgent loads the written agent.json with the agent's own parser,
// the placeholders filled and the key and password files made in a temp dir.
func resolveAgent(t *testing.T, data []byte) (*config.File, *config.Config) {
	t.Helper()
	f, err := config.Parse(data)
	if err != nil {
		t.Fatalf("agent.json does not parse with agent/config: %v\n%s", err, data)
	}
	parsed := *f
	tmp := t.TempDir()
	// The Linux paths, or the Windows ones (Options.OS "windows").
	wantKey, wantPassword := AgentKeyFile, AgentPasswordFile
	if f.Broker.KeyFile == WindowsAgentKeyFile {
		wantKey, wantPassword = WindowsAgentKeyFile, WindowsAgentPasswordFile
	}
	if f.Broker.KeyFile != wantKey {
		t.Errorf("Broker.KeyFile = %q, want %q", f.Broker.KeyFile, wantKey)
	}
	f.Broker.KeyFile = filepath.Join(tmp, "agent.key")
	if _, err := agentkey.WriteNew(f.Broker.KeyFile); err != nil {
		t.Fatal(err)
	}
	if f.Broker.Url == BrokerURLPlaceholder {
		f.Broker.Url = "https://orthanc-gcp-broker-123456789012.europe-west2.run.app"
	}
	if f.Broker.AgentId == AgentIDPlaceholder {
		f.Broker.AgentId = "clinic-a"
	}
	if f.Orthanc.PasswordFile != "" {
		if f.Orthanc.PasswordFile != wantPassword {
			t.Errorf("Orthanc.PasswordFile = %q, want %q", f.Orthanc.PasswordFile, wantPassword)
		}
		f.Orthanc.PasswordFile = filepath.Join(tmp, "orthanc.password")
		if err := os.WriteFile(f.Orthanc.PasswordFile, []byte("s3cret\n"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	c, err := f.Resolve()
	if err != nil {
		t.Fatalf("agent.json (placeholders filled) is refused by agent/config: %v\n%s", err, data)
	}
	return &parsed, c
}

// inDir puts dir in place of DIR in s, with the system's separator after
// it ("DIR/x" is dir\x on Windows), as the plan and script print paths.
func inDir(s, dir string) string {
	s = strings.ReplaceAll(s, "DIR/", dir+string(filepath.Separator))
	return strings.ReplaceAll(s, "DIR", dir)
}

// notFound is what the system says of a file that does not exist ("no
// such file or directory"; on Windows its own words), which the messages
// carry.
func notFound(t *testing.T) string {
	t.Helper()
	_, err := os.Stat(filepath.Join(t.TempDir(), "missing"))
	var pe *fs.PathError
	if !errors.As(err, &pe) {
		t.Fatalf("stat of a missing file: %v", err)
	}
	return pe.Err.Error()
}

// noPlanted fails if any planted value is in s.
func noPlanted(t *testing.T, what, s string) {
	t.Helper()
	for _, p := range planted {
		if strings.Contains(s, p) {
			t.Errorf("%s contains the planted secret %q", what, p)
		}
	}
}

// bookConfig copies one of the Orthanc book's configurations into a temp
// dir, with its credential file.
func bookConfig(t *testing.T, name string, files map[string]string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "book", name, "orthanc.json"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	all := map[string]string{"orthanc.json": string(data)}
	for k, v := range files {
		all[k] = v
	}
	writeTree(t, dir, all)
	return filepath.Join(dir, "orthanc.json")
}
