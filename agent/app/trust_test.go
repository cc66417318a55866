package app

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/config"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/logcapture"
)

// TestRefusedStoresVisibleToOperators: a store refused because its host
// is not allowed, or because its name breaks the rule, makes /healthz
// 503 with the reason in the store's row, is counted in /metrics under its
// reason word, and nothing of it reaches Orthanc or the output as a token.
func TestRefusedStoresVisibleToOperators(t *testing.T) {
	const good = "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/a/dicomWeb/"
	tests := []struct {
		name      string
		store     string // the refused store, added to the grants
		url       string
		reason    string // metric label
		rowSays   string // in the refused store's last_error
		rowServer string // the refused store's "server"
	}{
		{"host not allowed", "store-b", "https://evil.example/dicomWeb/", "host_not_allowed", `\"evil.example:443\" is not in AllowedDicomWebHosts`, "store-b"},
		{"loopback http not listed", "store-b", "http://127.0.0.1:9/dicomWeb/", "host_not_allowed", `\"127.0.0.1:9\"`, "store-b"},
		{"bad store name", "../../peers/evil", good, "bad_store_name", "bad_store_name", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pub, priv, _ := ed25519.GenerateKey(rand.Reader)
			broker := agenttest.NewBroker(t, "clinic-a", pub)
			broker.Set(func(b *agenttest.Broker) { b.Grants = map[string]string{"store-a": good, tc.store: tc.url} })
			orth := agenttest.NewOrthanc(t, "", "")
			cfg := &config.Config{
				BrokerURL: broker.URL, AgentID: "clinic-a", Key: priv, BrokerTimeout: config.DefaultBrokerTimeout,
				OrthancURL: orth.URL, DicomWebRoot: config.DefaultDicomWebRoot,
				RefreshMargin: config.DefaultRefreshMargin, CheckInterval: config.DefaultCheckInterval,
				StoresInterval: config.DefaultStoresInterval, AllowedDicomWebHosts: config.DefaultAllowedDicomWebHosts,
			}
			logs := &logcapture.Buffer{}
			a, err := New(cfg, slog.New(slog.NewJSONHandler(logs, nil)), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Once(context.Background()); err == nil {
				t.Fatal("once succeeded with a refused store")
			}
			srv := httptest.NewServer(a.Handler())
			defer srv.Close()
			health, code := get(t, srv.URL+"/healthz")
			metrics, _ := get(t, srv.URL+"/metrics")
			if code != http.StatusServiceUnavailable || !strings.Contains(health, tc.rowSays) {
				t.Errorf("/healthz %d:\n%s", code, health)
			}
			var status struct {
				Stores []struct{ Store, Server, State string }
			}
			json.Unmarshal([]byte(health), &status)
			var row bool
			for _, st := range status.Stores {
				if st.Store == tc.store {
					row = st.Server == tc.rowServer && st.State == "error"
				}
			}
			if !row {
				t.Errorf("no error row for %q with server %q: %+v", tc.store, tc.rowServer, status.Stores)
			}
			if !strings.Contains(metrics, `orthanc_gcp_agent_failures_total{reason="`+tc.reason+`"} 1`) {
				t.Errorf("/metrics lacks the %s count:\n%s", tc.reason, grep(metrics, "failures_total"))
			}
			if orth.Entry("store-a") == nil || orth.Entry(tc.store) != nil {
				t.Errorf("Orthanc entries: store-a %v, %s %v", orth.Entry("store-a"), tc.store, orth.Entry(tc.store))
			}
			_, _, issued := broker.Snapshot()
			for _, tok := range issued {
				if strings.Contains(logs.String()+health+metrics, tok) {
					t.Fatal("a token is in the logs, /healthz or /metrics")
				}
			}
		})
	}
}

// TestNoAllowListNoAgent: a configuration whose AllowedDicomWebHosts is
// missing or unusable (only a hand-built Config has one; config.Resolve
// refuses them) stops the start: there is no default that allows a host,
// let alone every host.
func TestNoAllowListNoAgent(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	for _, hosts := range [][]string{nil, {}, {"*.googleapis.com"}} {
		cfg := &config.Config{
			BrokerURL: "https://broker.example", AgentID: "clinic-a", Key: priv, BrokerTimeout: config.DefaultBrokerTimeout,
			OrthancURL: config.DefaultOrthancURL, DicomWebRoot: config.DefaultDicomWebRoot,
			RefreshMargin: config.DefaultRefreshMargin, CheckInterval: config.DefaultCheckInterval,
			StoresInterval: config.DefaultStoresInterval, AllowedDicomWebHosts: hosts,
		}
		if a, err := New(cfg, slog.New(slog.DiscardHandler), nil); err == nil || a != nil || !strings.Contains(err.Error(), "AllowedDicomWebHosts") {
			t.Errorf("AllowedDicomWebHosts %#v: New = %v, %v; want an error naming the field", hosts, a, err)
		}
	}
}

func get(t *testing.T, u string) (string, int) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestPlainHTTPOrthancWarnsOnce: an Orthanc.Url that is plain http to a
// host that is not loopback is allowed, with one warning at start.
// 0.0.0.0 is not a loopback address, yet connecting to it reaches this
// host, so the fake Orthanc still answers.
func TestPlainHTTPOrthancWarnsOnce(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	broker := agenttest.NewBroker(t, "clinic-a", pub)
	broker.Set(func(b *agenttest.Broker) {
		b.Grants = map[string]string{"store-a": "https://healthcare.googleapis.com/v1/x/dicomWeb/"}
	})
	orth := agenttest.NewOrthanc(t, "", "")
	u, _ := url.Parse(orth.URL)
	dir := t.TempDir()
	key := filepath.Join(dir, "agent.key")
	if err := writeKey(key, priv); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		orthancURL string
		warnings   int
	}{
		{orth.URL, 0},
		{"http://0.0.0.0:" + u.Port(), 1},
	}
	for _, tc := range tests {
		t.Run(tc.orthancURL, func(t *testing.T) {
			cfg, err := config.Load("", func(k string) (string, bool) {
				v, ok := map[string]string{"AGENT_BROKER_URL": broker.URL, "AGENT_BROKER_AGENT_ID": "clinic-a",
					"AGENT_BROKER_KEY_FILE": key, "AGENT_ORTHANC_URL": tc.orthancURL}[k]
				return v, ok
			})
			if err != nil {
				t.Fatal(err)
			}
			logs := &logcapture.Buffer{}
			a, err := New(cfg, slog.New(slog.NewJSONHandler(logs, nil)), nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := a.Once(ctx); err != nil {
				t.Fatalf("once: %v", err)
			}
			if n := strings.Count(logs.String(), `"level":"WARN"`); n != tc.warnings {
				t.Errorf("%d warnings, want %d:\n%s", n, tc.warnings, logs.String())
			}
			if tc.warnings > 0 && !strings.Contains(logs.String(), "Orthanc.Url") {
				t.Errorf("the warning does not name Orthanc.Url:\n%s", logs.String())
			}
		})
	}
}

func writeKey(path string, priv ed25519.PrivateKey) error {
	pem, err := agentkey.MarshalPrivateKey(priv)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem, 0o600)
}
