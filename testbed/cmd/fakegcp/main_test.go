package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as the fakegcp binary when re-executed.
func TestMain(m *testing.M) {
	if os.Getenv("FAKEGCP_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestBinaryWritesStateAndStopsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	setup := filepath.Join(dir, "setup.json")
	const sa = "dicom-sa@demo-project.iam.gserviceaccount.com"
	doc := `{"ServiceAccounts":[{"Email":"` + sa + `","Secret":"projects/demo-project/secrets/dicom-sa","File":"dicom-sa.json"}]}`
	if err := os.WriteFile(setup, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	statePath := filepath.Join(dir, "state.json")
	cmd := exec.Command(os.Args[0], "--setup", setup, "--state", statePath, "--out-dir", filepath.Join(dir, "out"), "--quiet")
	cmd.Env = append(os.Environ(), "FAKEGCP_TEST_MAIN=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	})

	var state struct {
		Pid             int
		AdminUrl        string
		TokenUrl        string
		ServiceAccounts []struct{ File, SecretVersion string }
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(statePath)
		if err == nil {
			if err := json.Unmarshal(b, &state); err != nil {
				t.Fatalf("partial or bad state file: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no state file")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if state.Pid != cmd.Process.Pid || len(state.ServiceAccounts) != 1 ||
		state.ServiceAccounts[0].SecretVersion != "projects/demo-project/secrets/dicom-sa/versions/1" {
		t.Fatalf("state %+v", state)
	}
	if _, err := os.Stat(state.ServiceAccounts[0].File); err != nil {
		t.Fatalf("key file: %v", err)
	}
	resp, err := http.Get(state.AdminUrl + "/counters")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("admin /counters: %d", resp.StatusCode)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop on SIGTERM")
	}
	if _, err := http.Get(state.TokenUrl); err == nil {
		t.Error("token endpoint still up after exit")
	}
}
