package agentauth

import (
	"crypto/ed25519"
	"crypto/rand"
	"sync"
	"sync/atomic"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Checking the Ed25519 signature, the one step that costs more than all the
// others together. crypto/ed25519.Verify decompresses the public key and
// builds its multiples table again on every call, although an agent's key
// is the same for every request it makes. curve25519-voi (Oasis Protocol's,
// also used by avalanchego and go-spacemesh) keeps that work in an
// ExpandedPublicKey made once per key, and its variable-time double-scalar
// multiplication (AVX2 on amd64) is faster too: measured here, 28 µs
// against 49 µs per bare verify (BENCHMARKS.md, agentauth section).
//
// stdlibRules are crypto/ed25519's acceptance rules (cofactorless equation,
// S < ℓ, R compared by its canonical encoding, any A the caller hands in):
// the same verdict for every key, message and signature, which
// FuzzVerifyMatchesStdlib and TestVerifyEdgeCasesMatchStdlib check against
// crypto/ed25519 itself. The policy refuses weak agent keys before any of
// this (broker/policy).
var stdlibRules = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// maxExpandedKeys bounds the expanded-key cache (about 1.5 KiB a key).
// Only keys a Directory returned get in, so the bound is for a policy
// whose keys rotate over a long life, not against callers; when it is
// reached the cache starts again empty.
const maxExpandedKeys = 4096

// keyCache maps public keys to their expanded form. Each key is written
// once and read on every request of its agent: sync.Map's case. (voi's own
// extra/cache LRU takes a mutex and allocates a list element on every hit.)
type keyCache struct {
	m sync.Map     // [ed25519.PublicKeySize]byte → *voi.ExpandedPublicKey
	n atomic.Int64 // entries, roughly (racing misses may count one key twice)
}

// expanded returns pub's expanded form, or nil when pub is not a 32-byte
// encoding of a curve point (crypto/ed25519.Verify refuses every signature
// for such a key).
func (c *keyCache) expanded(pub ed25519.PublicKey) *voi.ExpandedPublicKey {
	if len(pub) != ed25519.PublicKeySize {
		return nil
	}
	k := [ed25519.PublicKeySize]byte(pub)
	if x, ok := c.m.Load(k); ok {
		return x.(*voi.ExpandedPublicKey)
	}
	x, err := voi.NewExpandedPublicKey(voi.PublicKey(pub))
	if err != nil {
		return nil
	}
	if c.n.Add(1) > maxExpandedKeys {
		c.m.Clear()
		c.n.Store(1)
	}
	got, _ := c.m.LoadOrStore(k, x)
	return got.(*voi.ExpandedPublicKey)
}

// len reports how many keys are cached, for tests.
func (c *keyCache) len() int {
	n := 0
	c.m.Range(func(any, any) bool { n++; return true })
	return n
}

// verifyExpanded reports whether sig is key's signature of msg, by
// crypto/ed25519's rules.
func verifyExpanded(key *voi.ExpandedPublicKey, msg, sig []byte) bool {
	return voi.VerifyExpandedWithOptions(key, msg, sig, stdlibRules)
}

// dummyKey is a valid Ed25519 public key (of a random private key that is
// thrown away at start-up, so it is of prime order and nobody can sign for
// it) used for the unknown and disabled agent ids; dummyExpanded is its
// expanded form, so a dummy check costs what a real one does.
var dummyKey, dummyExpanded = func() (ed25519.PublicKey, *voi.ExpandedPublicKey) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic("agentauth: cannot generate the dummy key: " + err.Error())
	}
	x, err := voi.NewExpandedPublicKey(voi.PublicKey(pub))
	if err != nil {
		panic("agentauth: cannot expand the dummy key: " + err.Error())
	}
	return pub, x
}()

// dummyVerifications counts dummyVerify calls, for tests.
var dummyVerifications atomic.Uint64

// dummyVerify checks sig against dummyKey and ignores the result: it only
// spends the time a real verification would.
func dummyVerify(msg, sig []byte) {
	dummyVerifications.Add(1)
	_ = verifyExpanded(dummyExpanded, msg, sig)
}
