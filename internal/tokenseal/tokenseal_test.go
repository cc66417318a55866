package tokenseal

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"
)

const token = "ya29.a0-secret-access-token"

func newKey(t *testing.T) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	agent := newKey(t)
	sealed, err := Seal(agent.PublicKey(), "my-google", token)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, token) || strings.ContainsAny(sealed, "=+/") {
		t.Fatalf("sealed %q: holds the token or is not unpadded base64url", sealed)
	}
	got, err := Open(agent, "my-google", sealed)
	if err != nil || got != token {
		t.Fatalf("Open = %q, %v", got, err)
	}
	again, _ := Seal(agent.PublicKey(), "my-google", token)
	if again == sealed {
		t.Fatal("two seals of one token are identical: the encapsulated key is not fresh")
	}

	other := newKey(t)
	raw, _ := base64.RawURLEncoding.DecodeString(sealed)
	flipped := append([]byte(nil), raw...)
	flipped[len(flipped)-1] ^= 1
	// The standard alphabet differs from the URL one only where a seal
	// has '+', '/' or padding; a seal without them (a few per cent) would
	// read the same either way, so take one that has them.
	std := base64.StdEncoding.EncodeToString(raw)
	for std == sealed {
		resealed, err := Seal(agent.PublicKey(), "my-google", token)
		if err != nil {
			t.Fatal(err)
		}
		r, _ := base64.RawURLEncoding.DecodeString(resealed)
		if s := base64.StdEncoding.EncodeToString(r); s != resealed {
			std = s
		}
	}
	tests := []struct {
		name   string
		key    *ecdh.PrivateKey
		store  string
		sealed string
	}{
		{"another key (a replayed request's answer)", other, "my-google", sealed},
		{"moved to another store's item", agent, "other-store", sealed},
		{"ciphertext changed", agent, "my-google", base64.RawURLEncoding.EncodeToString(flipped)},
		{"truncated", agent, "my-google", sealed[:40]},
		{"padded", agent, "my-google", sealed + "="},
		{"standard alphabet", agent, "my-google", std},
		{"empty", agent, "my-google", ""},
		{"no key", nil, "my-google", sealed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Open(tt.key, tt.store, tt.sealed)
			if err == nil || got != "" {
				t.Fatalf("opened: %q", got)
			}
			if err != ErrOpen || strings.Contains(err.Error(), token) {
				t.Fatalf("error %v", err)
			}
		})
	}
}

// The wire form is exactly RFC 9180's base-mode single-shot Seal with the
// named suite and info: an independent Open with crypto/hpke's own API and
// the suite's registry ids (KEM 0x0020, KDF 0x0001, AEAD 0x0003) reads it.
func TestSuiteAndInfo(t *testing.T) {
	agent := newKey(t)
	sealed, err := Seal(agent.PublicKey(), "store-a", token)
	if err != nil {
		t.Fatal(err)
	}
	kem, _ := hpke.NewKEM(0x0020)
	kdf, _ := hpke.NewKDF(0x0001)
	aead, _ := hpke.NewAEAD(0x0003)
	priv, err := kem.NewPrivateKey(agent.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(sealed)
	enc, ct := raw[:32], raw[32:]
	r, err := hpke.NewRecipient(enc, priv, kdf, aead, []byte("orthanc-gcp-broker token store-a"))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := r.Open(nil, ct)
	if err != nil || string(pt) != token {
		t.Fatalf("independent open: %q, %v", pt, err)
	}
}

func TestSealRefusesOtherCurves(t *testing.T) {
	p256, _ := ecdh.P256().GenerateKey(rand.Reader)
	if _, err := Seal(p256.PublicKey(), "s", token); err == nil {
		t.Fatal("sealed to a P-256 key")
	}
	if _, err := Seal(nil, "s", token); err == nil {
		t.Fatal("sealed to no key")
	}
}
