//go:build !windows

// The end-to-end tests start Orthanc and send Unix signals (testbed/proc is
// Unix only); the Windows build is vetted and built, not run.

package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/logcapture"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
)

func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb logcapture.Buffer
	c := &cli{stdout: &out, stderr: &errb, env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	code := c.main(context.Background(), args)
	return code, out.String(), errb.String()
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "agent.key")
	code, out, errs := runCLI(t, nil, "keygen", "--out", key)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	line := strings.TrimSpace(out)
	pub, err := agentkey.ParsePublicKey(line)
	if err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("stdout %q is not one public key line: %v", out, err)
	}
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v %v", fi.Mode(), err)
	}
	priv, err := agentkey.ReadFile(key)
	if err != nil || !priv.Public().(ed25519.PublicKey).Equal(pub) {
		t.Fatal("printed public key does not match the file")
	}
	before, _ := os.ReadFile(key)
	if code, _, errs := runCLI(t, nil, "keygen", "--out", key); code == 0 || !strings.Contains(errs, "refusing to overwrite") {
		t.Errorf("overwrite: exit %d %s", code, errs)
	}
	if after, _ := os.ReadFile(key); !bytes.Equal(before, after) {
		t.Error("key file changed")
	}
	if code, _, _ := runCLI(t, nil, "keygen"); code != exitUsage {
		t.Errorf("keygen without --out: %d", code)
	}
}

func TestVersionAndUsage(t *testing.T) {
	code, out, _ := runCLI(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "orthanc-gcp-agent ") || !strings.Contains(out, runtime.Version()) {
		t.Errorf("version: %d %q", code, out)
	}
	tests := []struct {
		args []string
		code int
	}{
		{nil, exitUsage},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"run", "--bogus"}, exitUsage},
		{[]string{"once", "extra-arg"}, exitUsage},
		{[]string{"status", "--config", "a", "--addr", "b"}, exitUsage},
		{[]string{"help"}, exitOK},
	}
	for _, tc := range tests {
		if code, _, _ := runCLI(t, nil, tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d", tc.args, code, tc.code)
		}
	}
}

func TestOnce(t *testing.T) {
	orth := agenttest.NewOrthanc(t, "agent", "orthanc-pw")
	s := newSetup(t, orth.URL, "agent", "orthanc-pw", nil)
	code, _, errs := runCLI(t, s.env, "once", "--config", s.cfg)
	if code != 0 {
		t.Fatalf("once: exit %d\n%s", code, errs)
	}
	_, _, issued := s.broker.Snapshot()
	if len(issued) != 2 || orth.Bearer("my-google") == "" || orth.Bearer("second") == "" {
		t.Fatalf("issued %d, entries %v %v", len(issued), orth.Entry("my-google"), orth.Entry("second"))
	}
	for _, tok := range issued {
		if strings.Contains(errs, tok) {
			t.Fatal("token in the log output")
		}
	}
	if strings.Contains(errs, "orthanc-pw") {
		t.Fatal("Orthanc password in the log output")
	}

	// Config from $AGENT_CONFIG, broker down: exit 1 with a reason.
	s.broker.Set(func(b *agenttest.Broker) { b.Fail = 503 })
	code, _, errs = runCLI(t, map[string]string{"AGENT_CONFIG": s.cfg}, "once")
	if code != exitFailure || !strings.Contains(errs, "HTTP 503") {
		t.Errorf("broker down: exit %d\n%s", code, errs)
	}
	// A store error is a failure too.
	s.broker.Set(func(b *agenttest.Broker) {
		b.Fail = 0
		b.StoreErrors["second"] = agenttest.StoreError{Code: wire.CodeUpstream, Message: "Google said 500"}
	})
	code, _, errs = runCLI(t, s.env, "once", "--config", s.cfg)
	if code != exitFailure || !strings.Contains(errs, "second") {
		t.Errorf("store error: exit %d\n%s", code, errs)
	}
	// Wrong Orthanc password: failure.
	code, _, errs = runCLI(t, map[string]string{"AGENT_ORTHANC_PASSWORD_FILE": s.key}, "once", "--config", s.cfg)
	if code != exitFailure {
		t.Errorf("bad orthanc password: exit %d\n%s", code, errs)
	}
	// Invalid configuration names the field.
	code, _, errs = runCLI(t, map[string]string{"AGENT_REFRESH_MARGIN": "soon"}, "once", "--config", s.cfg)
	if code != exitFailure || !strings.Contains(errs, "RefreshMargin") {
		t.Errorf("bad config: exit %d\n%s", code, errs)
	}
	os.Chmod(s.key, 0o644)
	code, _, errs = runCLI(t, s.env, "once", "--config", s.cfg)
	if code != exitFailure || !strings.Contains(errs, "Broker.KeyFile") {
		t.Errorf("readable key: exit %d\n%s", code, errs)
	}
}

func TestRunStatusReloadStop(t *testing.T) {
	orth := agenttest.NewOrthanc(t, "", "")
	s := newSetup(t, orth.URL, "", "", nil)
	var out, errs logcapture.Buffer
	reload := make(chan struct{}, 1)
	addrCh := make(chan string, 1)
	c := &cli{stdout: &out, stderr: &errs, env: func(string) (string, bool) { return "", false },
		reload: reload, onListen: func(a string) { addrCh <- a }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int)
	go func() { done <- c.main(ctx, []string{"run", "--config", s.cfg}) }()
	var addr string
	select {
	case addr = <-addrCh:
	case code := <-done:
		t.Fatalf("run exited %d: %s", code, errs.String())
	}
	waitHealthy(t, addr)

	// agent status --addr prints the table and exits 0 when healthy.
	code, sout, serr := runCLI(t, nil, "status", "--addr", addr)
	if code != 0 || !strings.Contains(sout, "my-google") || !strings.Contains(sout, "TOKEN EXPIRES IN") || !strings.Contains(sout, "; key file\n") {
		t.Errorf("status: %d %s %s", code, sout, serr)
	}
	// agent status --config finds the address from AGENT_LISTEN / the file.
	code, _, serr = runCLI(t, map[string]string{"AGENT_LISTEN": addr}, "status", "--config", s.cfg)
	if code != 0 {
		t.Errorf("status --config: %d %s", code, serr)
	}

	// Orthanc loses its entries: re-pushed within CheckInterval (1 s).
	orth.Restart()
	waitFor(t, 5*time.Second, func() bool { return orth.Entry("my-google") != nil })

	// SIGHUP: a new config with other options is applied and re-pushed.
	doc := map[string]any{}
	data, _ := os.ReadFile(s.cfg)
	json.Unmarshal(data, &doc)
	doc["ServerOptions"] = map[string]any{"HasDelete": false}
	doc["Accounts"] = []string{"my-google"}
	s.writeConfig(t, doc)
	reload <- struct{}{}
	waitFor(t, 5*time.Second, func() bool {
		e := orth.Entry("my-google")
		return e != nil && e["HasDelete"] == false && orth.Entry("second") == nil
	})
	// A broken config on reload is refused; the agent keeps running.
	os.WriteFile(s.cfg, []byte(`{"Broker":{"Url":"http://bad.example"}}`), 0o640)
	reload <- struct{}{}
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(errs.String(), "configuration reload refused") })
	waitHealthy(t, addr)

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("run exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
	_, _, issued := s.broker.Snapshot()
	for _, tok := range issued {
		if strings.Contains(errs.String(), tok) {
			t.Fatal("token in logs")
		}
	}
	// Not answering any more.
	if code, _, _ := runCLI(t, nil, "status", "--addr", addr); code != exitUnreachable {
		t.Errorf("status of a stopped agent: %d", code)
	}
}

func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	waitFor(t, 10*time.Second, func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// TestBinaryAgainstRealOrthanc builds the agent, runs it as a process
// against Orthanc 1.10 from the Debian package and the contract broker,
// and checks SIGHUP and SIGTERM handling.
func TestBinaryAgainstRealOrthanc(t *testing.T) {
	if err := orthancproc.Available(); err != nil {
		t.Fatal(err)
	}
	inst, err := orthancproc.Start(orthancproc.Options{Name: "agentcmd", Users: map[string]string{"agent": "orthanc-pw"},
		DicomWebServers: map[string]any{"from-config": map[string]any{"Url": "https://config.example/"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Stop()
	s := newSetup(t, inst.URL, "agent", "orthanc-pw", nil)

	bin := filepath.Join(t.TempDir(), "agent")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// once against the real Orthanc.
	if out, err := exec.Command(bin, "once", "--config", s.cfg).CombinedOutput(); err != nil {
		t.Fatalf("once: %v\n%s", err, out)
	}
	listServers := func() map[string]map[string]any {
		var m map[string]map[string]any
		if err := inst.Do("GET", "/dicom-web/servers?expand", nil, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := listServers()
	if m["my-google"]["OrthancGcpAgent"] != "clinic-a" || m["my-google"]["HasDelete"] != "1" || m["from-config"] == nil {
		t.Fatalf("servers after once: %v", m)
	}

	var logs logcapture.Buffer
	cmd := exec.Command(bin, "run", "--config", s.cfg)
	cmd.Env = append(os.Environ(), "AGENT_LISTEN=127.0.0.1:0", "AGENT_LOG_LEVEL=debug")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var addr string
	waitFor(t, 10*time.Second, func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			var l struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "health and metrics listening" {
				addr = l.Addr
				return true
			}
		}
		return false
	})
	waitHealthy(t, addr)

	// Orthanc restarts and forgets the REST-created entries.
	if err := inst.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return listServers()["my-google"] != nil })

	// SIGHUP with a narrower Accounts list: "second" is deleted.
	doc := map[string]any{}
	data, _ := os.ReadFile(s.cfg)
	json.Unmarshal(data, &doc)
	doc["Accounts"] = []string{"my-google"}
	s.writeConfig(t, doc)
	cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, func() bool { return listServers()["second"] == nil })
	if listServers()["from-config"] == nil {
		t.Error("config-file server touched")
	}

	cmd.Process.Signal(syscall.SIGTERM)
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	_, _, issued := s.broker.Snapshot()
	for _, tok := range issued {
		if strings.Contains(logs.String(), tok) {
			t.Fatal("token in the daemon's logs")
		}
	}
	if !strings.Contains(logs.String(), `"msg":"agent stopped"`) {
		t.Errorf("no clean stop logged:\n%s", logs.String())
	}
}

// TestStartAndSyncRefusals: what the agent refuses at start (naming the
// field) and what "once" refuses to push (naming the host).
func TestStartAndSyncRefusals(t *testing.T) {
	orth := agenttest.NewOrthanc(t, "agent", "orthanc-pw")
	tests := []struct {
		name   string
		mutate func(doc map[string]any) // changes the config document
		raw    func(data []byte) []byte // or rewrites the file's bytes
		env    map[string]string
		want   []string // in stderr
	}{
		{name: "world-readable password file", mutate: func(doc map[string]any) {
			os.Chmod(doc["Orthanc"].(map[string]any)["PasswordFile"].(string), 0o644)
		}, want: []string{"Orthanc.PasswordFile", "others"}},
		{name: "host entry is a URL", mutate: func(doc map[string]any) {
			doc["AllowedDicomWebHosts"] = []string{"https://healthcare.googleapis.com/"}
		}, want: []string{"AllowedDicomWebHosts[0]"}},
		{name: "duplicate key", raw: func(data []byte) []byte {
			data = bytes.TrimSpace(data) // ends with the closing brace
			return append(data[:len(data)-1], []byte(`,"Listen":"127.0.0.1:1"}`)...)
		}, want: []string{"Listen: duplicate key"}},
		{name: "loopback store not allowed by the environment's list",
			env:  map[string]string{"AGENT_ALLOWED_DICOMWEB_HOSTS": "healthcare.googleapis.com"},
			want: []string{`second: error (host_not_allowed: dicomweb_url host "127.0.0.1:9" is not in AllowedDicomWebHosts`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t, orth.URL, "agent", "orthanc-pw", nil)
			data, _ := os.ReadFile(s.cfg)
			switch {
			case tc.mutate != nil:
				doc := map[string]any{}
				json.Unmarshal(data, &doc)
				tc.mutate(doc)
				s.writeConfig(t, doc)
			case tc.raw != nil:
				os.WriteFile(s.cfg, tc.raw(data), 0o640)
			}
			code, _, errs := runCLI(t, tc.env, "once", "--config", s.cfg)
			if code != exitFailure {
				t.Fatalf("exit %d, want %d\n%s", code, exitFailure, errs)
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errs)
				}
			}
			if strings.Contains(errs, "orthanc-pw") {
				t.Error("the Orthanc password is in the output")
			}
			_, _, issued := s.broker.Snapshot()
			for _, tok := range issued {
				if strings.Contains(errs, tok) {
					t.Fatal("a token is in the output")
				}
			}
		})
	}
	if orth.Entry("second") != nil {
		t.Error("the refused loopback store was pushed")
	}
}
