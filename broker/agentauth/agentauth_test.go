package agentauth

import (
	"container/heap"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
)

func TestVerify(t *testing.T) {
	a := newAgent(t, "clinic-a")
	other := newAgent(t, "clinic-a") // same id, key the broker does not know
	stranger := newAgent(t, "stranger")
	off := newAgent(t, "disabled-clinic")
	now := t0

	edClaims := func(edit func(c jwt.MapClaims)) string {
		c := a.baseClaims(now)
		if edit != nil {
			edit(c)
		}
		return signWith(t, jwt.SigningMethodEdDSA, a.priv, c, nil)
	}
	bearer := func(tok string) string { return "Bearer " + tok }

	tests := []struct {
		name   string
		header string
		dirAud string // policy audience; testAudience when empty
		reason string // "" means success as clinic-a
	}{
		{name: "valid", header: bearer(a.sign(t, now))},
		{name: "scheme lower case", header: "bearer " + a.sign(t, now)},
		{name: "scheme upper case", header: "BEARER " + a.sign(t, now)},
		{name: "token aud with trailing slash", header: bearer(edClaims(func(c jwt.MapClaims) { c["aud"] = testAudience + "/" }))},
		{name: "policy aud with trailing slash", header: bearer(a.sign(t, now)), dirAud: testAudience + "/"},
		{name: "aud as single string", header: bearer(edClaims(func(c jwt.MapClaims) { c["aud"] = testAudience }))},
		{name: "aud list containing ours", header: bearer(edClaims(func(c jwt.MapClaims) { c["aud"] = []string{"https://elsewhere", testAudience} }))},
		{name: "typ header absent", header: bearer(signWith(t, jwt.SigningMethodEdDSA, a.priv, a.baseClaims(now), func(h map[string]any) { delete(h, "typ") }))},
		{name: "extra unknown claim ignored", header: bearer(edClaims(func(c jwt.MapClaims) { c["x"] = "y" }))},
		{name: "expired just within skew", header: bearer(edClaims(func(c jwt.MapClaims) {
			c["iat"] = now.Add(-3 * time.Minute).Unix()
			c["exp"] = now.Add(-59 * time.Second).Unix()
		}))},
		{name: "iat in future within skew", header: bearer(edClaims(func(c jwt.MapClaims) {
			c["iat"] = now.Add(60 * time.Second).Unix()
			c["exp"] = now.Add(3 * time.Minute).Unix()
		}))},
		{name: "lifetime exactly 5 min", header: bearer(edClaims(func(c jwt.MapClaims) { c["exp"] = now.Add(5 * time.Minute).Unix() }))},
		{name: "nbf in past", header: bearer(edClaims(func(c jwt.MapClaims) { c["nbf"] = now.Add(-time.Second).Unix() }))},

		{name: "empty header", header: "", reason: ReasonMissing},
		{name: "no scheme", header: a.sign(t, now), reason: ReasonMalformed},
		{name: "basic scheme", header: "Basic " + base64.StdEncoding.EncodeToString([]byte("clinic-a:pw")), reason: ReasonMalformed},
		{name: "bearer without token", header: "Bearer ", reason: ReasonMalformed},
		{name: "bearer only", header: "Bearer", reason: ReasonMalformed},
		{name: "two segments", header: bearer(strings.Join(strings.Split(a.sign(t, now), ".")[:2], ".")), reason: ReasonMalformed},
		{name: "four segments", header: bearer(a.sign(t, now) + ".AAAA"), reason: ReasonMalformed},
		{name: "not base64url", header: bearer(strings.Replace(a.sign(t, now), "e", "+", 1)), reason: ReasonMalformed},
		{name: "header not json", header: bearer(b64("not json") + "." + b64(`{"iss":"clinic-a"}`) + ".AAAA"), reason: ReasonMalformed},
		{name: "claims not json", header: bearer(b64(`{"alg":"EdDSA"}`) + "." + b64("nope") + ".AAAA"), reason: ReasonMalformed},
		{name: "iss not a string", header: bearer(b64(`{"alg":"EdDSA"}`) + "." + b64(`{"iss":7}`) + ".AAAA"), reason: ReasonMalformed},
		{name: "oversized header", header: bearer(edClaims(func(c jwt.MapClaims) { c["pad"] = strings.Repeat("x", MaxHeaderBytes) })), reason: ReasonMalformed},
		{name: "typ not JWT", header: bearer(signWith(t, jwt.SigningMethodEdDSA, a.priv, a.baseClaims(now), func(h map[string]any) { h["typ"] = "at+jwt" })), reason: ReasonMalformed},
		{name: "crit header", header: bearer(signWith(t, jwt.SigningMethodEdDSA, a.priv, a.baseClaims(now), func(h map[string]any) { h["crit"] = []string{"exp"} })), reason: ReasonMalformed},

		{name: "alg none unsigned", header: bearer(signWith(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, a.baseClaims(now), nil)), reason: ReasonMalformed},
		{name: "alg none with signature", header: bearer(signWith(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, a.baseClaims(now), nil) + "AAAA"), reason: ReasonWrongAlgorithm},
		{name: "HS256 keyed with raw public key", header: bearer(signWith(t, jwt.SigningMethodHS256, []byte(a.pub), a.baseClaims(now), nil)), reason: ReasonWrongAlgorithm},
		{name: "HS256 keyed with policy key line", header: bearer(signWith(t, jwt.SigningMethodHS256, []byte(agentkey.FormatPublicKey(a.pub)), a.baseClaims(now), nil)), reason: ReasonWrongAlgorithm},
		{name: "RS256", header: bearer(signWith(t, jwt.SigningMethodRS256, testRSAKey(t), a.baseClaims(now), nil)), reason: ReasonWrongAlgorithm},
		{name: "alg unknown", header: bearer(b64(`{"alg":"Ed448"}`) + "." + b64(`{"iss":"clinic-a"}`) + ".AAAA"), reason: ReasonWrongAlgorithm},
		{name: "alg missing", header: bearer(b64(`{"typ":"JWT"}`) + "." + b64(`{"iss":"clinic-a"}`) + ".AAAA"), reason: ReasonWrongAlgorithm},

		{name: "forged with other key", header: bearer(other.sign(t, now)), reason: ReasonBadSignature},
		{name: "claims changed after signing", header: bearer(swapPayload(a.sign(t, now), other.sign(t, now))), reason: ReasonBadSignature},
		{name: "signature of zeros", header: bearer(withSig(a.sign(t, now), make([]byte, ed25519.SignatureSize))), reason: ReasonBadSignature},
		{name: "signature one byte short", header: bearer(withSig(a.sign(t, now), make([]byte, ed25519.SignatureSize-1))), reason: ReasonBadSignature},
		{name: "unknown agent", header: bearer(stranger.sign(t, now)), reason: ReasonUnknownAgent},
		{name: "disabled agent", header: bearer(off.sign(t, now)), reason: ReasonUnknownAgent},
		{name: "short key in policy", header: bearer(signWith(t, jwt.SigningMethodEdDSA, a.priv, withIss(a.baseClaims(now), "short-key"), nil)), reason: ReasonUnknownAgent},

		{name: "missing iss", header: bearer(edClaims(func(c jwt.MapClaims) { delete(c, "iss") })), reason: ReasonBadClaims},
		{name: "iss != sub", header: bearer(edClaims(func(c jwt.MapClaims) { c["sub"] = "clinic-b" })), reason: ReasonBadClaims},
		{name: "missing sub", header: bearer(edClaims(func(c jwt.MapClaims) { delete(c, "sub") })), reason: ReasonBadClaims},
		{name: "missing jti", header: bearer(edClaims(func(c jwt.MapClaims) { delete(c, "jti") })), reason: ReasonBadClaims},
		{name: "empty jti", header: bearer(edClaims(func(c jwt.MapClaims) { c["jti"] = "" })), reason: ReasonBadClaims},
		{name: "jti too long", header: bearer(edClaims(func(c jwt.MapClaims) { c["jti"] = strings.Repeat("j", MaxJTIBytes+1) })), reason: ReasonBadClaims},
		{name: "missing iat", header: bearer(edClaims(func(c jwt.MapClaims) { delete(c, "iat") })), reason: ReasonBadClaims},
		{name: "missing exp", header: bearer(edClaims(func(c jwt.MapClaims) { delete(c, "exp") })), reason: ReasonBadClaims},
		{name: "null exp", header: bearer(edClaims(func(c jwt.MapClaims) { c["exp"] = nil })), reason: ReasonBadClaims},
		{name: "exp before iat", header: bearer(edClaims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Second).Unix() })), reason: ReasonBadClaims},

		{name: "wrong aud", header: bearer(edClaims(func(c jwt.MapClaims) { c["aud"] = "https://other-broker.example.test" })), reason: ReasonWrongAudience},
		{name: "aud with two trailing slashes", header: bearer(edClaims(func(c jwt.MapClaims) { c["aud"] = testAudience + "//" })), reason: ReasonWrongAudience},
		{name: "aud missing", header: bearer(edClaims(func(c jwt.MapClaims) { delete(c, "aud") })), reason: ReasonWrongAudience},
		{name: "aud empty list", header: bearer(edClaims(func(c jwt.MapClaims) { c["aud"] = []string{} })), reason: ReasonWrongAudience},
		{name: "policy audience empty", header: bearer(edClaims(func(c jwt.MapClaims) { c["aud"] = "" })), dirAud: "/", reason: ReasonWrongAudience},

		{name: "lifetime over 5 min", header: bearer(edClaims(func(c jwt.MapClaims) { c["exp"] = now.Add(5*time.Minute + time.Second).Unix() })), reason: ReasonLifetimeTooLong},
		{name: "expired at skew edge", header: bearer(edClaims(func(c jwt.MapClaims) {
			c["iat"] = now.Add(-3 * time.Minute).Unix()
			c["exp"] = now.Add(-60 * time.Second).Unix()
		})), reason: ReasonExpired},
		{name: "expired long ago", header: bearer(a.sign(t, now.Add(-time.Hour))), reason: ReasonExpired},
		{name: "iat in future beyond skew", header: bearer(edClaims(func(c jwt.MapClaims) {
			c["iat"] = now.Add(61 * time.Second).Unix()
			c["exp"] = now.Add(3 * time.Minute).Unix()
		})), reason: ReasonNotYetValid},
		{name: "nbf in future beyond skew", header: bearer(edClaims(func(c jwt.MapClaims) { c["nbf"] = now.Add(61 * time.Second).Unix() })), reason: ReasonNotYetValid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := newDir(a, off)
			dir.disabled[off.id] = true
			dir.keys["short-key"] = a.pub[:16]
			if tc.dirAud != "" {
				dir.aud = tc.dirAud
			}
			v := NewVerifier(Options{Now: func() time.Time { return now }})
			id, err := v.Verify(dir, tc.header)
			assertNoSecret(t, err, tc.header)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Verify: %v, want success", err)
				}
				if id != a.id {
					t.Fatalf("agent id %q, want %q", id, a.id)
				}
				if n := v.ReplayLen(); n != 1 {
					t.Fatalf("replay cache holds %d, want 1", n)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify accepted as %q, want %s", id, tc.reason)
			}
			if id != "" {
				t.Fatalf("agent id %q returned with an error", id)
			}
			if got := reasonOf(t, err); got != tc.reason {
				t.Fatalf("reason %q, want %q", got, tc.reason)
			}
			// A refused token is never remembered, so forged tokens cannot
			// fill the replay cache.
			if n := v.ReplayLen(); n != 0 {
				t.Fatalf("replay cache holds %d after a refusal, want 0", n)
			}
		})
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// swapPayload puts the claims of src into tok, keeping tok's signature.
func swapPayload(tok, src string) string {
	p := strings.Split(tok, ".")
	p[1] = strings.Split(src, ".")[1]
	return strings.Join(p, ".")
}

// withSig replaces tok's signature with sig.
func withSig(tok string, sig []byte) string {
	p := strings.Split(tok, ".")
	p[2] = base64.RawURLEncoding.EncodeToString(sig)
	return strings.Join(p, ".")
}

func withIss(c jwt.MapClaims, id string) jwt.MapClaims {
	c["iss"], c["sub"] = id, id
	return c
}

func TestErrorCarriesClaimedAgent(t *testing.T) {
	a := newAgent(t, "clinic-a")
	v := NewVerifier(Options{Now: func() time.Time { return t0 }})
	dir := newDir(a)

	tests := []struct {
		name, id, want string
	}{
		{"plain id", "clinic-a", "clinic-a"},
		{"control characters dropped", "evil\nsecond-line", ""},
		{"overlong dropped", strings.Repeat("x", 200), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := withIss(a.baseClaims(t0), tc.id)
			c["aud"] = "https://wrong"
			_, err := v.Verify(dir, "Bearer "+signWith(t, jwt.SigningMethodEdDSA, a.priv, c, nil))
			var e *Error
			if err == nil {
				t.Fatal("accepted")
			}
			e = err.(*Error)
			if e.AgentID != tc.want {
				t.Fatalf("AgentID %q, want %q", e.AgentID, tc.want)
			}
			if strings.Contains(e.Error(), tc.id) {
				t.Fatalf("Error() %q names the claimed id", e.Error())
			}
		})
	}
}

func TestReplay(t *testing.T) {
	a := newAgent(t, "clinic-a")
	b := newAgent(t, "clinic-b")
	dir := newDir(a, b)
	clock := newClock()
	v := NewVerifier(Options{Now: clock.Now})

	tok := a.sign(t, clock.Now())
	if _, err := v.Verify(dir, "Bearer "+tok); err != nil {
		t.Fatalf("first use: %v", err)
	}
	clock.Advance(30 * time.Second)
	_, err := v.Verify(dir, "Bearer "+tok)
	if err == nil || reasonOf(t, err) != ReasonReplayed {
		t.Fatalf("second use: %v, want replayed", err)
	}
	if e := err.(*Error); e.AgentID != "clinic-a" {
		t.Fatalf("AgentID %q", e.AgentID)
	}
	assertNoSecret(t, err, tok)

	// The same jti from another agent is another token.
	shared := func(x agent, at time.Time) string {
		c := x.baseClaims(at)
		c["jti"] = "shared-jti"
		return "Bearer " + signWith(t, jwt.SigningMethodEdDSA, x.priv, c, nil)
	}
	if _, err := v.Verify(dir, shared(a, clock.Now())); err != nil {
		t.Fatalf("clinic-a shared jti: %v", err)
	}
	if id, err := v.Verify(dir, shared(b, clock.Now())); err != nil || id != "clinic-b" {
		t.Fatalf("clinic-b shared jti: %q %v", id, err)
	}
	if _, err := v.Verify(dir, shared(a, clock.Now())); err == nil || reasonOf(t, err) != ReasonReplayed {
		t.Fatalf("clinic-a reuse of its jti in a new token: %v, want replayed", err)
	}

	// Once the first token is past exp + skew it is forgotten; a new token
	// may reuse its jti (the old one itself now fails as expired).
	clock.Advance(assertion.DefaultLifetime + DefaultClockSkew)
	if _, err := v.Verify(dir, "Bearer "+tok); err == nil || reasonOf(t, err) != ReasonExpired {
		t.Fatalf("old token after expiry: %v, want expired", err)
	}
	if _, err := v.Verify(dir, shared(a, clock.Now())); err != nil {
		t.Fatalf("jti reused after the first token expired: %v", err)
	}
}

func TestReplayCacheDoesNotRememberRefusedTokens(t *testing.T) {
	a := newAgent(t, "clinic-a")
	forger := newAgent(t, "clinic-a")
	dir := newDir(a)
	v := NewVerifier(Options{Now: func() time.Time { return t0 }, ReplayCapacity: 2, PerAgentReplayCapacity: 2})
	for i := range 50 {
		h := "Bearer " + forger.sign(t, t0)
		if _, err := v.Verify(dir, h); err == nil || reasonOf(t, err) != ReasonBadSignature {
			t.Fatalf("forgery %d: %v", i, err)
		}
		c := a.baseClaims(t0)
		c["jti"] = fmt.Sprint("wrong-aud-", i)
		c["aud"] = "https://wrong"
		if _, err := v.Verify(dir, "Bearer "+signWith(t, jwt.SigningMethodEdDSA, a.priv, c, nil)); err == nil {
			t.Fatalf("wrong aud %d accepted", i)
		}
	}
	if n := v.ReplayLen(); n != 0 {
		t.Fatalf("replay cache holds %d entries after only refusals", n)
	}
	// The small cache is still free for the real agent.
	for i := range 2 {
		if _, err := v.Verify(dir, "Bearer "+a.sign(t, t0)); err != nil {
			t.Fatalf("genuine token %d: %v", i, err)
		}
	}
}

func TestReplaySweep(t *testing.T) {
	a := newAgent(t, "clinic-a")
	dir := newDir(a)
	clock := newClock()
	v := NewVerifier(Options{Now: clock.Now})

	const n = 3 * shrinkFloor
	for i := range n {
		if _, err := v.Verify(dir, "Bearer "+a.sign(t, clock.Now())); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
		if i%shrinkFloor == 0 {
			clock.Advance(time.Second) // spread expiries out
		}
	}
	if got := v.ReplayLen(); got != n {
		t.Fatalf("replay cache holds %d, want %d", got, n)
	}
	// Entries live until exp + skew: one second before that, the last
	// batch is still there.
	clock.Advance(assertion.DefaultLifetime + DefaultClockSkew - time.Second)
	if got := v.ReplayLen(); got == 0 || got == n {
		t.Fatalf("partial sweep left %d of %d", got, n)
	}
	clock.Advance(time.Second)
	if got := v.ReplayLen(); got != 0 {
		t.Fatalf("after expiry the cache holds %d, want 0", got)
	}
	// The memory went back down too, not just the count.
	v.replay.mu.Lock()
	defer v.replay.mu.Unlock()
	if len(v.replay.perAgent) != 0 || cap(v.replay.order) > shrinkFloor || v.replay.peak != 0 {
		t.Fatalf("after sweep: perAgent %d, heap cap %d, peak %d", len(v.replay.perAgent), cap(v.replay.order), v.replay.peak)
	}
}

func TestReplayCaps(t *testing.T) {
	a := newAgent(t, "clinic-a")
	b := newAgent(t, "clinic-b")
	c := newAgent(t, "clinic-c")
	dir := newDir(a, b, c)
	clock := newClock()
	v := NewVerifier(Options{Now: clock.Now, ReplayCapacity: 5, PerAgentReplayCapacity: 3})

	type step struct {
		who    agent
		reason string
	}
	first := ""
	steps := []step{
		{a, ""}, {a, ""}, {a, ""},
		{a, ReasonReplayCacheFull}, // clinic-a at its own cap
		{b, ""}, {b, ""},           // global cap reached by b: a could not push b out
		{b, ReasonReplayCacheFull},
		{c, ReasonReplayCacheFull},
	}
	for i, s := range steps {
		tok := s.who.sign(t, clock.Now())
		if first == "" {
			first = tok
		}
		_, err := v.Verify(dir, "Bearer "+tok)
		got := ""
		if err != nil {
			got = reasonOf(t, err)
		}
		if got != s.reason {
			t.Fatalf("step %d (%s): reason %q, want %q", i, s.who.id, got, s.reason)
		}
	}
	// A replay is still named as such when the cache is full.
	if _, err := v.Verify(dir, "Bearer "+first); err == nil || reasonOf(t, err) != ReasonReplayed {
		t.Fatalf("replay while full: %v", err)
	}
	if got := v.ReplayLen(); got != 5 {
		t.Fatalf("cache holds %d, want 5", got)
	}
	// Full means refuse, never forget: once the entries expire there is room again.
	clock.Advance(assertion.DefaultLifetime + DefaultClockSkew)
	if _, err := v.Verify(dir, "Bearer "+c.sign(t, clock.Now())); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
}

func TestOptionsDefaults(t *testing.T) {
	v := NewVerifier(Options{ReplayCapacity: 10})
	if v.skew != 60*time.Second || v.maxLifetime != 5*time.Minute {
		t.Fatalf("skew %v, max lifetime %v", v.skew, v.maxLifetime)
	}
	if v.replay.capTotal != 10 || v.replay.capAgent != 10 {
		t.Fatalf("caps %d/%d, want per-agent clamped to 10", v.replay.capTotal, v.replay.capAgent)
	}
	// The default clock is the wall clock: a fresh token is accepted.
	a := newAgent(t, "clinic-a")
	tok, err := assertion.Sign(a.priv, a.id, testAudience, time.Now(), assertion.DefaultLifetime, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(newDir(a), "Bearer "+tok); err != nil {
		t.Fatalf("wall-clock token: %v", err)
	}
	if _, err := v.Verify(nil, "Bearer "+tok); err == nil || reasonOf(t, err) != ReasonUnknownAgent {
		t.Fatalf("nil directory: %v", err)
	}
}

func TestJWTLibraryDoesNotReadWallClock(t *testing.T) {
	// Tokens minted for 2030 (t0) are far in the future of the wall clock,
	// and tokens from 2001 long expired: only the injected clock decides.
	a := newAgent(t, "clinic-a")
	for _, at := range []time.Time{t0, time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)} {
		v := NewVerifier(Options{Now: func() time.Time { return at }})
		if _, err := v.Verify(newDir(a), "Bearer "+a.sign(t, at)); err != nil {
			t.Fatalf("token at %v: %v", at, err)
		}
	}
}

func TestConcurrentVerify(t *testing.T) {
	agents := []agent{newAgent(t, "a1"), newAgent(t, "a2"), newAgent(t, "a3"), newAgent(t, "a4")}
	dir := newDir(agents...)
	clock := newClock()
	v := NewVerifier(Options{Now: clock.Now})

	const goroutines, each = 16, 25
	toks := make([][]string, goroutines)
	for g := range toks {
		for range each {
			toks[g] = append(toks[g], "Bearer "+agents[g%len(agents)].sign(t, clock.Now()))
		}
	}
	shared := "Bearer " + agents[0].sign(t, clock.Now())

	var wg sync.WaitGroup
	var mu sync.Mutex
	sharedOK, sharedReplayed := 0, 0
	errs := make(chan error, goroutines*each)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, h := range toks[g] {
				id, err := v.Verify(dir, h)
				if err != nil || id != agents[g%len(agents)].id {
					errs <- fmt.Errorf("goroutine %d token %d: %q %v", g, i, id, err)
				}
				clock.Advance(time.Millisecond)
			}
			// Everyone races to use the same token: exactly one wins.
			_, err := v.Verify(dir, shared)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				sharedOK++
			case err.(*Error).Reason == ReasonReplayed:
				sharedReplayed++
			default:
				errs <- fmt.Errorf("shared token: %v", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if sharedOK != 1 || sharedReplayed != goroutines-1 {
		t.Fatalf("shared token: %d accepted, %d replayed; want 1 and %d", sharedOK, sharedReplayed, goroutines-1)
	}
	if got := v.ReplayLen(); got != goroutines*each+1 {
		t.Fatalf("replay cache holds %d, want %d", got, goroutines*each+1)
	}
}

func TestReasonsAreFixedWords(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reasons() {
		if seen[r] || r == "" || strings.ContainsAny(r, " \n.") {
			t.Fatalf("reason %q duplicated or not one word", r)
		}
		seen[r] = true
	}
	if len(seen) != 14 {
		t.Fatalf("%d reasons, want the 14 of the contract", len(seen))
	}
}

// Claims and headers that encoding/json reads one way but a reviewer (or
// another parser) could read another — a member given twice, or a claim
// named like a registered one but for letter case — are refused outright.
func TestAmbiguousClaimsRefused(t *testing.T) {
	a := newAgent(t, "clinic-a")
	now := t0
	v := NewVerifier(Options{Now: func() time.Time { return now }})
	good := a.baseClaims(now)
	enc := func(extra string) string {
		b, _ := json.Marshal(good)
		return strings.TrimSuffix(string(b), "}") + "," + extra + "}"
	}
	tests := []struct {
		name, hdr, claims string
		accepted          bool
	}{
		{"iss twice", `{"alg":"EdDSA","typ":"JWT"}`, enc(`"iss":"clinic-a"`), false},
		{"ISS", `{"alg":"EdDSA","typ":"JWT"}`, enc(`"ISS":"clinic-b"`), false},
		{"Exp", `{"alg":"EdDSA","typ":"JWT"}`, enc(`"Exp":1`), false},
		{"escaped Aud", `{"alg":"EdDSA","typ":"JWT"}`, enc(`"\u0041ud":"x"`), false},
		{"escaped JTI", `{"alg":"EdDSA","typ":"JWT"}`, enc(`"\u004a\u0054\u0049":"x"`), false},
		{"unknown member twice", `{"alg":"EdDSA","typ":"JWT"}`, enc(`"x":1,"x":2`), false},
		{"dotless i does not fold to i", `{"alg":"EdDSA","typ":"JWT"}`, enc(`"jt\u0131":"x"`), true},
		{"alg twice", `{"alg":"EdDSA","typ":"JWT","alg":"EdDSA"}`, enc(`"x":1`), false},
		{"typ twice", `{"alg":"EdDSA","typ":"JWT","typ":"JWT"}`, enc(`"x":1`), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			input := b64(tc.hdr) + "." + b64(tc.claims)
			tok := input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(a.priv, []byte(input)))
			_, err := v.Verify(newDir(a), "Bearer "+tok)
			if tc.accepted {
				if err != nil {
					t.Fatalf("%v, want accepted", err)
				}
				return
			}
			if err == nil || reasonOf(t, err) != ReasonMalformed {
				t.Fatalf("%v, want malformed", err)
			}
		})
	}
}

func TestExpiryHeapOrder(t *testing.T) {
	var h expiryHeap
	base := time.Unix(1000, 0)
	perm := []int{5, 3, 9, 1, 1, 7, 0, 8, 2, 6, 4, 3}
	for _, p := range perm {
		heap.Push(&h, replayEntry{expires: base.Add(time.Duration(p) * time.Second).UnixNano()})
	}
	prev := int64(0)
	for range perm {
		e := heap.Pop(&h).(replayEntry)
		if e.expires < prev {
			t.Fatalf("popped %v after %v", e.expires, prev)
		}
		prev = e.expires
	}
	if len(h) != 0 {
		t.Fatalf("%d left", len(h))
	}
}
