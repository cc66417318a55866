// Package keys loads and creates the agent's signing key in either of its
// two kinds, told apart by the key file's PEM type:
//
//   - "file": an Ed25519 key in the file itself (PEM "PRIVATE KEY",
//     PKCS#8), the default; assertions are signed EdDSA.
//   - "tpm": an ECDSA P-256 key inside the host's TPM 2.0, the file holding
//     only the TPM-wrapped key (PEM "TSS2 PRIVATE KEY", package
//     internal/tpmkey); assertions are signed ES256.
//
// Both kinds of file are checked the same way for permissions
// (agentkey.ReadPrivate) and created the same way (agentkey.WritePrivate:
// mode 0600 or a private DACL, never overwriting).
package keys

import (
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/tpmkey"
)

// Key kinds, as "agent status", /metrics and the logs name them.
const (
	KindFile = "file"
	KindTPM  = "tpm"
)

// NextSuffix makes the name of the key a rotation adopts: KeyFile + ".next".
const NextSuffix = ".next"

// NextPath is the file "agent rotate-key" creates for path.
func NextPath(path string) string { return path + NextSuffix }

// Key is a loaded agent key.
type Key struct {
	// Signer signs assertions: an ed25519.PrivateKey (file) or a
	// *tpmkey.Key (tpm).
	Signer crypto.Signer
	// Kind is KindFile or KindTPM.
	Kind string
	// Public is the policy line: "ed25519:…" or "ecdsa-p256:…".
	Public string
}

// Load reads the key file at path, of either kind. device is the TPM a
// "tpm" key is used with ("" is tpmkey.DefaultDevice). A TPM key is
// checked by signing with it once, so a key file copied from another host,
// a TPM that cannot be opened or one that was cleared fail here, naming
// the device. Errors never include key material.
func Load(path, device string) (*Key, error) {
	data, err := agentkey.ReadPrivate(path)
	if err != nil {
		return nil, err
	}
	k, err := parse(data, device)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if t, ok := k.Signer.(*tpmkey.Key); ok {
		if err := t.Check(); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return k, nil
}

// parse tells the kinds apart by the PEM type.
func parse(data []byte, device string) (*Key, error) {
	var (
		s    crypto.Signer
		kind string
	)
	switch typ := agentkey.PEMType(data); typ {
	case "PRIVATE KEY":
		priv, err := agentkey.ParsePrivateKey(data)
		if err != nil {
			return nil, err
		}
		s, kind = priv, KindFile
	case tpmkey.PEMType:
		t, err := tpmkey.Parse(data, device)
		if err != nil {
			return nil, err
		}
		s, kind = t, KindTPM
	case "":
		return nil, errors.New("key file holds no PEM block (want \"PRIVATE KEY\" or \"TSS2 PRIVATE KEY\")")
	default:
		return nil, fmt.Errorf("key file holds a PEM %q block; want \"PRIVATE KEY\" (Ed25519, from agent keygen) or \"TSS2 PRIVATE KEY\" (from agent keygen --tpm)",
			logtext.Truncate(logtext.Clip(typ), 40))
	}
	line, err := agentkey.FormatPublic(s.Public())
	if err != nil {
		return nil, err
	}
	return &Key{Signer: s, Kind: kind, Public: line}, nil
}

// Create makes a new key of kind at path (KindFile: Ed25519; KindTPM:
// P-256 inside the TPM at device) and returns it. It never overwrites
// anything at path.
func Create(path, kind, device string) (*Key, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("%s already exists; refusing to overwrite a key", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	switch kind {
	case KindFile:
		pub, err := agentkey.WriteNew(path)
		if err != nil {
			return nil, err
		}
		data, err := agentkey.ReadPrivate(path)
		if err != nil {
			return nil, err
		}
		k, err := parse(data, device)
		if err != nil {
			return nil, err
		}
		if k.Public != agentkey.FormatPublicKey(pub) {
			return nil, fmt.Errorf("%s: the key read back is not the key written", path)
		}
		return k, nil
	case KindTPM:
		t, err := tpmkey.New(device)
		if err != nil {
			return nil, err
		}
		if err := agentkey.WritePrivate(path, t.PEM()); err != nil {
			return nil, err
		}
		line, err := agentkey.FormatPublic(t.Public())
		if err != nil {
			return nil, err
		}
		return &Key{Signer: t, Kind: KindTPM, Public: line}, nil
	}
	return nil, fmt.Errorf("unknown key kind %q", kind)
}
