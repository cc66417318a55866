//go:build !windows

package tpmkey

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/pem"
	"strings"
	"testing"

	keyfile "github.com/foxboron/go-tpm-keyfiles"
	"github.com/google/go-tpm/tpm2"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/swtpm"
)

// transientHandles counts the transient objects loaded in the TPM.
func transientHandles(t *testing.T, device string) int {
	t.Helper()
	tpm, err := Open(device)
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: 0x80000000, PropertyCount: 64}.Execute(tpm)
	if err != nil {
		t.Fatal(err)
	}
	h, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		t.Fatal(err)
	}
	return len(h.Handle)
}

// TestNewSignParse: a key made in the TPM signs SHA-256 digests that its
// public key verifies, its file parses back to the same key, and nothing
// stays loaded in the TPM afterwards.
func TestNewSignParse(t *testing.T) {
	tpm := swtpm.Start(t)
	k, err := New(tpm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	data := k.PEM()
	if block, _ := pem.Decode(data); block == nil || block.Type != "TSS2 PRIVATE KEY" {
		t.Fatalf("file is not a TSS2 PRIVATE KEY PEM: %q", data)
	}
	k2, err := Parse(data, tpm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if !k2.Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Fatal("parsed key has another public key")
	}
	d := sha256.Sum256([]byte("message"))
	sig, err := k2.Sign(nil, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Fatal("signature does not verify")
	}
	if err := k2.Check(); err != nil {
		t.Fatal(err)
	}
	if _, err := k2.Sign(nil, d[:20], crypto.SHA1); err == nil {
		t.Error("signed a SHA-1 digest")
	}
	if n := transientHandles(t, tpm.Socket); n != 0 {
		t.Errorf("%d transient objects left in the TPM", n)
	}
}

// TestCopyIsWorthless: the key file copied to another TPM cannot sign
// there; on its own TPM it still can.
func TestCopyIsWorthless(t *testing.T) {
	a, b := swtpm.Start(t), swtpm.Start(t)
	k, err := New(a.Socket)
	if err != nil {
		t.Fatal(err)
	}
	copyOnB, err := Parse(k.PEM(), b.Socket)
	if err != nil {
		t.Fatal(err)
	}
	err = copyOnB.Check()
	if err == nil {
		t.Fatal("the key file signed on another TPM")
	}
	if !strings.Contains(err.Error(), "cannot sign with this key") {
		t.Errorf("error %q does not say the TPM cannot use the key", err)
	}
	if bytes.Contains([]byte(err.Error()), k.key.Privkey.Buffer[:16]) {
		t.Error("error holds key material")
	}
	onA, _ := Parse(k.PEM(), a.Socket)
	if err := onA.Check(); err != nil {
		t.Fatalf("on its own TPM: %v", err)
	}
	if n := transientHandles(t, b.Socket); n != 0 {
		t.Errorf("%d transient objects left in TPM B after the failure", n)
	}
}

func TestParseRefuses(t *testing.T) {
	tpm := swtpm.Start(t)
	tpmc, err := Open(tpm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	rsa, err := keyfile.NewLoadableKey(tpmc, tpm2.TPMAlgRSA, 2048, nil)
	if err != nil {
		t.Fatal(err)
	}
	withAuth, err := keyfile.NewLoadableKey(tpmc, tpm2.TPMAlgECC, 256, nil, keyfile.WithUserAuth([]byte("1234")))
	if err != nil {
		t.Fatal(err)
	}
	p384, err := keyfile.NewLoadableKey(tpmc, tpm2.TPMAlgECC, 384, nil)
	tpmc.Close()
	good, err2 := New(tpm.Socket)
	if err2 != nil {
		t.Fatal(err2)
	}
	otherParent := *good.key
	otherParent.Parent = 0x81000001
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "no PEM"},
		{"PKCS#8", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2}}), "no PEM"},
		{"garbage", pem.EncodeToMemory(&pem.Block{Type: PEMType, Bytes: []byte("not DER")}), "no valid TPM key"},
		{"RSA", rsa.Bytes(), "not an ECC"},
		{"auth value", withAuth.Bytes(), "auth value"},
		{"persistent parent", otherParent.Bytes(), "parent"},
	}
	if err == nil {
		tests = append(tests, struct {
			name string
			data []byte
			want string
		}{"P-384", p384.Bytes(), "P-256"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.data, tpm.Socket)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestOpenMissingDevice(t *testing.T) {
	_, err := New(t.TempDir() + "/no-tpm")
	if err == nil || !strings.Contains(err.Error(), "opening the TPM") {
		t.Fatalf("New on a missing device: %v", err)
	}
}
