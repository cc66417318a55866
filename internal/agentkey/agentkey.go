// Package agentkey reads and writes agent keys in the project's two
// formats: the private key file an agent keeps (PEM PKCS#8, mode 0600) and
// the public key line registered in the broker policy: "ed25519:" +
// standard base64, with padding, of the raw 32-byte key, or "ecdsa-p256:"
// + standard base64 of the 65-byte uncompressed P-256 point (the kind a TPM
// makes).
package agentkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// Prefixes of the public key lines, one per key kind.
const (
	Prefix          = "ed25519:"
	PrefixECDSAP256 = "ecdsa-p256:"
)

// FormatPublicKey returns the policy form of an Ed25519 key.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return Prefix + base64.StdEncoding.EncodeToString(pub)
}

// FormatECDSAP256 returns the policy form of a P-256 key.
func FormatECDSAP256(pub *ecdsa.PublicKey) (string, error) {
	if pub == nil || pub.Curve != elliptic.P256() {
		return "", errors.New("not a P-256 public key")
	}
	raw, err := pub.Bytes()
	if err != nil {
		return "", err
	}
	return PrefixECDSAP256 + base64.StdEncoding.EncodeToString(raw), nil
}

// ParsePublicKey parses a policy public key line into an
// ed25519.PublicKey or a *ecdsa.PublicKey on P-256. It accepts only the
// canonical base64 so that one key has exactly one spelling in a policy,
// and a P-256 point only if it is on the curve.
func ParsePublicKey(s string) (crypto.PublicKey, error) {
	kind, rest := "", ""
	switch {
	case strings.HasPrefix(s, Prefix):
		kind, rest = Prefix, s[len(Prefix):]
	case strings.HasPrefix(s, PrefixECDSAP256):
		kind, rest = PrefixECDSAP256, s[len(PrefixECDSAP256):]
	default:
		return nil, fmt.Errorf("public key must start with %q or %q", Prefix, PrefixECDSAP256)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(rest)
	// The decoder skips CR/LF even in strict mode; insist on one spelling.
	if err != nil || base64.StdEncoding.EncodeToString(raw) != rest {
		return nil, errors.New("public key is not valid standard base64")
	}
	if kind == PrefixECDSAP256 {
		if len(raw) != p256PointSize {
			return nil, fmt.Errorf("ecdsa-p256 public key is %d bytes, want %d (uncompressed point)", len(raw), p256PointSize)
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
		if err != nil {
			return nil, errors.New("ecdsa-p256 public key is not a point on the P-256 curve")
		}
		return pub, nil
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key is %d bytes, want %d", len(raw), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

// p256PointSize is an uncompressed P-256 point: 0x04 || X || Y.
const p256PointSize = 65

// Generate makes a new key pair.
func Generate() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}

// MarshalPrivateKey encodes priv as a PEM "PRIVATE KEY" (PKCS#8) block.
func MarshalPrivateKey(priv ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKey decodes a PEM PKCS#8 Ed25519 private key. Errors never
// include key bytes.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("key file holds no PEM \"PRIVATE KEY\" block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("key file holds no valid PKCS#8 private key")
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("key file holds a key that is not Ed25519")
	}
	return priv, nil
}

// WriteNew generates a key pair and writes the private key to path with mode
// 0600 (on Windows: owned by the current user, with a protected DACL
// granting only SYSTEM, Administrators and that user). It never overwrites
// an existing file.
func WriteNew(path string) (ed25519.PublicKey, error) {
	pub, priv, err := Generate()
	if err != nil {
		return nil, err
	}
	data, err := MarshalPrivateKey(priv)
	if err != nil {
		return nil, err
	}
	if err := WritePrivate(path, data); err != nil {
		return nil, err
	}
	return pub, nil
}

// WritePrivate creates path holding data, as a private key file: mode 0600
// (on Windows: a protected DACL granting only SYSTEM, Administrators and
// the current user). It never overwrites anything, not even through a
// dangling symlink, and removes what it created if the write fails.
func WritePrivate(path string, data []byte) error {
	f, err := createPrivate(path)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; refusing to overwrite a key", path)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// MaxKeyFileSize bounds what ReadPrivate reads: an Ed25519 PKCS#8 PEM is
// about 120 bytes, a TPM-wrapped key about 700.
const MaxKeyFileSize = 64 << 10

// ReadPrivate reads a private key file of any kind, refusing a file that
// group or others can read: a readable agent key lets anyone on the host
// act as the agent (a TPM-wrapped key, anyone on the host with access to
// the TPM). On Unix that is any mode bit for group or others; on Windows,
// an ACL entry that lets anyone but SYSTEM, Administrators, the file's owner,
// the agent's service SID or the account the agent runs as read or change
// the file (see CheckDACL). It refuses
// anything but a regular file, and one larger than MaxKeyFileSize.
func ReadPrivate(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if err := checkPrivate(path, fi); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxKeyFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxKeyFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a key file", path, MaxKeyFileSize)
	}
	return data, nil
}

// PEMType is the type of the first PEM block of data ("PRIVATE KEY",
// "TSS2 PRIVATE KEY", ...), or "" if data holds none.
func PEMType(data []byte) string {
	block, _ := pem.Decode(data)
	if block == nil {
		return ""
	}
	return block.Type
}

// FormatPublic returns the policy form of an Ed25519 or a P-256 public key.
func FormatPublic(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", errors.New("not an Ed25519 public key")
		}
		return FormatPublicKey(k), nil
	case *ecdsa.PublicKey:
		return FormatECDSAP256(k)
	}
	return "", fmt.Errorf("a %T is neither an Ed25519 nor a P-256 public key", pub)
}

// ReadFile loads an Ed25519 private key file, with ReadPrivate's checks.
func ReadFile(path string) (ed25519.PrivateKey, error) {
	data, err := ReadPrivate(path)
	if err != nil {
		return nil, err
	}
	priv, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return priv, nil
}
