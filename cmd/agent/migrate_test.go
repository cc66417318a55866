package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// The CLI wiring of agent/migrate (which has its own exhaustive tests):
// flags, exit codes, and the credential going only to a pipe: never to a
// terminal, nor to a file a shell redirect made (it would stay on disk).
func TestMigrateCommand(t *testing.T) {
	cfg, err := filepath.Abs("../../agent/migrate/testdata/book/user-inline/orthanc.json")
	if err != nil {
		t.Fatal(err)
	}
	const secret, refresh = "ZmssLNXXXXXX", "1/e2ngXXXXXX" // the book's placeholders, planted as values
	out := filepath.Join(t.TempDir(), "plan")
	// escFile is a file whose name holds ESC and U+009B (not a name
	// Windows allows: there the case is skipped).
	escFile := filepath.Join(t.TempDir(), "x\x1b[2J\u009b")
	if runtime.GOOS != "windows" {
		if err := os.WriteFile(escFile, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// run runs the CLI with stdout as the test says: "buffer" (not a
	// file), "pipe" (as `| gcloud …`), "file" (as `> file`) or "device"
	// (/dev/null, a character device as a terminal is). It returns what
	// reached stdout, whatever it was.
	run := func(t *testing.T, stdoutKind string, args ...string) (int, string, string) {
		var e bytes.Buffer
		c := &cli{stderr: &e, env: func(string) (string, bool) { return "", false }}
		var read func() string
		switch stdoutKind {
		case "buffer":
			var o bytes.Buffer
			c.stdout, read = &o, o.String
		case "pipe":
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
			c.stdout, read = w, func() string { w.Close(); return string(<-got) }
		case "file":
			path := filepath.Join(t.TempDir(), "credential.json")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			c.stdout, read = f, func() string {
				f.Close()
				data, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				return string(data)
			}
		case "device":
			f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			c.stdout, read = f, func() string { f.Close(); return "" }
		default:
			t.Fatalf("stdout %q", stdoutKind)
		}
		code := c.main(t.Context(), args)
		return code, read(), e.String()
	}
	printCred := []string{"migrate", "--orthanc-config", cfg, "--print-credential", "my-google"}
	for _, tc := range []struct {
		name     string
		stdout   string
		args     []string
		wantCode int
		wantOut  string // substring of stdout ("" = none checked)
		wantErr  string // substring of stderr
	}{
		{"no config", "buffer", []string{"migrate", "--out", out}, exitUsage, "", "--orthanc-config is required"},
		{"no out", "buffer", []string{"migrate", "--orthanc-config", cfg}, exitUsage, "", "--out is required"},
		{"both modes", "buffer", []string{"migrate", "--orthanc-config", cfg, "--out", out, "--print-credential", "my-google"}, exitUsage, "", "do not go together"},
		{"migrate", "buffer", []string{"migrate", "--orthanc-config", cfg, "--out", out, "--broker-url", "https://broker.example", "--agent-id", "clinic-a"}, exitOK, "my-google", ""},
		{"never overwrites", "buffer", []string{"migrate", "--orthanc-config", cfg, "--out", out}, exitFailure, "", "agent migrate:"},
		{"credential to a terminal", "device", printCred, exitFailure, "", "terminal"},
		{"credential to a regular file", "file", printCred, exitFailure, "", "refusing to print a credential to a regular file"},
		{"credential to a writer that is no file", "buffer", printCred, exitFailure, "", "| gcloud secrets versions add"},
		{"error names a path with control characters escaped", "buffer", []string{"migrate", "--orthanc-config", cfg, "--out", escFile}, exitFailure, "", `x\x1b[2J\u009b exists and is not a directory`},
		{"unknown account", "pipe", []string{"migrate", "--orthanc-config", cfg, "--print-credential", "nope"}, exitFailure, "", "nope"},
		{"credential to a pipe", "pipe", printCred, exitOK, `"authorized_user"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if runtime.GOOS == "windows" && slices.Contains(tc.args, escFile) {
				t.Skip("Windows file names cannot hold control characters")
			}
			code, stdout, stderr := run(t, tc.stdout, tc.args...)
			if code != tc.wantCode || !strings.Contains(stdout, tc.wantOut) || !strings.Contains(stderr, tc.wantErr) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tc.wantCode, stdout, stderr)
			}
			if tc.name != "credential to a pipe" && (strings.Contains(stdout+stderr, secret) || strings.Contains(stdout+stderr, refresh)) {
				t.Fatalf("a credential value was printed:\n%s%s", stdout, stderr)
			}
			if strings.ContainsAny(stdout+stderr, "\x1b\u009b") {
				t.Errorf("a raw control character was printed:\n%q\n%q", stdout, stderr)
			}
			if tc.wantCode != exitOK && stdout != "" {
				t.Errorf("refused, yet wrote %q", stdout)
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
