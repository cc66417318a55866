//go:build !windows

package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/keys"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/tpmkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/swtpm"
)

// TestLoadTPMKey: Broker.KeyFile holding a "TSS2 PRIVATE KEY" is loaded as
// a TPM key of Broker.TpmDevice (or AGENT_TPM_DEVICE); the same file with
// another TPM, or with none, is refused at load naming the field.
func TestLoadTPMKey(t *testing.T) {
	a, b := swtpm.Start(t), swtpm.Start(t)
	f := newFixture(t)
	tpmKey := filepath.Join(f.dir, "tpm.key")
	k, err := keys.Create(tpmKey, keys.KindTPM, a.Socket)
	if err != nil {
		t.Fatal(err)
	}
	doc := f.base()
	doc["Broker"].(map[string]any)["KeyFile"] = tpmKey
	doc["Broker"].(map[string]any)["TpmDevice"] = a.Socket
	path := f.write(t, doc)
	c, err := Load(path, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Key.(*tpmkey.Key); !ok || c.KeyKind != keys.KindTPM || c.KeyPublic != k.Public || c.TpmDevice != a.Socket {
		t.Fatalf("got %T %q %q %q", c.Key, c.KeyKind, c.KeyPublic, c.TpmDevice)
	}
	// The key file on another TPM (a copy on another host): refused.
	_, err = Load(path, envMap(map[string]string{"AGENT_TPM_DEVICE": b.Socket}))
	if err == nil || !strings.Contains(err.Error(), "Broker.KeyFile") || !strings.Contains(err.Error(), "cannot sign with this key") {
		t.Fatalf("other TPM: %v", err)
	}
	// No TPM there at all.
	_, err = Load(path, envMap(map[string]string{"AGENT_TPM_DEVICE": filepath.Join(f.dir, "none")}))
	if err == nil || !strings.Contains(err.Error(), "opening the TPM") {
		t.Fatalf("no TPM: %v", err)
	}
	// Readable by the group: refused like a file key.
	os.Chmod(tpmKey, 0o640)
	if _, err := Load(path, noEnv); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable TPM key: %v", err)
	}
}
