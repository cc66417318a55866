package app

import (
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/config"
)

// TestUpdateWiresConfig: the configuration's StoresInterval,
// ResubmitFailedJobs and StateDirectory reach the loop's settings.
func TestUpdateWiresConfig(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	tests := []struct {
		name     string
		edit     func(c *config.Config)
		interval time.Duration
		resubmit bool
		path     string
	}{
		{"defaults as config resolves them", func(c *config.Config) {}, config.DefaultStoresInterval, true,
			filepath.Join(dir, "resubmitted-jobs.json")},
		{"stores interval set", func(c *config.Config) { c.StoresInterval = 5 * time.Minute }, 5 * time.Minute, true,
			filepath.Join(dir, "resubmitted-jobs.json")},
		{"resubmit off", func(c *config.Config) { c.ResubmitFailedJobs = false }, config.DefaultStoresInterval, false,
			filepath.Join(dir, "resubmitted-jobs.json")},
		{"no state directory", func(c *config.Config) { c.StateDirectory = "" }, config.DefaultStoresInterval, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{BrokerURL: "http://127.0.0.1:1", AgentID: "clinic-a", Key: priv, OrthancURL: "http://127.0.0.1:2",
				StoresInterval: config.DefaultStoresInterval, ResubmitFailedJobs: true, StateDirectory: dir}
			tc.edit(cfg)
			u, err := update(cfg, time.Now)
			if err != nil {
				t.Fatal(err)
			}
			if u.Settings.StoresInterval != tc.interval || u.Settings.ResubmitFailedJobs != tc.resubmit || u.Settings.ResubmitStatePath != tc.path {
				t.Errorf("settings %+v", u.Settings)
			}
		})
	}
}
