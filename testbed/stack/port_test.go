package stack

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
)

// The broker's port is free when chosen but bound a moment later; when
// another process takes it in between, the real broker fails with "address
// already in use" and the stack sets it up again on another port.
func TestFirstBrokerPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	picks := 0
	brokerPort = func() (int, error) {
		picks++
		if picks == 1 {
			return takenPort, nil
		}
		return freeLoopbackPort()
	}
	t.Cleanup(func() { brokerPort = freeLoopbackPort })

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bins, err := Build(ctx, filepath.Join(dir, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	cloud, err := fakegcp.StartCloud("broker@p.iam.gserviceaccount.com", ProjectID)
	if err != nil {
		t.Fatal(err)
	}
	defer cloud.Close()
	front, err := startFrontRecorder(cloud.DICOMweb)
	if err != nil {
		t.Fatal(err)
	}
	defer front.close()
	pub, _, _ := agentkey.Generate()
	var logs strings.Builder
	s := &Stack{Dir: dir, Bin: bins, Cloud: cloud, Front: front, AgentID: AgentID, now: time.Now,
		AgentPublicKey: agentkey.FormatPublicKey(pub), BrokerLogPath: filepath.Join(dir, "broker.log"),
		stores: []Store{{Name: "store-a", Secret: filepath.Join(dir, "nonexistent.json")}},
		Opts:   Options{BrokerRefresh: time.Hour, ReadyTimeout: 20 * time.Second},
		logf:   func(f string, a ...any) { fmt.Fprintf(&logs, f+"\n", a...) }}
	if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if s.broker != nil {
			s.broker.stop(syscall.SIGKILL, time.Second)
		}
	}()
	if err := s.startFirstBroker(); err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	if picks != 2 || strings.HasSuffix(s.BrokerURL, fmt.Sprint(":", takenPort)) {
		t.Fatalf("%d ports picked, broker at %s (taken: %d)", picks, s.BrokerURL, takenPort)
	}
	if !strings.Contains(logs.String(), "was taken before the broker bound it") {
		t.Errorf("the retry is not logged:\n%s", logs.String())
	}
	if s.policy.Audience != s.BrokerURL {
		t.Errorf("policy audience %s, broker %s", s.policy.Audience, s.BrokerURL)
	}
}
