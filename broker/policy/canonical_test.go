package policy

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"filippo.io/edwards25519"
)

// TestCanonicalEd25519MatchesReencoding: the cheap canonical check agrees
// with decoding and re-encoding (p.Bytes() == key) on every spelling the
// decoder accepts: real keys, the small-order points and their other
// spellings, y just below and above p, and random bytes.
func TestCanonicalEd25519MatchesReencoding(t *testing.T) {
	var keys [][]byte
	for range 200 {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, pub, flipSign(pub))
	}
	for _, h := range []string{
		"0100000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000080",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0000000000000000000000000000000000000000000000000000000000000080",
		"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
		"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	} {
		k, _ := hex.DecodeString(h)
		keys = append(keys, k)
	}
	for range 2000 {
		k := make([]byte, 32)
		rand.Read(k)
		keys = append(keys, k)
	}
	decoded := 0
	for _, k := range keys {
		p, err := new(edwards25519.Point).SetBytes(k)
		if err != nil {
			continue
		}
		decoded++
		if got, want := canonicalEd25519(p, k), bytes.Equal(p.Bytes(), k); got != want {
			t.Errorf("%x: canonical %v, re-encoding says %v", k, got, want)
		}
	}
	if decoded < 1000 {
		t.Errorf("only %d of %d keys decoded: the comparison covered too little", decoded, len(keys))
	}
}

func flipSign(k []byte) []byte {
	k = bytes.Clone(k)
	k[31] ^= 0x80
	return k
}
