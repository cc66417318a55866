// Package tpmkey is the agent's TPM-bound signing key: an ECDSA P-256 key
// created inside the host's TPM 2.0 and kept in a file only in wrapped form,
// the standard "TSS2 PRIVATE KEY" PEM (the format of tpm2-openssl and
// ssh-tpm-agent, github.com/foxboron/go-tpm-keyfiles). The wrapped key is
// encrypted to the TPM's storage root key (SRK), which never leaves that
// TPM: the file is useless anywhere else.
//
// Keys are created under the owner hierarchy's standard ECC P-256 SRK
// template (TCG "H-2", zero unique fields), which every TPM derives again
// from its owner seed, so nothing is made persistent in the TPM. Each
// signature recreates the SRK, loads the key, signs and flushes both
// transient objects: no handle outlives the call. The TPM is opened for
// each operation and closed after it.
//
// Keys have no auth value (no PIN) and no policy: the agent runs
// unattended, and the file's permissions protect it as they protect a
// plain key file.
package tpmkey

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"sync"

	keyfile "github.com/foxboron/go-tpm-keyfiles"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// PEMType is the PEM block type of a TPM-wrapped key file.
const PEMType = "TSS2 PRIVATE KEY"

// description is written into the key files this package creates.
const description = "orthanc-gcp-agent"

// tpmMu serialises every use of a TPM by this process. A TPM holds only a
// few transient objects at once (an SRK and a key per operation), and a
// Unix-socket TPM such as swtpm serves one command at a time.
var tpmMu sync.Mutex

// Key is a TPM-wrapped ECDSA P-256 key and the TPM it belongs to. It is a
// crypto.Signer; Sign needs the TPM, Public does not.
type Key struct {
	device string
	key    *keyfile.TPMKey
	pub    *ecdsa.PublicKey
}

var _ crypto.Signer = (*Key)(nil)

// New creates a P-256 signing key inside the TPM at device ("" is
// DefaultDevice) and returns it; PEM gives its file content.
func New(device string) (*Key, error) {
	tpmMu.Lock()
	defer tpmMu.Unlock()
	tpm, err := Open(device)
	if err != nil {
		return nil, err
	}
	defer tpm.Close()
	k, err := keyfile.NewLoadableKey(tpm, tpm2.TPMAlgECC, 256, nil, keyfile.WithDescription(description))
	if err != nil {
		return nil, fmt.Errorf("TPM %s: creating the key: %w", DeviceName(device), err)
	}
	// Round-trip through the file format, so that a new key is exactly
	// what a later Parse of its file accepts.
	return Parse(k.Bytes(), device)
}

// Parse reads a "TSS2 PRIVATE KEY" PEM file's content for the TPM at
// device ("" is DefaultDevice). It accepts only what this package
// creates: a loadable ECDSA P-256 signing key under the owner hierarchy,
// without auth value or policy. It does not use the TPM. Errors never
// include key material.
func Parse(data []byte, device string) (*Key, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != PEMType {
		return nil, fmt.Errorf("key file holds no PEM %q block", PEMType)
	}
	k, err := keyfile.Parse(block.Bytes)
	if err != nil {
		return nil, errors.New("key file holds no valid TPM key (TSS2 PRIVATE KEY)")
	}
	if !k.Keytype.Equal(keyfile.OIDLoadableKey) {
		return nil, errors.New("the TPM key is not a loadable key (only loadable keys are supported)")
	}
	if k.Parent != tpm2.TPMRHOwner {
		return nil, fmt.Errorf("the TPM key's parent is handle %#x; only keys under the owner hierarchy (%#x) are supported",
			uint32(k.Parent), uint32(tpm2.TPMRHOwner))
	}
	if !k.EmptyAuth || len(k.Policy) != 0 || len(k.AuthPolicy) != 0 {
		return nil, errors.New("the TPM key needs an auth value or a policy; the agent runs unattended and supports only keys without")
	}
	// keyfile panics on a public area it cannot decode: decode it here first.
	pub, err := k.Pubkey.Contents()
	if err != nil {
		return nil, errors.New("the TPM key's public area cannot be decoded")
	}
	if pub.Type != tpm2.TPMAlgECC || !pub.ObjectAttributes.SignEncrypt {
		return nil, errors.New("the TPM key is not an ECC signing key")
	}
	ecc, err := pub.Parameters.ECCDetail()
	if err != nil || ecc.CurveID != tpm2.TPMECCNistP256 {
		return nil, errors.New("the TPM key is not on the P-256 curve")
	}
	cp, err := tpm2.Pub(*pub)
	if err != nil {
		return nil, errors.New("the TPM key's public point cannot be decoded")
	}
	ek, ok := cp.(*ecdsa.PublicKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("the TPM key is not on the P-256 curve")
	}
	return &Key{device: device, key: k, pub: ek}, nil
}

// PEM is the key's file content ("TSS2 PRIVATE KEY").
func (k *Key) PEM() []byte {
	var b bytes.Buffer
	_ = keyfile.Encode(&b, k.key)
	return b.Bytes()
}

// Device is the TPM the key is used with, as given ("" is DefaultDevice).
func (k *Key) Device() string { return k.device }

// Public returns the *ecdsa.PublicKey (P-256).
func (k *Key) Public() crypto.PublicKey { return k.pub }

// Sign signs a SHA-256 digest in the TPM and returns the ASN.1 DER
// ECDSA signature, as crypto.Signer requires. rand is not used: the TPM
// makes the nonce.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) (sig []byte, err error) {
	if opts == nil || opts.HashFunc() != crypto.SHA256 || len(digest) != sha256.Size {
		return nil, errors.New("tpmkey: only SHA-256 digests are signed")
	}
	tpmMu.Lock()
	defer tpmMu.Unlock()
	tpm, err := Open(k.device)
	if err != nil {
		return nil, err
	}
	defer tpm.Close()
	defer func() {
		// keyfile panics on some malformed answers; the agent must not.
		if r := recover(); r != nil {
			sig, err = nil, fmt.Errorf("TPM %s: signing failed (%v)", DeviceName(k.device), r)
		}
	}()
	sig, err = keyfile.SignASN1(keyfile.NewTPMSession(tpm), k.key, nil, nil, digest, tpm2.TPMAlgSHA256, tpm2.TPMAlgECC)
	if err != nil {
		return nil, fmt.Errorf("TPM %s cannot sign with this key (made by another TPM, or this TPM was cleared?): %w",
			DeviceName(k.device), err)
	}
	return sig, nil
}

// Check signs a random digest with the key and verifies the signature
// with its public key: it proves that this TPM holds the key the file
// names, and that the TPM answers.
func (k *Key) Check() error {
	var d [sha256.Size]byte
	if _, err := rand.Read(d[:]); err != nil {
		return err
	}
	sig, err := k.Sign(nil, d[:], crypto.SHA256)
	if err != nil {
		return err
	}
	if !ecdsa.VerifyASN1(k.pub, d[:], sig) {
		return fmt.Errorf("TPM %s signed with a key other than the file's", DeviceName(k.device))
	}
	return nil
}

// Open opens the TPM at device ("" is DefaultDevice): see the per-system
// openDevice for what a device may be.
func Open(device string) (transport.TPMCloser, error) {
	tpm, err := openDevice(device)
	if err != nil {
		return nil, fmt.Errorf("opening the TPM %s: %w", DeviceName(device), err)
	}
	return tpm, nil
}
