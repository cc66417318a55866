package agentauth

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// fuzzAgent makes a key pair that is the same on every run, so corpus
// entries the fuzzer saves stay meaningful.
func fuzzAgent(id string, seedByte byte) agent {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seedByte}, ed25519.SeedSize))
	return agent{id: id, pub: priv.Public().(ed25519.PublicKey), priv: priv}
}

func FuzzVerify(f *testing.F) {
	a := fuzzAgent("clinic-a", 1)
	b := fuzzAgent("clinic-b", 2)
	forger := fuzzAgent("clinic-a", 3)
	dir := newDir(a, b)
	now := t0

	valid := a.sign(f, now)
	seeds := []string{
		"Bearer " + valid,
		"bearer " + b.sign(f, now),
		valid,
		"Bearer " + forger.sign(f, now),
		"Bearer " + a.sign(f, now.Add(-time.Hour)),
		"Bearer " + signWith(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, a.baseClaims(now), nil),
		"Bearer " + signWith(f, jwt.SigningMethodHS256, []byte(a.pub), a.baseClaims(now), nil),
		"Bearer " + signWith(f, jwt.SigningMethodEdDSA, a.priv, withIss(a.baseClaims(now), "nobody"), nil),
		"Bearer " + swapPayload(valid, b.sign(f, now)),
		"Bearer " + withSig(valid, make([]byte, 64)),
		"Bearer " + b64(`{"alg":"EdDSA"}`) + "." + b64(`{"iss":"clinic-a","exp":1e300,"iat":-1e300}`) + ".AAAA",
		"Bearer a.b.c",
		"Bearer ..",
		"Bearer",
		"Basic Y2xpbmljLWE6cHc=",
		"",
		"Bearer \x00\xff.\x00.\x00",
	}
	for _, s := range seeds {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, header string) {
		v := NewVerifier(Options{Now: func() time.Time { return now }, ReplayCapacity: 4})
		id, err := v.Verify(dir, header)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T is not *Error", err)
			}
			if id != "" {
				t.Fatalf("id %q with error %v", id, err)
			}
			assertFixedMessage(t, err)
			return
		}
		// Success must mean: a registered agent signed exactly this token.
		// Check it independently of golang-jwt.
		keys, ok := dir.AgentKeys(id)
		if !ok {
			t.Fatalf("accepted unregistered agent %q", id)
		}
		_, tok, _ := strings.Cut(header, " ")
		tok = strings.Trim(tok, " \t")
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted a token with %d parts", len(parts))
		}
		sig, err := base64.RawURLEncoding.DecodeString(parts[2])
		if err != nil || !ed25519.Verify(keys[0].(ed25519.PublicKey), []byte(parts[0]+"."+parts[1]), sig) {
			t.Fatalf("accepted a token %q did not sign", id)
		}
		var hdr struct {
			Alg string `json:"alg"`
		}
		var cl struct {
			Iss string `json:"iss"`
			Sub string `json:"sub"`
		}
		hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
		cb, _ := base64.RawURLEncoding.DecodeString(parts[1])
		if json.Unmarshal(hb, &hdr) != nil || hdr.Alg != "EdDSA" {
			t.Fatalf("accepted header %q", hb)
		}
		if json.Unmarshal(cb, &cl) != nil || cl.Iss != id || cl.Sub != id {
			t.Fatalf("accepted claims %q as %q", cb, id)
		}
		if _, err := v.Verify(dir, header); err == nil || err.(*Error).Reason != ReasonReplayed {
			t.Fatalf("second use: %v, want replayed", err)
		}
	})
}
