package agentauth

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"math/big"
	"testing"

	"filippo.io/edwards25519"
)

// smallOrderEncodings are the eight points of order 1, 2, 4 and 8, and
// non-canonical spellings of some ("Taming the many EdDSAs", table 6).
var smallOrderEncodings = []string{
	"0100000000000000000000000000000000000000000000000000000000000000", // identity
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
	"0000000000000000000000000000000000000000000000000000000000000000", // order 4
	"0000000000000000000000000000000000000000000000000000000000000080", // order 4
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", // order 8
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", // order 8
	"0100000000000000000000000000000000000000000000000000000000000080", // identity, x = -0
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // identity, y = p + 1
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", // identity, y = p + 1, x = -0
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 4, y = p
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// notAPoint returns a 32-byte y that is on no point of the curve.
func notAPoint(t testing.TB) []byte {
	t.Helper()
	for y := byte(2); y < 255; y++ {
		b := make([]byte, 32)
		b[0] = y
		if _, err := new(edwards25519.Point).SetBytes(b); err != nil {
			return b
		}
	}
	t.Fatal("no invalid encoding found")
	return nil
}

// groupOrder is ℓ, the order of the prime-order subgroup.
var groupOrder, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)

// plusOrder returns the 32-byte little-endian s + ℓ (a non-canonical
// spelling of the same scalar).
func plusOrder(s []byte) []byte {
	be := make([]byte, 32)
	for i := range s {
		be[31-i] = s[i]
	}
	n := new(big.Int).Add(new(big.Int).SetBytes(be), groupOrder)
	out := make([]byte, 32)
	nb := n.Bytes()
	for i := range nb {
		out[i] = nb[len(nb)-1-i]
	}
	return out
}

func sigOf(r, s []byte) []byte { return append(append([]byte{}, r...), s...) }

// verifyLikeVerifier is the broker's check for (pub, msg, sig): what
// verifySignature does once the Directory has returned pub.
func verifyLikeVerifier(c *keyCache, pub, msg, sig []byte) bool {
	x := c.expanded(pub)
	return x != nil && verifyExpanded(x, msg, sig)
}

// The broker's signature check (curve25519-voi, expanded keys) gives
// crypto/ed25519's verdict on the cases where Ed25519 verifiers are known
// to disagree: small-order and non-canonical keys and R, non-canonical S,
// and the forgery that works against a small-order key.
func TestVerifyEdgeCasesMatchStdlib(t *testing.T) {
	a := newAgent(t, "clinic-a")
	msg := []byte("eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJjbGluaWMtYSJ9")
	good := ed25519.Sign(a.priv, msg)
	r, s := good[:32], good[32:]
	zero := make([]byte, 32)
	highS := append([]byte{}, s...)
	highS[31] |= 0xe0

	type tc struct {
		name          string
		pub, msg, sig []byte
	}
	cases := []tc{
		{"valid", a.pub, msg, good},
		{"other message", a.pub, []byte("x"), good},
		{"S + ℓ", a.pub, msg, sigOf(r, plusOrder(s))},
		{"S with the top bits set", a.pub, msg, sigOf(r, highS)},
		{"S = 0", a.pub, msg, sigOf(r, zero)},
		{"short signature", a.pub, msg, good[:63]},
		{"long signature", a.pub, msg, append(append([]byte{}, good...), 0)},
		{"short key", a.pub[:31], msg, good},
		{"not a point", notAPoint(t), msg, good},
	}
	for _, enc := range smallOrderEncodings {
		p := mustHex(t, enc)
		cases = append(cases,
			tc{"R small order " + enc[:8] + enc[60:], a.pub, msg, sigOf(p, s)},
			tc{"R small order, S = 0, " + enc[:8] + enc[60:], a.pub, msg, sigOf(p, zero)},
			tc{"A small order, R identity, S = 0, " + enc[:8] + enc[60:], p, msg, sigOf(mustHex(t, smallOrderEncodings[0]), zero)},
			tc{"A small order, R = A, S = 0, " + enc[:8] + enc[60:], p, msg, sigOf(p, zero)},
			tc{"A small order, valid signature of another key, " + enc[:8] + enc[60:], p, msg, good},
		)
	}
	for i := range 64 {
		flipped := append([]byte{}, good...)
		flipped[i] ^= 1 << (i % 8)
		cases = append(cases, tc{fmt.Sprintf("bit %d of signature byte %d flipped", i%8, i), a.pub, msg, flipped})
	}

	var c keyCache
	accepted := 0
	for _, tt := range cases {
		// crypto/ed25519 panics on a key that is not 32 bytes;
		// verifySignature refuses those before.
		want := len(tt.pub) == ed25519.PublicKeySize && ed25519.Verify(ed25519.PublicKey(tt.pub), tt.msg, tt.sig)
		if got := verifyLikeVerifier(&c, tt.pub, tt.msg, tt.sig); got != want {
			t.Errorf("%s: broker says %v, crypto/ed25519 says %v", tt.name, got, want)
		}
		if want {
			accepted++
		}
	}
	// The valid signature and at least one small-order forgery pass both:
	// the table exercises acceptance, not only refusal.
	if accepted < 2 {
		t.Fatalf("only %d cases accepted by crypto/ed25519; the table lost its forgeries", accepted)
	}
}

// FuzzVerifyMatchesStdlib: for any key, message and signature the broker's
// check and crypto/ed25519.Verify agree.
func FuzzVerifyMatchesStdlib(f *testing.F) {
	a := newAgent(f, "clinic-a")
	msg := []byte("eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJjbGluaWMtYSJ9")
	good := ed25519.Sign(a.priv, msg)
	f.Add([]byte(a.pub), msg, good)
	f.Add([]byte(a.pub), msg, sigOf(good[:32], plusOrder(good[32:])))
	for _, enc := range smallOrderEncodings {
		p := mustHex(f, enc)
		f.Add(p, msg, sigOf(mustHex(f, smallOrderEncodings[0]), make([]byte, 32)))
		f.Add([]byte(a.pub), msg, sigOf(p, good[32:]))
	}
	f.Fuzz(func(t *testing.T, pub, msg, sig []byte) {
		if len(pub) != ed25519.PublicKeySize {
			return // crypto/ed25519 panics; verifySignature refuses such keys before
		}
		var c keyCache
		want := ed25519.Verify(ed25519.PublicKey(pub), msg, sig)
		if got := verifyLikeVerifier(&c, pub, msg, sig); got != want {
			t.Fatalf("pub %x msg %q sig %x: broker says %v, crypto/ed25519 says %v", pub, msg, sig, got, want)
		}
	})
}

// The cache hands back one expansion per key, keeps no invalid key and
// never grows past its bound.
func TestKeyCache(t *testing.T) {
	var c keyCache
	a := newAgent(t, "clinic-a")
	x1, x2 := c.expanded(a.pub), c.expanded(a.pub)
	if x1 == nil || x1 != x2 {
		t.Fatalf("expanded twice: %p, %p; want one non-nil expansion", x1, x2)
	}
	if got := c.expanded(notAPoint(t)); got != nil || c.len() != 1 {
		t.Fatalf("invalid key: %p, %d cached; want nil, 1", got, c.len())
	}
	if got := c.expanded(a.pub[:31]); got != nil {
		t.Fatal("31-byte key expanded")
	}
	seed := make([]byte, ed25519.SeedSize)
	for i := range maxExpandedKeys + 10 {
		seed[0], seed[1] = byte(i), byte(i>>8)
		pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		if c.expanded(pub) == nil {
			t.Fatal("valid key not expanded")
		}
		if c.len() > maxExpandedKeys {
			t.Fatalf("%d keys cached, bound %d", c.len(), maxExpandedKeys)
		}
	}
	// A key that fell out is expanded again and still verifies.
	sig := ed25519.Sign(a.priv, []byte("m"))
	if !verifyLikeVerifier(&c, a.pub, []byte("m"), sig) {
		t.Fatal("key expanded again does not verify")
	}
	if cy := c.expanded(a.pub).CompressedY(); !bytes.Equal(cy[:], a.pub) {
		t.Fatal("cached expansion is of another key")
	}
}
