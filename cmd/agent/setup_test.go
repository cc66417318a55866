package main

// Helpers of the command tests that run on every platform, Windows (under
// wine) included.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
)

// setup makes a key, a fake broker granting two stores and a config file.
type setup struct {
	dir, key, cfg string
	broker        *agenttest.Broker
	env           map[string]string
}

func newSetup(t *testing.T, orthancURL, user, password string, extra map[string]any) *setup {
	t.Helper()
	s := &setup{dir: t.TempDir()}
	s.key = filepath.Join(s.dir, "agent.key")
	pub, err := agentkey.WriteNew(s.key)
	if err != nil {
		t.Fatal(err)
	}
	s.broker = agenttest.NewBroker(t, "clinic-a", pub)
	s.broker.Set(func(b *agenttest.Broker) {
		b.Grants = map[string]string{
			"my-google": "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb/",
			"second":    "http://127.0.0.1:9/dicomWeb/",
		}
	})
	orth := map[string]any{"Url": orthancURL, "DicomWebRoot": "/dicom-web/"}
	if user != "" {
		pw := filepath.Join(s.dir, "orthanc.pw")
		os.WriteFile(pw, []byte(password+"\n"), 0o600)
		orth["Username"], orth["PasswordFile"] = user, pw
	}
	doc := map[string]any{
		"Broker":        map[string]any{"Url": s.broker.URL, "AgentId": "clinic-a", "KeyFile": s.key, "Timeout": "5s"},
		"Orthanc":       orth,
		"Accounts":      []string{},
		"ServerOptions": map[string]any{"HasDelete": true, "ChunkedTransfers": true, "Timeout": 600},
		"RefreshMargin": "10m", "CheckInterval": "1s", "Listen": "127.0.0.1:0",
		// "second" is a loopback fake: listed with its port.
		"AllowedDicomWebHosts": []string{"healthcare.googleapis.com", "127.0.0.1:9"},
	}
	for k, v := range extra {
		doc[k] = v
	}
	s.cfg = filepath.Join(s.dir, "agent.json")
	s.writeConfig(t, doc)
	s.env = map[string]string{}
	return s
}

func (s *setup) writeConfig(t *testing.T, doc map[string]any) {
	data, _ := json.MarshalIndent(doc, "", "  ")
	if err := os.WriteFile(s.cfg, data, 0o640); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
