package migrate

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain lets the test binary stand in for the CLI that load-secrets.sh
// runs: `orthanc-gcp-agent migrate --orthanc-config FILE --print-credential NAME`.
func TestMain(m *testing.M) {
	if os.Getenv("MIGRATE_TEST_AS_AGENT") == "1" {
		args := os.Args[1:]
		if len(args) != 5 || args[0] != "migrate" || args[1] != "--orthanc-config" || args[3] != "--print-credential" {
			fmt.Fprintln(os.Stderr, "fake agent: unexpected arguments", args)
			os.Exit(2)
		}
		if err := PrintCredential(args[2], args[4], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeGcloud records each `gcloud secrets versions add SECRET --project=P
// --data-file=F|-` call: the arguments, and the data it would have stored.
const fakeGcloud = `#!/bin/sh
set -eu
[ "$1 $2 $3" = "secrets versions add" ] || { echo "fake gcloud: unexpected $*" >&2; exit 2; }
printf '%s\n' "$*" >> "$GCLOUD_LOG/calls"
case "$6" in
--data-file=-) cat > "$GCLOUD_LOG/$4.data" ;;
--data-file=*) cp "${6#--data-file=}" "$GCLOUD_LOG/$4.data" ;;
*) echo "fake gcloud: no --data-file" >&2; exit 2 ;;
esac
`

// TestLoadSecretsScript runs the generated script against a fake gcloud and
// the test binary as the agent: each secret gets exactly its credential
// (the file's bytes, or the inline authorized_user JSON through the pipe),
// under the id terraform derives for the prefix in use.
func TestLoadSecretsScript(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sa := saKeyJSON("sa@osimis-test.iam.gserviceaccount.com")
	user := gcloudUserJSON()
	writeTree(t, dir, map[string]string{
		"it's here/orthanc.json": gcp(acct("My.Store", `, "ServiceAccountFile": "keys/o'brien $(touch pwned).json"`),
			acct("user", `, "AuthorizedUserFile": "user.json"`), acct("Inline_User", inlineCred)),
		"it's here/keys/o'brien $(touch pwned).json": sa,
		"it's here/user.json":                        user,
	})
	bin := filepath.Join(dir, "bin")
	writeTree(t, bin, map[string]string{
		"gcloud":     fakeGcloud,
		"fake-agent": "#!/bin/sh\nMIGRATE_TEST_AS_AGENT=1 exec " + shellQuote(self) + " \"$@\"\n",
	})
	for _, f := range []string{"gcloud", "fake-agent"} {
		if err := os.Chmod(filepath.Join(bin, f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "it's here", "orthanc.json")
	out := filepath.Join(dir, "out")
	r := runOK(t, Options{OrthancConfig: cfg, OutDir: out, AgentCommand: filepath.Join(bin, "fake-agent")})
	if err := exec.Command(bash, "-n", filepath.Join(out, LoadSecretsFile)).Run(); err != nil {
		t.Fatalf("bash -n: %v", err)
	}
	inlineJSON := `{"type":"authorized_user","client_id":"id.apps.googleusercontent.com","client_secret":"` + plantedInlineSecret + `","refresh_token":"` + plantedInlineToken + `"}`

	for _, tc := range []struct {
		name   string
		env    []string
		prefix string
		fail   string // stderr part when the script must refuse
	}{
		{name: "default prefix", env: []string{"BROKER_PROJECT=my-broker-project"}, prefix: "ogb"},
		{name: "own prefix", env: []string{"BROKER_PROJECT=my-broker-project", "RESOURCE_PREFIX=abcdefgh"}, prefix: "abcdefgh"},
		{name: "no project", fail: "set BROKER_PROJECT"},
		{name: "bad project", env: []string{"BROKER_PROJECT=my project; rm -rf /"}, fail: "BROKER_PROJECT is not a project ID"},
		{name: "bad prefix", env: []string{"BROKER_PROJECT=my-broker-project", "RESOURCE_PREFIX=Ogb"}, fail: "RESOURCE_PREFIX must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logDir := t.TempDir()
			cmd := exec.Command(bash, filepath.Join(out, LoadSecretsFile))
			cmd.Dir = t.TempDir() // the script must not depend on the working directory
			cmd.Env = append([]string{"PATH=" + bin + ":/usr/bin:/bin", "GCLOUD_LOG=" + logDir}, tc.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cmd.Stdout = &stderr
			err := cmd.Run()
			noPlanted(t, "script output", stderr.String())
			if tc.fail != "" {
				if err == nil || !strings.Contains(stderr.String(), tc.fail) {
					t.Fatalf("script = %v, output %q; want a refusal with %q", err, stderr.String(), tc.fail)
				}
				if _, err := os.Stat(filepath.Join(logDir, "calls")); err == nil {
					t.Error("refused, yet called gcloud")
				}
				return
			}
			if err != nil {
				t.Fatalf("script: %v\n%s", err, stderr.String())
			}
			want := map[string]string{
				SecretID(tc.prefix, "My.Store", modeKey):               sa,
				SecretID(tc.prefix, "user", modeAuthorizedUser):        user,
				SecretID(tc.prefix, "Inline_User", modeAuthorizedUser): inlineJSON,
			}
			calls, _ := os.ReadFile(filepath.Join(logDir, "calls"))
			if n := strings.Count(string(calls), "\n"); n != len(want) {
				t.Errorf("%d gcloud calls, want %d:\n%s", n, len(want), calls)
			}
			for secret, data := range want {
				got, err := os.ReadFile(filepath.Join(logDir, secret+".data"))
				if err != nil {
					t.Errorf("secret %s not loaded: %v\ncalls:\n%s", secret, err, calls)
					continue
				}
				if string(got) != data {
					t.Errorf("secret %s got %q, want %q", secret, got, data)
				}
				if !strings.Contains(string(calls), "secrets versions add "+secret+" --project=my-broker-project --data-file=") {
					t.Errorf("no call for %s:\n%s", secret, calls)
				}
			}
			for _, p := range []string{"pwned"} {
				if _, err := os.Stat(filepath.Join(cmd.Dir, p)); err == nil {
					t.Error("a path in the configuration ran a command")
				}
			}
		})
	}
	noPlanted(t, "load-secrets.sh", r.script)
}
