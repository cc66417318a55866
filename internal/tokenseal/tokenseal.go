// Package tokenseal seals each Google token the broker hands out to the
// one-request X25519 key the agent put in its assertion (the cnf claim),
// and opens it on the agent. A captured token request replayed to another
// broker instance then yields only ciphertext: without the agent's private
// key, which never leaves the agent's memory, nothing usable.
//
// It is HPKE (RFC 9180, crypto/hpke) in base mode with DHKEM(X25519,
// HKDF-SHA256), HKDF-SHA256 and ChaCha20Poly1305. The info is the ASCII
// "orthanc-gcp-broker token " followed by the store name, so a sealed token
// cannot be moved to another store's item. On the wire it is base64url
// without padding of what hpke.Seal returns: the encapsulated key, then
// the ciphertext.
package tokenseal

import (
	"crypto/ecdh"
	"crypto/hpke"
	"encoding/base64"
	"errors"
)

// InfoPrefix starts the HPKE info of every sealed token; the store name
// follows.
const InfoPrefix = "orthanc-gcp-broker token "

// ErrOpen is every failure to open a sealed token. It says nothing about
// the token or the ciphertext.
var ErrOpen = errors.New("tokenseal: the sealed token cannot be opened with this key for this store")

var (
	kdf  = hpke.HKDFSHA256()
	aead = hpke.ChaCha20Poly1305()
)

func info(store string) []byte { return []byte(InfoPrefix + store) }

// Seal seals token for the holder of recipient's private key, bound to
// store.
func Seal(recipient *ecdh.PublicKey, store, token string) (string, error) {
	if recipient == nil || recipient.Curve() != ecdh.X25519() {
		return "", errors.New("tokenseal: the recipient is not an X25519 key")
	}
	pk, err := hpke.NewDHKEMPublicKey(recipient)
	if err != nil {
		return "", err
	}
	ct, err := hpke.Seal(pk, kdf, aead, info(store), []byte(token))
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(ct), nil
}

// Open opens a token sealed to priv's public key for store.
func Open(priv *ecdh.PrivateKey, store, sealed string) (string, error) {
	ct, err := base64.RawURLEncoding.Strict().DecodeString(sealed)
	if err != nil || priv == nil {
		return "", ErrOpen
	}
	k, err := hpke.NewDHKEMPrivateKey(priv)
	if err != nil {
		return "", ErrOpen
	}
	pt, err := hpke.Open(k, kdf, aead, info(store), ct)
	if err != nil {
		return "", ErrOpen
	}
	return string(pt), nil
}
