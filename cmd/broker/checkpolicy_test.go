package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policysrc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
)

func testKey(t *testing.T) string {
	pub, _, err := agentkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return agentkey.FormatPublicKey(pub)
}

// fragments is a small valid fleet: a base, one account each, one agent each.
func fragments(t *testing.T, audience string) map[string]string {
	f := map[string]string{"base.json": fmt.Sprintf(`{"Audience":%q}`, audience)}
	for _, s := range []string{"s1", "s2"} {
		f["account-"+s+".json"] = fmt.Sprintf(`{"Accounts":{%q:{"Project":"p","Location":"l","Dataset":"d","DicomStore":%q,"ServiceAccountSecret":"/nonexistent.json"}}}`, s, s)
		f["agent-"+s+".json"] = fmt.Sprintf(`{"Agents":{"site-%s":{"PublicKey":%q,"Accounts":[%q]}}}`, s, testKey(t), s)
	}
	return f
}

func writeFragments(t *testing.T, files map[string]string) string {
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// fakeGCS serves a bucket from fake-gcs-server on loopback; the broker
// reaches it through BROKER_STORAGE_ENDPOINT.
func fakeGCS(t *testing.T, bucket string, objects map[string]string) (endpoint string, c *storage.Client) {
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", PublicHost: "127.0.0.1", Writer: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: bucket, VersioningEnabled: true})
	c, err = policysrc.NewStorageClient(context.Background(), srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for name, content := range objects {
		putObject(t, c, bucket, name, content)
	}
	return srv.URL(), c
}

func putObject(t *testing.T, c *storage.Client, bucket, name, content string) {
	w := c.Bucket(bucket).Object(name).NewWriter(context.Background())
	if _, err := io.WriteString(w, content); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func prefixed(prefix string, files map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range files {
		out[prefix+k] = v
	}
	return out
}

// runBroker runs the real binary (this test binary running main) with args.
func runBroker(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append([]string{"BROKER_TEST_RUN_MAIN=1", "HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return code, o.String(), e.String()
}

func TestCheckPolicy(t *testing.T) {
	good := fragments(t, "https://broker.example/")
	bad := fragments(t, "https://broker.example/")
	bad["account-s1.json"] = `{"Accounts":{"s1":{"Project":"p","Location":"l","Dataset":"d","DicomStore":"s1"}}}`
	bad["agent-s2.json"] = `{"Agents":{"site-s2":{"PublicKey":"not-a-key","Accounts":["s2"]}}}`
	bad["agent-s3.json"] = `{"Agents":{"site-s1":{"PublicKey":"` + testKey(t) + `","Accounts":["s1"]}}}`
	goodDir, badDir := writeFragments(t, good), writeFragments(t, bad)
	goodFile := filepath.Join(t.TempDir(), "policy.json")
	doc, _ := json.Marshal(map[string]any{"Audience": "https://broker.example/", "Accounts": map[string]any{
		"s": map[string]any{"Project": "p", "Location": "l", "Dataset": "d", "DicomStore": "s", "ServiceAccountSecret": "/k.json"}}})
	os.WriteFile(goodFile, doc, 0o600)
	badFile := filepath.Join(t.TempDir(), "policy.json")
	os.WriteFile(badFile, []byte(`{"Audience":"https://broker.example/","Accounts":{"s":{}}}`), 0o600)

	objects := prefixed("good/", good)
	for k, v := range prefixed("bad/", bad) {
		objects[k] = v
	}
	endpoint, _ := fakeGCS(t, "fleet-policy", objects)
	gcsEnv := []string{"BROKER_STORAGE_ENDPOINT=" + endpoint}

	tests := []struct {
		name     string
		args     []string
		env      []string
		code     int
		stdout   []string
		stderr   string
		notInOut string
	}{
		{name: "good directory", args: []string{"check-policy", goodDir}, stdout: []string{"ok: 2 accounts, 2 agents"}},
		{name: "bad directory: every bad fragment", args: []string{"check-policy", badDir}, code: 1, stdout: []string{
			fmt.Sprintf(`fragment %q: account "s1": no credential`, filepath.Join(badDir, "account-s1.json")),
			fmt.Sprintf(`fragment %q: agent "site-s2": PublicKey:`, filepath.Join(badDir, "agent-s2.json")),
			fmt.Sprintf(`agent "site-s1" is defined in fragments %q and %q`, filepath.Join(badDir, "agent-s1.json"), filepath.Join(badDir, "agent-s3.json")),
		}, stderr: "3 problem(s)"},
		{name: "good file", args: []string{"check-policy", goodFile}, stdout: []string{"ok: 1 accounts, 0 agents"}},
		{name: "bad file", args: []string{"check-policy", badFile}, code: 1, stdout: []string{`account "s": Project: required`, `account "s": no credential`}},
		{name: "missing file", args: []string{"check-policy", "/nonexistent/policy.json"}, code: 1, stdout: []string{"cannot read document"}},
		{name: "good gs:// prefix", args: []string{"check-policy", "gs://fleet-policy/good/"}, env: gcsEnv, stdout: []string{"ok: 2 accounts, 2 agents"}},
		{name: "bad gs:// prefix", args: []string{"check-policy", "gs://fleet-policy/bad/"}, env: gcsEnv, code: 1, stdout: []string{
			`fragment "gs://fleet-policy/bad/account-s1.json": account "s1": no credential`,
			`fragment "gs://fleet-policy/bad/agent-s2.json": agent "site-s2": PublicKey:`,
		}},
		{name: "gs:// prefix without a slash", args: []string{"check-policy", "gs://fleet-policy/good"}, env: gcsEnv, code: 1, stdout: []string{`the prefix must end in "/"`}},
		{name: "no source", args: []string{"check-policy"}, code: 2, stderr: "want exactly one SOURCE"},
		{name: "two sources", args: []string{"check-policy", goodDir, goodFile}, code: 2, stderr: "want exactly one SOURCE"},
		{name: "unknown command", args: []string{"chek-policy", goodDir}, code: 2, stderr: `unknown command "chek-policy"`},
		{name: "help", args: []string{"--help"}, stdout: []string{"broker check-policy SOURCE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runBroker(t, tt.env, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, stderr)
			}
		})
	}
}

// TestServesPolicyFromGCSPrefix: the broker started with BROKER_CONFIG=gs://…
// serves, and an agent fragment added to the prefix is in force after the
// next refresh while a bad one is refused naming the object.
func TestServesPolicyFromGCSPrefix(t *testing.T) {
	port := freePort(t)
	endpoint, c := fakeGCS(t, "fleet-policy", prefixed("policy/", fragments(t, "http://127.0.0.1:"+port)))
	cmd, _ := brokerCmd(t, `{}`, port)
	cmd.Env = append(cmd.Env, "BROKER_CONFIG=gs://fleet-policy/policy/", "BROKER_STORAGE_ENDPOINT="+endpoint, "BROKER_REFRESH=1s")
	var out syncBuffer // read while the process writes
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitLog := func(want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("log never showed %q:\n%s", want, out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitLog(`"message":"broker ready","accounts":2,"agents":2`)
	putObject(t, c, "fleet-policy", "policy/agent-s3.json", fmt.Sprintf(`{"Agents":{"site-s3":{"PublicKey":%q,"Accounts":["s1"]}}}`, testKey(t)))
	waitLog(`"message":"policy loaded","accounts":2,"agents":3`)
	putObject(t, c, "fleet-policy", "policy/agent-s4.json", `{"Agents":{"site-s4":{"PublicKey":"x","Accounts":["s9"]}}}`)
	waitLog(`policy reload refused; last good policy stays in force`)
	waitLog(`fragment \"gs://fleet-policy/policy/agent-s4.json\": agent \"site-s4\": PublicKey:`)
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
