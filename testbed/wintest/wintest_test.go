//go:build linux

// Package wintest runs the Windows agent (agent.exe) under wine against the
// real test stack on loopback: the broker, the Google fakes and a real
// Linux Orthanc (testbed/stack). scripts/windows-test.sh (make
// windows-test) builds agent.exe and the wine root and sets the variables
// below; without them the test skips.
package wintest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/stack"
)

// winAgentID is the Windows agent's id in the policy: distinct from the
// stack's Linux agent, so a pushed entry proves the Windows key was used.
const winAgentID = "win-agent"

type env struct{ root, prefix, exe, work string }

func getEnv(t *testing.T) env {
	e := env{os.Getenv("WINE_ROOT"), os.Getenv("WINE_PREFIX"), os.Getenv("AGENT_EXE"), os.Getenv("WORK_DIR")}
	if e.root == "" || e.prefix == "" || e.exe == "" || e.work == "" {
		t.Skip("run by scripts/windows-test.sh (make windows-test): needs WINE_ROOT, WINE_PREFIX, AGENT_EXE and WORK_DIR")
	}
	return e
}

// wine runs agent.exe ARGS in the wine root (chroot; the root shares this
// machine's network namespace, so loopback reaches the stack) with umask
// 077, and returns stdout, stderr and the error.
func (e env) wine(ctx context.Context, args ...string) (string, string, error) {
	sh := `umask 077; cd "$1" && shift && exec wine "$@"`
	argv := append([]string{e.root, "env", "-i", "PATH=/usr/bin:/bin", "HOME=/root", "WINEPREFIX=" + e.prefix,
		"WINEDEBUG=-all", "XDG_RUNTIME_DIR=/tmp", "LANG=C.UTF-8", "sh", "-c", sh, "sh", e.work, e.exe}, args...)
	cmd := exec.CommandContext(ctx, "chroot", argv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// winPath is path as agent.exe sees it: wine's Z: drive is the root.
func winPath(path string) string { return "Z:" + filepath.ToSlash(path) }

func TestAgentExeUnderWine(t *testing.T) {
	e := getEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := stack.New(ctx, stack.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The Linux agent pushed the entries; stop it and delete them, so only
	// agent.exe can bring them back.
	if err := s.StopAgent(); err != nil {
		t.Fatal(err)
	}
	for _, st := range s.Stores() {
		if err := s.Site.DoContext(ctx, http.MethodDelete, orthancproc.DICOMwebRoot+"servers/"+st.Name, nil, nil); err != nil {
			t.Fatalf("deleting %s from the site Orthanc: %v", st.Name, err)
		}
	}
	if _, servers, err := stack.Servers(ctx, s.Site); err != nil || len(servers) != 0 {
		t.Fatalf("site Orthanc servers after deleting: %v, %v", servers, err)
	}

	dir := filepath.Join(e.work, "win")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "agent.key")
	out, errOut, err := e.wine(ctx, "keygen", "--out", winPath(keyFile))
	if err != nil {
		t.Fatalf("agent.exe keygen: %v\n%s", err, errOut)
	}
	pub := strings.TrimSpace(out)
	if !strings.HasPrefix(pub, "ed25519:") {
		t.Fatalf("agent.exe keygen printed %q, want an ed25519: line (stderr %s)", out, errOut)
	}
	t.Logf("agent.exe keygen: %s", pub)
	// keygen's own check: the key it made is refused by nobody, including
	// its DACL check (agent.exe keygen refuses to overwrite, so try again).
	if _, errOut, err := e.wine(ctx, "keygen", "--out", winPath(keyFile)); err == nil {
		t.Errorf("agent.exe keygen overwrote an existing key (stderr %s)", errOut)
	}

	pwFile := filepath.Join(dir, "orthanc.password")
	pw, err := os.ReadFile(s.AgentPasswordPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pwFile, pw, 0o600); err != nil {
		t.Fatal(err)
	}
	var accounts []string
	for _, st := range s.Stores() {
		accounts = append(accounts, st.Name)
	}
	if err := s.UpdatePolicy(func(p *stack.Policy) {
		p.Agents[winAgentID] = &stack.PolicyAgent{PublicKey: pub, Accounts: accounts}
	}); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"Broker": map[string]string{"Url": s.AgentBrokerURL, "AgentId": winAgentID, "KeyFile": winPath(keyFile), "Timeout": "10s"},
		"Orthanc": map[string]string{"Url": s.Site.URL, "Username": stack.AgentUser, "PasswordFile": winPath(pwFile),
			"DicomWebRoot": orthancproc.DICOMwebRoot},
		"AllowedDicomWebHosts": s.AgentAllowedDicomWebHosts,
	}
	data, _ := json.MarshalIndent(cfg, "", "  ")
	cfgFile := filepath.Join(dir, "agent.json")
	if err := os.WriteFile(cfgFile, data, 0o600); err != nil {
		t.Fatal(err)
	}

	// The broker re-reads its policy every second: try until it knows the
	// new agent.
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, errOut, err := e.wine(ctx, "once", "--config", winPath(cfgFile))
		if err == nil {
			t.Logf("agent.exe once: ok\n%s%s", out, errOut)
			break
		}
		last = fmt.Sprintf("%v\n%s%s", err, out, errOut)
		if time.Now().After(deadline) {
			t.Fatalf("agent.exe once never succeeded; last: %s", last)
		}
		time.Sleep(time.Second)
	}

	_, servers, err := stack.Servers(ctx, s.Site)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range s.Stores() {
		def, ok := servers[st.Name]
		if !ok {
			t.Errorf("the site Orthanc has no server %s after agent.exe once: %v", st.Name, servers)
			continue
		}
		if def["Url"] != st.DICOMwebURL {
			t.Errorf("server %s Url = %v, want %s", st.Name, def["Url"], st.DICOMwebURL)
		}
	}
	audit, err := s.BrokerLogs()
	if err == nil && !bytes.Contains(audit, []byte(`"agent":"`+winAgentID+`"`)) {
		t.Errorf("the broker's log has no token issued to %s", winAgentID)
	}
}
