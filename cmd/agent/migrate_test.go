package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The CLI wiring of agent/migrate (which has its own exhaustive tests):
// flags, exit codes, and the credential never going to a terminal.
func TestMigrateCommand(t *testing.T) {
	cfg, err := filepath.Abs("../../agent/migrate/testdata/book/user-inline/orthanc.json")
	if err != nil {
		t.Fatal(err)
	}
	const secret, refresh = "ZmssLNXXXXXX", "1/e2ngXXXXXX" // the book's placeholders, planted as values
	out := filepath.Join(t.TempDir(), "plan")
	run := func(terminal bool, args ...string) (int, string, string) {
		var o, e bytes.Buffer
		c := &cli{stdout: &o, stderr: &e, env: func(string) (string, bool) { return "", false },
			isTerminal: func() bool { return terminal }}
		return c.main(t.Context(), args), o.String(), e.String()
	}
	for _, tc := range []struct {
		name     string
		terminal bool
		args     []string
		wantCode int
		wantOut  string // substring of stdout ("" = none checked)
		wantErr  string // substring of stderr
	}{
		{"no config", false, []string{"migrate", "--out", out}, exitUsage, "", "--orthanc-config is required"},
		{"no out", false, []string{"migrate", "--orthanc-config", cfg}, exitUsage, "", "--out is required"},
		{"both modes", false, []string{"migrate", "--orthanc-config", cfg, "--out", out, "--print-credential", "my-google"}, exitUsage, "", "do not go together"},
		{"migrate", false, []string{"migrate", "--orthanc-config", cfg, "--out", out, "--broker-url", "https://broker.example", "--agent-id", "clinic-a"}, exitOK, "my-google", ""},
		{"never overwrites", false, []string{"migrate", "--orthanc-config", cfg, "--out", out}, exitFailure, "", "agent migrate:"},
		{"credential to a terminal", true, []string{"migrate", "--orthanc-config", cfg, "--print-credential", "my-google"}, exitFailure, "", "terminal"},
		{"unknown account", false, []string{"migrate", "--orthanc-config", cfg, "--print-credential", "nope"}, exitFailure, "", "nope"},
		{"credential to a pipe", false, []string{"migrate", "--orthanc-config", cfg, "--print-credential", "my-google"}, exitOK, `"authorized_user"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := run(tc.terminal, tc.args...)
			if code != tc.wantCode || !strings.Contains(stdout, tc.wantOut) || !strings.Contains(stderr, tc.wantErr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tc.wantCode, stdout, stderr)
			}
			if tc.name != "credential to a pipe" && (strings.Contains(stdout+stderr, secret) || strings.Contains(stdout+stderr, refresh)) {
				t.Fatalf("a credential value was printed:\n%s%s", stdout, stderr)
			}
			if tc.name == "credential to a pipe" {
				var cred map[string]string
				if err := json.Unmarshal([]byte(stdout), &cred); err != nil || cred["client_secret"] != secret || cred["refresh_token"] != refresh {
					t.Fatalf("credential JSON %q: %v", stdout, err)
				}
			}
		})
	}
	for _, f := range []string{"accounts.auto.tfvars.json", "load-secrets.sh", "agent.json"} {
		data, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(secret)) || bytes.Contains(data, []byte(refresh)) {
			t.Errorf("%s holds a credential value", f)
		}
	}
}
