package stack

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

func TestStoreOfPath(t *testing.T) {
	cases := []struct{ in, want string }{
		{"/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb/studies", "projects/p/locations/l/datasets/d/dicomStores/s"},
		{"/v1/projects/p/locations/l/datasets/d/dicomStores/s", "projects/p/locations/l/datasets/d/dicomStores/s"},
		{"/v1/projects/p/locations", ""},
		{"/v2/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb/", ""},
		{"/", ""},
	}
	for _, c := range cases {
		if got := storeOfPath(c.in); got != c.want {
			t.Errorf("storeOfPath(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestStoreName(t *testing.T) {
	cases := []struct {
		i    int
		want string
	}{{0, "store-a"}, {1, "store-b"}, {25, "store-z"}, {26, "store-26"}}
	for _, c := range cases {
		if got := StoreName(c.i); got != c.want {
			t.Errorf("StoreName(%d) = %q, want %q", c.i, got, c.want)
		}
	}
}

func TestPolicyEdits(t *testing.T) {
	dir := t.TempDir()
	s := &Stack{AgentID: AgentID, PolicyPath: filepath.Join(dir, "policy.json"),
		stores: []Store{{Name: "store-a"}, {Name: "store-b"}}}
	s.policy = &Policy{Audience: "http://127.0.0.1:1", BaseUrl: "http://127.0.0.1:2/v1/",
		Accounts: map[string]*PolicyAccount{"store-a": {DicomStore: "store-a"}, "store-b": {DicomStore: "store-b"}},
		Agents:   map[string]*PolicyAgent{AgentID: {PublicKey: "ed25519:x", Accounts: []string{"store-a", "store-b"}}}}
	read := func() []string {
		data, err := os.ReadFile(s.PolicyPath)
		if err != nil {
			t.Fatal(err)
		}
		var p Policy
		if err := json.Unmarshal(data, &p); err != nil {
			t.Fatal(err)
		}
		return p.Agents[AgentID].Accounts
	}
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"revoke b", func() error { return s.RevokeStore("store-b") }, []string{"store-a"}},
		{"revoke b again", func() error { return s.RevokeStore("store-b") }, []string{"store-a"}},
		{"grant b", func() error { return s.GrantStore("store-b") }, []string{"store-a", "store-b"}},
		{"grant b again", func() error { return s.GrantStore("store-b") }, []string{"store-a", "store-b"}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := read(); !slices.Equal(got, st.want) {
			t.Errorf("%s: file has %v, want %v", st.name, got, st.want)
		}
		if got := s.Policy().Agents[AgentID].Accounts; !slices.Equal(got, st.want) {
			t.Errorf("%s: Policy() has %v, want %v", st.name, got, st.want)
		}
	}
	if err := s.RevokeStore("nope"); err == nil {
		t.Error("revoking an unknown store succeeded")
	}
	// Policy returns a copy: editing it changes nothing.
	p := s.Policy()
	p.Agents[AgentID].Accounts = nil
	if len(s.Policy().Agents[AgentID].Accounts) != 2 {
		t.Error("Policy() exposed the stack's own document")
	}
	if st, err := os.Stat(s.PolicyPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("policy file mode %v (err %v), want 0600", st.Mode().Perm(), err)
	}
}

func TestBrokerTap(t *testing.T) {
	broker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/tokens":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"tokens":[{"store":"store-a","sealed_access_token":"c2VhbGVk","token_type":"Bearer","expires_at":"2030-01-01T00:00:00Z"},
				{"store":"store-b","access_token":"ya29.two","token_type":"Bearer","expires_at":"2030-01-01T00:00:00Z"}]}`)
		default:
			io.WriteString(w, `{"stores":[]}`)
		}
	}))
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tap, err := startBrokerTap(broker.URL, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	defer tap.close()
	logPath := filepath.Join(t.TempDir(), "tap.log")
	if tap.log, err = openEventLog(logPath); err != nil {
		t.Fatal(err)
	}
	defer tap.log.close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(method, path string) (string, error) {
		req, _ := http.NewRequest(method, tap.URL()+path, strings.NewReader("{}"))
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	for i := 0; i < 2; i++ {
		body, err := get(http.MethodPost, "/v1/tokens")
		if err != nil || !strings.Contains(body, "ya29.two") {
			t.Fatalf("the agent's answer was altered: %q, %v", body, err)
		}
	}
	if _, err := get(http.MethodGet, "/v1/stores"); err != nil {
		t.Fatal(err)
	}
	if got := tap.Requests(); got["POST /v1/tokens"] != 2 || got["GET /v1/stores"] != 1 || tap.TotalRequests() != 3 {
		t.Errorf("requests %v", got)
	}
	issued := tap.Issued()
	if len(issued) != 4 || issued[0].Store != "store-a" || issued[0].Sealed != "c2VhbGVk" || issued[0].Plaintext ||
		!issued[0].SeenAt.Equal(now) || issued[0].ExpiresAt.Year() != 2030 || !issued[1].Plaintext {
		t.Errorf("issued %+v", issued)
	}
	// Broker down: the agent sees a dropped connection, not an HTTP answer.
	broker.Close()
	if body, err := get(http.MethodGet, "/v1/stores"); err == nil {
		t.Errorf("with the broker down the tap answered %q", body)
	}
	// One line per request, the dropped one with status 0, no token.
	data, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], `"path":"/v1/tokens","status":200`) ||
		!strings.Contains(lines[3], `"path":"/v1/stores","status":0`) || strings.Contains(string(data), "ya29") {
		t.Errorf("tap log:\n%s", data)
	}
}

func TestFrontRecorder(t *testing.T) {
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer good" {
			io.WriteString(w, "[]")
			return
		}
		w.WriteHeader(http.StatusForbidden)
	})
	f, err := startFrontRecorder(next)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	store := "projects/p/locations/l/datasets/d/dicomStores/s"
	for _, tok := range []string{"good", "good", "bad", ""} {
		req, _ := http.NewRequest(http.MethodGet, f.URL()+"/v1/"+store+"/dicomWeb/studies", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if got := f.Statuses(store); got[200] != 2 || got[403] != 2 {
		t.Errorf("statuses %v", got)
	}
	want := []string{wire.Fingerprint("bad"), wire.Fingerprint("good")}
	slices.Sort(want)
	if got := f.BearerFingerprints(store); !slices.Equal(got, want) {
		t.Errorf("fingerprints %v, want %v", got, want)
	}
	evs := f.Events(store, time.Now().Add(-time.Minute), time.Now())
	if len(evs) != 4 {
		t.Fatalf("%d events, want 4: %+v", len(evs), evs)
	}
	if ev := evs[2]; ev.Method != http.MethodGet || ev.Store != store || ev.Path != "dicomWeb/studies" ||
		ev.Status != http.StatusForbidden || ev.Fingerprint != wire.Fingerprint("bad") || ev.End.Before(ev.Start) {
		t.Errorf("third event %+v", ev)
	}
	if evs[3].Fingerprint != "" || evs[0].Status != http.StatusOK {
		t.Errorf("events %+v", evs)
	}
	if got := f.Events(store, time.Now().Add(time.Minute), time.Now().Add(2*time.Minute)); len(got) != 0 {
		t.Errorf("events after the requests: %+v", got)
	}
	if got := f.Events("projects/p/locations/l/datasets/d/dicomStores/other", time.Time{}, time.Now()); len(got) != 0 {
		t.Errorf("events of another store: %+v", got)
	}
}

func TestWaitFor(t *testing.T) {
	s := &Stack{now: time.Now}
	n := 0
	if _, err := s.WaitFor(context.Background(), 5*time.Second, "third call", func() (bool, error) {
		n++
		return n == 3, errors.New("not yet")
	}); err != nil || n != 3 {
		t.Errorf("WaitFor: n=%d err=%v", n, err)
	}
	_, err := s.WaitFor(context.Background(), 120*time.Millisecond, "never", func() (bool, error) {
		return false, errors.New("still no")
	})
	if err == nil || !strings.Contains(err.Error(), "still no") {
		t.Errorf("timeout error %v, want the last condition error", err)
	}
	start := time.Now()
	_, err = s.WaitFor(context.Background(), 10*time.Second, "dead", func() (bool, error) {
		return false, errNotRunning
	})
	if !errors.Is(err, errNotRunning) || time.Since(start) > time.Second {
		t.Errorf("a dead process should end the wait at once: %v after %s", err, time.Since(start))
	}
}

func TestProcessStartStop(t *testing.T) {
	dir := t.TempDir()
	p := &process{name: "sleeper", path: "/bin/sh", args: []string{"-c", "echo started; exec sleep 30"},
		env: []string{"PATH=/usr/bin:/bin"}, logPath: filepath.Join(dir, "log")}
	// waitRuns polls the log until n runs have written their line.
	waitRuns := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			data, _ := os.ReadFile(p.logPath)
			if strings.Count(string(data), "started") == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("log %q: want %d runs appended", data, n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	if !p.running() || p.pid() == 0 {
		t.Fatal("not running after start")
	}
	if err := p.start(); err == nil {
		t.Error("a second start while running succeeded")
	}
	waitRuns(1)
	t0 := time.Now()
	if err := p.stop(syscall.SIGTERM, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if p.running() || p.pid() != 0 || time.Since(t0) > 3*time.Second {
		t.Errorf("running=%v pid=%d after stop taking %s", p.running(), p.pid(), time.Since(t0))
	}
	if p.exitErr() == nil {
		t.Error("a process killed by SIGTERM reported a clean exit")
	}
	if err := p.stop(syscall.SIGTERM, time.Second); err != nil {
		t.Errorf("stopping a stopped process: %v", err)
	}
	if err := p.start(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	waitRuns(2)
	if err := p.stop(syscall.SIGKILL, time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited():
	default:
		t.Error("exited() not closed after stop")
	}
}

func TestAudit(t *testing.T) {
	dir := t.TempDir()
	s := &Stack{BrokerLogPath: filepath.Join(dir, "broker.log")}
	log := `{"severity":"INFO","message":"broker ready"}
not json at all "token_issued"
{"severity":"INFO","message":"token issued","event":"token_issued","agent":"site-a","account":"store-a","expires_at":"2030-01-01T00:00:00Z","token_sha256":"0123456789abcdef","client":"127.0.0.1:1","cached":true}
{"severity":"INFO","message":"other","event":"something","note":"token_issued"}
`
	if err := os.WriteFile(s.BrokerLogPath, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	lines, err := s.Audit()
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || lines[0].Account != "store-a" || lines[0].Fingerprint != "0123456789abcdef" || !lines[0].Cached || lines[0].ExpiresAt.Year() != 2030 {
		t.Errorf("audit %+v", lines)
	}
}
