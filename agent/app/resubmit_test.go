package app

import (
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/config"
)

// TestUpdateWiresConfig: the configuration's StoresInterval,
// ResubmitFailedJobs and StateDirectory reach the loop's settings, and its
// AllowedDicomWebHosts the Orthanc client's gate.
func TestUpdateWiresConfig(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	tests := []struct {
		name     string
		edit     func(c *config.Config)
		interval time.Duration
		resubmit bool
		path     string
		hosts    []string // the Orthanc client's allow-list; nil: config's default
	}{
		{"defaults as config resolves them", func(c *config.Config) {}, config.DefaultStoresInterval, true,
			filepath.Join(dir, "resubmitted-jobs.json"), nil},
		{"stores interval set", func(c *config.Config) { c.StoresInterval = 5 * time.Minute }, 5 * time.Minute, true,
			filepath.Join(dir, "resubmitted-jobs.json"), nil},
		{"resubmit off", func(c *config.Config) { c.ResubmitFailedJobs = false }, config.DefaultStoresInterval, false,
			filepath.Join(dir, "resubmitted-jobs.json"), nil},
		{"no state directory", func(c *config.Config) { c.StateDirectory = "" }, config.DefaultStoresInterval, true, "", nil},
		{"allowed hosts", func(c *config.Config) {
			c.AllowedDicomWebHosts = []string{"healthcare.europe-west4.rep.googleapis.com", "127.0.0.1:9"}
		},
			config.DefaultStoresInterval, true, filepath.Join(dir, "resubmitted-jobs.json"), []string{"healthcare.europe-west4.rep.googleapis.com", "127.0.0.1:9"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{BrokerURL: "http://127.0.0.1:1", AgentID: "clinic-a", Key: priv, OrthancURL: "http://127.0.0.1:2",
				StoresInterval: config.DefaultStoresInterval, ResubmitFailedJobs: true, StateDirectory: dir,
				AllowedDicomWebHosts: config.DefaultAllowedDicomWebHosts}
			tc.edit(cfg)
			u, _, err := build(cfg, time.Now, slog.New(slog.DiscardHandler), nil)
			if err != nil {
				t.Fatal(err)
			}
			if u.Settings.StoresInterval != tc.interval || u.Settings.ResubmitFailedJobs != tc.resubmit || u.Settings.ResubmitStatePath != tc.path {
				t.Errorf("settings %+v", u.Settings)
			}
			want := tc.hosts
			if want == nil {
				want = config.DefaultAllowedDicomWebHosts
			}
			if got := u.Orthanc.DicomWebHosts().Hosts(); !slices.Equal(got, want) {
				t.Errorf("the Orthanc client may push to %q, want %q", got, want)
			}
		})
	}
}
