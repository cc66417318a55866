//go:build !windows

// Package swtpm starts software TPMs for tests: Debian's swtpm (package
// swtpm, with swtpm-tools) on Unix sockets, one process and one state
// directory per TPM, so that two of them are two different TPMs with two
// different storage root keys. The TPM's command socket is what the agent
// takes as its TPM device (internal/tpmkey opens a socket path with go-tpm's
// linuxudstpm transport).
package swtpm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TPM is one running swtpm.
type TPM struct {
	// Socket is the TPM command socket: the agent's TPM device.
	Socket string
	// StateDir holds the TPM's persistent state (its seeds).
	StateDir string
	cmd      *exec.Cmd
	done     chan struct{}
	stderr   bytes.Buffer
}

// Available reports whether swtpm can be run here.
func Available() error {
	if _, err := exec.LookPath("swtpm"); err != nil {
		return errors.New("swtpm is not installed (apt-get install swtpm swtpm-tools)")
	}
	return nil
}

// Require fails t when swtpm is missing and CI=true (CI installs it: see
// .ci/run), and skips t otherwise, saying so.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: the TPM tests must run in CI", err)
		}
		t.Skipf("%v; skipping the TPM test (outside CI; with CI=true it fails)", err)
	}
}

// Start starts a fresh TPM (new state: new seeds) and stops it when the test
// ends. It calls Require first.
func Start(t testing.TB) *TPM {
	t.Helper()
	Require(t)
	// Unix socket paths are limited to about 100 bytes: t.TempDir() can be
	// longer, so the sockets go to a short directory of their own.
	sockDir, err := os.MkdirTemp("", "swtpm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	tpm, err := start(t.TempDir(), sockDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tpm.Stop)
	return tpm
}

func start(stateDir, sockDir string) (*TPM, error) {
	s := &TPM{Socket: filepath.Join(sockDir, "tpm.sock"), StateDir: stateDir, done: make(chan struct{})}
	ctrl := filepath.Join(sockDir, "ctrl.sock")
	s.cmd = exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+stateDir,
		"--server", "type=unixio,path="+s.Socket,
		"--ctrl", "type=unixio,path="+ctrl,
		"--flags", "not-need-init,startup-clear")
	s.cmd.Stdout, s.cmd.Stderr = &s.stderr, &s.stderr
	// The kernel kills swtpm if the test process dies (Linux).
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("swtpm: %w", err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(s.Socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("swtpm exited at start: %s", s.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("swtpm: no socket %s after 10s: %s", s.Socket, s.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop ends the TPM process (its state directory stays).
func (s *TPM) Stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}
