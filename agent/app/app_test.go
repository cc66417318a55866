package app

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/config"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/logcapture"
)

// TestNoSecretInLogsStatusOrMetrics runs the agent as app wires it through
// refresh, re-push, broker failure and revocation, then checks everything
// an operator can see: logs, /healthz and /metrics.
func TestNoSecretInLogsStatusOrMetrics(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	clock := agenttest.NewClock(time.Now().Truncate(time.Second))
	broker := agenttest.NewBroker(t, "clinic-a", pub)
	broker.Set(func(b *agenttest.Broker) {
		b.Now = clock.Now
		b.Grants = map[string]string{
			"store-a": "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/a/dicomWeb/",
			"store-b": "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/b/dicomWeb/",
		}
	})
	orth := agenttest.NewOrthanc(t, "agent", "pw")
	cfg := &config.Config{
		BrokerURL: broker.URL, AgentID: "clinic-a", Key: priv, BrokerTimeout: config.DefaultBrokerTimeout,
		OrthancURL: orth.URL, OrthancUsername: "agent", OrthancPassword: "pw", DicomWebRoot: config.DefaultDicomWebRoot,
		RefreshMargin: config.DefaultRefreshMargin, CheckInterval: config.DefaultCheckInterval,
		StoresInterval: config.DefaultStoresInterval, AllowedDicomWebHosts: config.DefaultAllowedDicomWebHosts,
	}
	logs := &logcapture.Buffer{}
	a, err := New(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	steps := []struct {
		name   string
		before func()
	}{
		{"first sync", func() {}},
		{"refresh", func() { clock.Advance(55 * time.Minute) }},
		{"re-push", func() { orth.Restart() }},
		{"broker failing", func() { broker.Set(func(b *agenttest.Broker) { b.Fail = 502 }) }},
		{"revoke", func() {
			broker.Set(func(b *agenttest.Broker) {
				b.Fail = 0
				delete(b.Grants, "store-b")
			})
		}},
	}
	for _, st := range steps {
		st.before()
		_ = a.Once(ctx) // failures are part of the cycle
	}

	// Everything an operator can see.
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	var seen strings.Builder
	seen.WriteString(logs.String())
	for _, p := range []string{"/healthz", "/metrics"} {
		resp, err := srv.Client().Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen.Write(b)
	}
	out := seen.String()
	_, _, issued := broker.Snapshot()
	if len(issued) < 4 {
		t.Fatalf("only %d tokens issued; the cycle did not run", len(issued))
	}
	for _, tok := range issued {
		if strings.Contains(out, tok) {
			t.Fatalf("token %s... appears in logs/status/metrics", tok[:12])
		}
	}
	pem, _ := agentkey.MarshalPrivateKey(priv)
	for _, secret := range []string{string(pem), base64.StdEncoding.EncodeToString(priv.Seed()),
		base64.RawURLEncoding.EncodeToString(priv.Seed()), "pw\""} {
		if strings.Contains(out, secret) {
			t.Fatalf("key material or password appears in logs")
		}
	}
	for _, must := range []string{"pushed token to Orthanc", "token received", "deleted Orthanc entry", "orthanc_gcp_agent_pushes_total",
		// The loop records into the metrics the handler serves.
		"orthanc_gcp_agent_deletes_total 1", `orthanc_gcp_agent_failures_total{reason="broker_error"} 1`,
		`orthanc_gcp_agent_token_expiry_seconds{store="store-a"}`,
		// Re-sending failed uploads (ResubmitFailedJobs is off here), from the loop's snapshot.
		`orthanc_gcp_agent_resubmit_state{state="disabled"} 1`, "orthanc_gcp_agent_jobs_given_up_total 0",
		// The kind of the key, in /metrics and /healthz.
		`orthanc_gcp_agent_key_info{kind="file"} 1`, `"key_kind": "file"`} {
		if !strings.Contains(out, must) {
			t.Errorf("expected %q in the captured output", must)
		}
	}
	// Every log line is JSON.
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Fatalf("not JSON: %s", line)
		}
	}
}

// TestRunWaitsForReload: a reload still reading the configuration when the
// agent is told to stop finishes before Run returns, so nothing is logged
// after "agent stopped" (the Windows service closes its event log then).
func TestRunWaitsForReload(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	broker := agenttest.NewBroker(t, "clinic-a", pub)
	orth := agenttest.NewOrthanc(t, "", "")
	cfg := &config.Config{
		BrokerURL: broker.URL, AgentID: "clinic-a", Key: priv, BrokerTimeout: config.DefaultBrokerTimeout,
		OrthancURL: orth.URL, DicomWebRoot: config.DefaultDicomWebRoot,
		RefreshMargin: config.DefaultRefreshMargin, CheckInterval: config.DefaultCheckInterval,
		StoresInterval: config.DefaultStoresInterval, AllowedDicomWebHosts: config.DefaultAllowedDicomWebHosts,
	}
	logs := &logcapture.Buffer{}
	a, err := New(cfg, slog.New(slog.NewJSONHandler(logs, nil)), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	entered, release, returned := make(chan struct{}), make(chan struct{}), make(chan struct{})
	load := func() (*config.Config, error) {
		defer close(returned)
		close(entered)
		<-release
		return nil, errors.New("the configuration file is gone")
	}
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan struct{}, 1)
	reload <- struct{}{}
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx, reload, load) }()
	<-entered
	cancel()
	time.AfterFunc(50*time.Millisecond, func() { close(release) })
	if err := <-runDone; err != nil {
		t.Fatalf("Run: %v", err)
	}
	select {
	case <-returned:
	default:
		t.Fatal("Run returned while a reload was still loading the configuration")
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, `"msg":"agent stopped"`) {
		t.Errorf("the last log line is not \"agent stopped\": %s", last)
	}
	if !strings.Contains(logs.String(), "configuration reload refused") {
		t.Errorf("the refused reload is not logged:\n%s", logs.String())
	}
}
