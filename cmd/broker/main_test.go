package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
)

// The test binary runs main itself when asked, so the real start-up path
// (environment, policy validation, funcframework at the root path) is tested
// as a process.
func TestMain(m *testing.M) {
	if os.Getenv("BROKER_TEST_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

func brokerCmd(t *testing.T, policy, port string) (*exec.Cmd, *bytes.Buffer) {
	path := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{"BROKER_TEST_RUN_MAIN=1", "BROKER_CONFIG=" + path, "PORT=" + port,
		"BROKER_LISTEN_HOST=127.0.0.1", "HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	return cmd, &out
}

func TestInvalidPolicyStopsStartup(t *testing.T) {
	cmd, out := brokerCmd(t, `{"Audience":"https://b","Accounts":{"s":{"Project":"p","Location":"l","Dataset":"d","DicomStore":"x"}}}`, freePort(t))
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v\n%s", err, out)
	}
	if !strings.Contains(out.String(), `account \"s\": no credential`) && !strings.Contains(out.String(), `account "s": no credential`) {
		t.Fatalf("output does not name the account and problem:\n%s", out)
	}
}

func TestServesAtRootPath(t *testing.T) {
	pub, _, _ := agentkey.Generate()
	port := freePort(t)
	policy := fmt.Sprintf(`{"Audience":"http://127.0.0.1:%s","Accounts":{"s":{"Project":"p","Location":"l","Dataset":"d","DicomStore":"x","ServiceAccountSecret":"/nonexistent.json"}},
		"Agents":{"a":{"PublicKey":%q,"Accounts":["s"]}}}`, port, agentkey.FormatPublicKey(pub))
	cmd, out := brokerCmd(t, policy, port)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			cmd.Wait() // after this, out is no longer written
		}
	}
	t.Cleanup(stop)
	base := "http://127.0.0.1:" + port
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("/healthz: %d", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("broker never answered: %v\n%s", err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// FUNCTION_TARGET defaulted to Broker: the API is at the root, not /Broker.
	resp, err := http.Get(base + "/v1/stores")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/v1/stores without auth: %d, want 401", resp.StatusCode)
	}
	stop()
	if !strings.Contains(out.String(), `"message":"broker ready"`) {
		t.Errorf("no Cloud Logging start-up line:\n%s", out)
	}
}
