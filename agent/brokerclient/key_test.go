package brokerclient

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
)

// opaqueSigner hides the key behind crypto.Signer, as a TPM key is.
type opaqueSigner struct{ k *ecdsa.PrivateKey }

func (s opaqueSigner) Public() crypto.PublicKey { return &s.k.PublicKey }
func (s opaqueSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return s.k.Sign(r, d, o)
}

// TestP256SignerES256: a P-256 crypto.Signer that is not an
// *ecdsa.PrivateKey (a TPM key) signs the assertions ES256, which a broker
// holding its public key accepts.
func TestP256SignerES256(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b := agenttest.NewBroker(t, "clinic-a", &k.PublicKey)
	c, err := New(Options{URL: b.URL, AgentID: "clinic-a", Key: opaqueSigner{k}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stores(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A broker with another key refuses it.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b.Set(func(b *agenttest.Broker) { b.Keys = []crypto.PublicKey{&other.PublicKey} })
	if _, err := c.Stores(context.Background()); Reason(err) != ReasonUnauthenticated {
		t.Fatalf("other key: %v", err)
	}
}

// TestNewRefusesUnusableKeys: no key, a short Ed25519 key or a key of
// another curve is refused when the client is built, not at the first call.
func TestNewRefusesUnusableKeys(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, k := range map[string]crypto.Signer{
		"nil":         nil,
		"short":       ed25519.PrivateKey(make([]byte, 10)),
		"P-384":       p384,
		"P-384 typed": opaqueSigner{p384},
	} {
		if _, err := New(Options{URL: "https://b.example", AgentID: "a", Key: k}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
