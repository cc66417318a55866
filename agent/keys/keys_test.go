//go:build !windows

package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/tpmkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/swtpm"
)

// TestLoadFileKey: a PKCS#8 "PRIVATE KEY" file is an Ed25519 "file" key.
func TestLoadFileKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.key")
	pub, err := agentkey.WriteNew(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := Load(path, "/nonexistent/tpm")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.Signer.(ed25519.PrivateKey); !ok || k.Kind != KindFile || k.Public != agentkey.FormatPublicKey(pub) {
		t.Fatalf("got %T %q %q", k.Signer, k.Kind, k.Public)
	}
}

// TestCreateAndLoadBothKinds: Create makes a key of each kind, mode 0600,
// that Load reads back as the same key; neither overwrites.
func TestCreateAndLoadBothKinds(t *testing.T) {
	tpm := swtpm.Start(t)
	dir := t.TempDir()
	for _, kind := range []string{KindFile, KindTPM} {
		path := filepath.Join(dir, kind+".key")
		k, err := Create(path, kind, tpm.Socket)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v %v", kind, fi.Mode(), err)
		}
		l, err := Load(path, tpm.Socket)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if l.Kind != kind || l.Public != k.Public {
			t.Fatalf("%s: loaded %q %q, created %q", kind, l.Kind, l.Public, k.Public)
		}
		if _, err := agentkey.ParsePublicKey(l.Public); err != nil {
			t.Fatalf("%s: public line %q: %v", kind, l.Public, err)
		}
		before, _ := os.ReadFile(path)
		if _, err := Create(path, kind, tpm.Socket); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
			t.Errorf("%s: second Create: %v", kind, err)
		}
		if after, _ := os.ReadFile(path); string(after) != string(before) {
			t.Errorf("%s: key file changed", kind)
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, "tpm.key"))
	if block, _ := pem.Decode(data); block == nil || block.Type != tpmkey.PEMType {
		t.Fatal("the TPM key file is not a TSS2 PRIVATE KEY PEM")
	}
	k, _ := Load(filepath.Join(dir, "tpm.key"), tpm.Socket)
	if !strings.HasPrefix(k.Public, agentkey.PrefixECDSAP256) {
		t.Errorf("TPM key line %q", k.Public)
	}
	d := sha256.Sum256([]byte("x"))
	sig, err := k.Signer.Sign(nil, d[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(k.Signer.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Fatalf("TPM key signature: %v", err)
	}
}

// TestLoadRefuses: both kinds are refused when readable by others; a TPM
// key that its TPM cannot use, or whose TPM is missing, fails at Load.
func TestLoadRefuses(t *testing.T) {
	a, b := swtpm.Start(t), swtpm.Start(t)
	dir := t.TempDir()
	tpmKey := filepath.Join(dir, "tpm.key")
	if _, err := Create(tpmKey, KindTPM, a.Socket); err != nil {
		t.Fatal(err)
	}
	fileKey := filepath.Join(dir, "file.key")
	if _, err := Create(fileKey, KindFile, ""); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "cert.pem")
	os.WriteFile(other, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), 0o600)
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("not pem"), 0o600)

	for _, p := range []string{tpmKey, fileKey} {
		os.Chmod(p, 0o640)
		if _, err := Load(p, a.Socket); err == nil || !strings.Contains(err.Error(), "mode") {
			t.Errorf("%s readable by the group: %v", p, err)
		}
		os.Chmod(p, 0o600)
	}
	tests := []struct{ path, device, want string }{
		{tpmKey, b.Socket, "cannot sign with this key"},
		{tpmKey, filepath.Join(dir, "no-tpm"), "opening the TPM"},
		{other, a.Socket, `PEM "CERTIFICATE" block`},
		{junk, a.Socket, "no PEM block"},
	}
	for _, tc := range tests {
		_, err := Load(tc.path, tc.device)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("Load(%s, %s): %v, want %q", tc.path, tc.device, err, tc.want)
		}
	}
	if _, err := Create(filepath.Join(dir, "x.key"), "hsm", ""); err == nil {
		t.Error("unknown kind accepted")
	}
}
