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
		pub, ok := dir.AgentKey(id)
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
		if err != nil || !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
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

// FuzzMatchesLibrary signs arbitrary header and claims JSON and checks that
// Verify decides exactly as golang-jwt's parser did (refVerify), except
// where Verify is stricter on purpose: a member given twice, or a claim
// name that only case-insensitively matches a registered one.
func FuzzMatchesLibrary(f *testing.F) {
	a := fuzzAgent("clinic-a", 1)
	now := t0
	base, _ := json.Marshal(a.baseClaims(now))
	for _, s := range []struct{ h, c string }{
		{`{"alg":"EdDSA","typ":"JWT"}`, string(base)},
		{`{"alg":"EdDSA"}`, string(base)},
		{` { "alg" : "Ed\u0044SA" , "typ":"jwt"} `, string(base)},
		{`{"alg":"EdDSA","typ":5}`, string(base)},
		{`{"alg":"EdDSA","crit":null}`, string(base)},
		{`{"alg":"none"}`, string(base)},
		{`{"alg":null}`, string(base)},
		{`null`, string(base)},
		{`{"alg":"EdDSA"}`, `null`},
		{`{"alg":"EdDSA"}`, `[]`},
		{`{"alg":"EdDSA","alg":"EdDSA"}`, string(base)},
		{`{"alg":"EdDSA"}`, `{"iss":"clinic-a","iss":"clinic-a"}`},
		{`{"alg":"EdDSA"}`, `{"ISS":"clinic-a","sub":"clinic-a"}`},
		{`{"alg":"EdDSA"}`, `{"iss":"clinic-a","sub":"clinic-a","aud":"https://broker.example.test","iat":1893553445,"exp":1893553505.9,"jti":"j\u0031","x":{"y":[1,"]}"]}}`},
		{`{"alg":"EdDSA"}`, `{"iss":"clinic-a","sub":"clinic-a","aud":["a","https://broker.example.test/"],"iat":"1893553445","exp":1893553505,"jti":"j","nbf":null}`},
		{`{"alg":"EdDSA"}`, `{"iss":"clinic-a","exp":1e300,"iat":-1e300,"jti":7}`},
		{`{"alg":"EdDSA"}`, `{"iss":"cl\xffinic","aud":{"a":1}}`},
	} {
		f.Add(s.h, s.c, false)
	}
	f.Fuzz(func(t *testing.T, hdr, cl string, badSig bool) {
		input := b64(hdr) + "." + b64(cl)
		sig := ed25519.Sign(a.priv, []byte(input))
		if badSig {
			sig[0] ^= 1
		}
		header := "Bearer " + input + "." + base64.RawURLEncoding.EncodeToString(sig)
		opts := Options{Now: func() time.Time { return now }, ReplayCapacity: 4}
		id, err := NewVerifier(opts).Verify(newDir(a), header)
		refID, refErr := NewVerifier(opts).refVerify(newDir(a), header)
		got, want := outcome(id, err), outcome(refID, refErr)
		if got == want {
			return
		}
		if err != nil && (stricterOn(hdr, nil) || stricterOn(cl, claimNames[:])) {
			return
		}
		t.Fatalf("header %q claims %q: Verify %s, library %s", hdr, cl, got, want)
	})
}

func outcome(id string, err error) string {
	if err != nil {
		return "refused: " + err.(*Error).Reason
	}
	return "accepted as " + id
}

// stricterOn reports whether the JSON object doc has a member twice, or a
// member whose name case-insensitively equals one of names but differs.
func stricterOn(doc string, names []string) bool {
	dec := json.NewDecoder(strings.NewReader(doc))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok {
			return false
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return false
		}
		if seen[key] {
			return true
		}
		seen[key] = true
		for _, n := range names {
			if strings.EqualFold(key, n) && key != n {
				return true
			}
		}
	}
	return false
}
