package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
)

// The test binary runs main itself when asked, so the real start-up path
// (environment, policy validation, funcframework at the root path) is tested
// as a process.
func TestMain(m *testing.M) {
	if os.Getenv("BROKER_TEST_RUN_MAIN") == "1" {
		// Test-only: a short header timeout, so a test can watch a
		// half-sent request being cut without waiting the real 10 s.
		if v := os.Getenv("BROKER_TEST_READ_HEADER_TIMEOUT"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				panic(err)
			}
			limits.readHeader = d
		}
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
	// The API is at the root, not /Broker (as with FUNCTION_TARGET=Broker).
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

// running is a broker process; exited is closed once it has been waited for.
type running struct {
	cmd    *exec.Cmd
	out    *bytes.Buffer
	addr   string
	exited chan struct{}
}

// startBroker runs a broker process with a valid file policy and extra
// environment, and waits for /healthz.
func startBroker(t *testing.T, env ...string) running {
	t.Helper()
	pub, _, _ := agentkey.Generate()
	port := freePort(t)
	policy := fmt.Sprintf(`{"Audience":"http://127.0.0.1:%s","Accounts":{"s":{"Project":"p","Location":"l","Dataset":"d","DicomStore":"x","ServiceAccountSecret":"/nonexistent.json"}},
		"Agents":{"a":{"PublicKey":%q,"Accounts":["s"]}}}`, port, agentkey.FormatPublicKey(pub))
	return startBrokerOn(t, port, policy, env...)
}

// startBrokerOn runs a broker process on port with the given file policy
// and extra environment, and waits for /healthz.
func startBrokerOn(t *testing.T, port, policy string, env ...string) running {
	t.Helper()
	cmd, out := brokerCmd(t, policy, port)
	cmd.Env = append(cmd.Env, env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	addr := "127.0.0.1:" + port
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return running{cmd, out, addr, exited}
}

func TestServerLimits(t *testing.T) {
	srv := newServer(http.NotFoundHandler(), slog.New(slog.DiscardHandler), limits)
	tests := []struct {
		name   string
		got    time.Duration
		lo, hi time.Duration
	}{
		{"ReadHeaderTimeout", srv.ReadHeaderTimeout, time.Second, 10 * time.Second},
		{"ReadTimeout", srv.ReadTimeout, srv.ReadHeaderTimeout, 5 * time.Minute},
		{"WriteTimeout", srv.WriteTimeout, 35 * time.Second, 5 * time.Minute}, // a mint may take 30 s
		{"IdleTimeout", srv.IdleTimeout, time.Second, 10 * time.Minute},
		{"shutdown grace", limits.shutdownGrace, time.Second, 10 * time.Second}, // Cloud Run: 10 s to SIGKILL
	}
	for _, tt := range tests {
		if tt.got < tt.lo || tt.got > tt.hi {
			t.Errorf("%s = %s, want %s..%s", tt.name, tt.got, tt.lo, tt.hi)
		}
	}
	if srv.MaxHeaderBytes < 8<<10 || srv.MaxHeaderBytes > 64<<10 {
		t.Errorf("MaxHeaderBytes = %d", srv.MaxHeaderBytes)
	}
}

func TestHalfSentHeaderIsCut(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr := startBroker(t, "BROKER_TEST_READ_HEADER_TIMEOUT="+timeout.String()).addr
	tests := []struct{ name, sent string }{
		{"nothing", ""},
		{"request line only", "GET /healthz HTTP/1.1\r\n"},
		{"unfinished header", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			if _, err := io.WriteString(c, tt.sent); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second)) // our patience, not the server's
			n, err := c.Read(make([]byte, 512))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open after %s (read %d bytes)", time.Since(start).Round(time.Millisecond), n)
			}
			if err == nil {
				t.Fatalf("server answered %d bytes to a half-sent request", n)
			}
			if el := time.Since(start); el < timeout/2 {
				t.Errorf("closed after %s, before the header timeout", el)
			}
		})
	}
	// A complete request on a fresh connection is still served.
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz after the cut connections: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestSIGTERMStopsGracefully(t *testing.T) {
	b := startBroker(t)
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.exited:
	case <-time.After(limits.shutdownGrace + 5*time.Second):
		t.Fatal("broker did not stop after SIGTERM")
	}
	if code := b.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0\n%s", code, b.out)
	}
	if !strings.Contains(b.out.String(), `"message":"broker stopped"`) {
		t.Errorf("no shutdown log line:\n%s", b.out)
	}
}
