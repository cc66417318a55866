package agentauth

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Claims that golang-jwt's parser would have read one way or another
// (the last duplicate winning, or a case-insensitive name match) are
// refused outright.
func TestAmbiguousClaimsRefused(t *testing.T) {
	a := newAgent(t, "clinic-a")
	now := t0
	v := NewVerifier(Options{Now: func() time.Time { return now }})
	good := a.baseClaims(now)
	enc := func(extra string) string {
		b, _ := json.Marshal(good)
		return strings.TrimSuffix(string(b), "}") + "," + extra + "}"
	}
	for _, tc := range []struct{ hdr, claims string }{
		{`{"alg":"EdDSA","typ":"JWT"}`, enc(`"iss":"clinic-a"`)},
		{`{"alg":"EdDSA","typ":"JWT"}`, enc(`"ISS":"clinic-b"`)},
		{`{"alg":"EdDSA","typ":"JWT"}`, enc(`"Exp":1`)},
		{`{"alg":"EdDSA","typ":"JWT"}`, enc(`"\u0041ud":"x"`)},
		{`{"alg":"EdDSA","typ":"JWT"}`, enc(`"\u004a\u0054\u0049":"x"`)},
		{`{"alg":"EdDSA","typ":"JWT"}`, enc(`"jt\u0131":"x"`)}, // dotless i does not fold to i: ignored
		{`{"alg":"EdDSA","typ":"JWT","alg":"EdDSA"}`, enc(`"x":1`)},
		{`{"alg":"EdDSA","typ":"JWT","typ":"JWT"}`, enc(`"x":1`)},
	} {
		input := b64(tc.hdr) + "." + b64(tc.claims)
		tok := input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(a.priv, []byte(input)))
		_, err := v.Verify(newDir(a), "Bearer "+tok)
		if strings.Contains(tc.claims, `\u0131`) {
			if err != nil {
				t.Errorf("%s: %v, want accepted", tc.claims, err)
			}
			continue
		}
		if err == nil || reasonOf(t, err) != ReasonMalformed {
			t.Errorf("%s %s: %v, want malformed", tc.hdr, tc.claims, err)
		}
	}
}

func TestExpiryHeapOrder(t *testing.T) {
	var h expiryHeap
	base := time.Unix(1000, 0)
	perm := []int{5, 3, 9, 1, 1, 7, 0, 8, 2, 6, 4, 3}
	for _, p := range perm {
		h.push(replayEntry{expires: base.Add(time.Duration(p) * time.Second)})
	}
	prev := time.Time{}
	for range perm {
		e := h.pop()
		if e.expires.Before(prev) {
			t.Fatalf("popped %v after %v", e.expires, prev)
		}
		prev = e.expires
	}
	if len(h) != 0 {
		t.Fatalf("%d left", len(h))
	}
}
