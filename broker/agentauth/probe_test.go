package agentauth

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/ratelimit"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
)

// Unknown and disabled ids go through the same signature work as a known
// id with a bad signature (a verification against the dummy key), and fail
// as unknown_agent.
func TestUnknownAgentVerifiesDummyKey(t *testing.T) {
	a := newAgent(t, "clinic-a")
	off := newAgent(t, "clinic-off")
	stranger := newAgent(t, "stranger")
	forger := newAgent(t, "clinic-a")
	dir := newDir(a, off)
	dir.disabled[off.id] = true
	dir.keys["short-key"] = ed25519.PublicKey{1, 2, 3}
	clock := newClock()
	v := NewVerifier(Options{Now: clock.Now})
	tests := []struct {
		name   string
		header string
		reason string
		dummy  uint64
	}{
		{"unknown id", "Bearer " + stranger.sign(t, clock.Now()), ReasonUnknownAgent, 1},
		{"disabled id", "Bearer " + off.sign(t, clock.Now()), ReasonUnknownAgent, 1},
		{"unusable key", "Bearer " + signWith(t, jwt.SigningMethodEdDSA, a.priv, withIss(a.baseClaims(clock.Now()), "short-key"), nil), ReasonUnknownAgent, 1},
		{"known id, bad signature", "Bearer " + forger.sign(t, clock.Now()), ReasonBadSignature, 0},
		{"known id, good signature", "Bearer " + a.sign(t, clock.Now()), "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := dummyVerifications.Load()
			_, err := v.Verify(dir, tt.header)
			got := ""
			if err != nil {
				got = reasonOf(t, err)
			}
			if got != tt.reason {
				t.Fatalf("reason %q, want %q", got, tt.reason)
			}
			if n := dummyVerifications.Load() - before; n != tt.dummy {
				t.Fatalf("%d dummy verifications, want %d", n, tt.dummy)
			}
		})
	}
	for alg, k := range dummyKeys {
		if algOf(k) != alg {
			t.Fatalf("dummy key for %s is of %q", alg, algOf(k))
		}
	}
}

// Check does not record; Record does, atomically, once; once recorded,
// Check refuses the jti too (so a replay never reaches the rate limit).
func TestCheckThenRecord(t *testing.T) {
	a := newAgent(t, "clinic-a")
	dir := newDir(a)
	clock := newClock()
	v := NewVerifier(Options{Now: clock.Now})
	h := "Bearer " + a.sign(t, clock.Now())
	// Two requests carrying the same assertion, both checked before
	// either is recorded: only one Record may succeed.
	first, err := v.Check(dir, h)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	tests := []struct {
		name   string
		op     func() error
		reason string
		len    int
	}{
		{"check only", func() error { _, err := v.Check(dir, h); return err }, "", 0},
		{"check again", func() error { _, err := v.Check(dir, h); return err }, "", 0},
		{"record", func() error { return v.Record(first) }, "", 1},
		{"record the concurrent copy", func() error { return v.Record(first) }, ReasonReplayed, 1},
		{"check after record", func() error { _, err := v.Check(dir, h); return err }, ReasonReplayed, 1},
	}
	for _, tt := range tests {
		err := tt.op()
		got := ""
		if err != nil {
			got = reasonOf(t, err)
		}
		if got != tt.reason || v.ReplayLen() != tt.len {
			t.Fatalf("%s: reason %q (want %q), cache %d (want %d)", tt.name, got, tt.reason, v.ReplayLen(), tt.len)
		}
	}
}

// With a Directory that counts its agents, each agent has its own share
// of the fixed total (here min(3, 6/3) = 2): an agent over its share is
// refused, and never makes another agent's fresh jti fail.
func TestReplayPartitionPerAgent(t *testing.T) {
	a := newAgent(t, "clinic-a")
	b := newAgent(t, "clinic-b")
	c := newAgent(t, "clinic-c")
	dir := newDir(a, b, c)
	dir.count = len(dir.keys)
	clock := newClock()
	v := NewVerifier(Options{Now: clock.Now, ReplayCapacity: 6, PerAgentReplayCapacity: 3})
	steps := []struct {
		who    agent
		reason string
	}{
		{a, ""}, {a, ""},
		{a, ReasonReplayCacheFull}, // clinic-a's share is full
		{a, ReasonReplayCacheFull},
		{b, ""}, {b, ""}, // b is not locked out by a
		{b, ReasonReplayCacheFull},
		{c, ""}, {c, ""}, // nor is c, though the total is reached with it
	}
	for i, s := range steps {
		_, err := v.Verify(dir, "Bearer "+s.who.sign(t, clock.Now()))
		got := ""
		if err != nil {
			got = reasonOf(t, err)
		}
		if got != s.reason {
			t.Fatalf("step %d (%s): reason %q, want %q", i, s.who.id, got, s.reason)
		}
	}
	if n := v.ReplayLen(); n != 6 {
		t.Fatalf("cache holds %d, want the total 6", n)
	}
}

// The per-agent share follows the rate limiter's settings (held once, by
// the Limiter): what one agent may send while an assertion can live.
func TestPerAgentCapacityFromRate(t *testing.T) {
	window := 5*time.Minute + 2*DefaultClockSkew
	tests := []struct {
		name  string
		limit *ratelimit.Limiter
		want  int
	}{
		{"no budget", nil, DefaultPerAgentReplayCapacity},
		{"limiting off", ratelimit.New(0, 0, nil), DefaultPerAgentReplayCapacity},
		{"negative rate is off", ratelimit.New(-1, 5, nil), DefaultPerAgentReplayCapacity},
		{"10/s burst 20", ratelimit.New(10, 20, nil), 10*420 + 20},
		{"slow agent floor", ratelimit.New(0.01, 1, nil), MinPerAgentReplayCapacity},
		{"fast agent ceiling", ratelimit.New(1000, 20, nil), DefaultPerAgentReplayCapacity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b RequestBudget
			if tt.limit != nil {
				b = tt.limit
			}
			if got := perAgentCapacity(b, window); got != tt.want {
				t.Errorf("%d, want %d", got, tt.want)
			}
		})
	}
	v := NewVerifier(Options{Budget: ratelimit.New(10, 20, nil)})
	if v.replay.capAgent != 10*420+20 {
		t.Errorf("per-agent cap %d", v.replay.capAgent)
	}
}

// The algorithm comes from the agent's keys, never from the token's header:
// an ES256 token for an Ed25519 agent and the reverse are refused, after a
// dummy check that keeps the answer as slow as any other. An agent with two
// keys (a rotation, or two kinds) is accepted by either.
func TestAlgorithmFromTheKey(t *testing.T) {
	ed := newAgent(t, "clinic-ed")
	ec := newECAgent(t, "clinic-ec")
	edOld, edNew := newAgent(t, "clinic-two"), newAgent(t, "clinic-two")
	mixedEd, mixedEC := newAgent(t, "clinic-mixed"), newECAgent(t, "clinic-mixed")
	forger := newECAgent(t, "clinic-ec")
	strangerEC := newECAgent(t, "stranger")
	dir := newDir(ed, edOld)
	dir.keys[ec.id] = &ec.priv.PublicKey
	dir.keys[edOld.id] = []crypto.PublicKey{edOld.pub, edNew.pub}
	dir.keys[mixedEd.id] = []crypto.PublicKey{mixedEd.pub, &mixedEC.priv.PublicKey}
	clock := newClock()
	v := NewVerifier(Options{Now: clock.Now})
	n := 0
	es256 := func(id string, key *ecdsa.PrivateKey) string {
		n++
		c := ed.baseClaims(clock.Now())
		c["iss"], c["sub"], c["jti"] = id, id, fmt.Sprint("jti-", n)
		return "Bearer " + signWith(t, jwt.SigningMethodES256, key, c, nil)
	}
	eddsa := func(id string, key ed25519.PrivateKey) string {
		n++
		c := ed.baseClaims(clock.Now())
		c["iss"], c["sub"], c["jti"] = id, id, fmt.Sprint("jti-", n)
		return "Bearer " + signWith(t, jwt.SigningMethodEdDSA, key, c, nil)
	}
	tests := []struct {
		name, header, reason string
		dummy                uint64
	}{
		{"ES256 for an ecdsa-p256 agent", es256(ec.id, ec.priv), "", 0},
		{"ES256 forged", es256(ec.id, forger.priv), ReasonBadSignature, 0},
		{"ES256 for an Ed25519 agent", es256(ed.id, ec.priv), ReasonWrongAlgorithm, 1},
		{"EdDSA for an ecdsa-p256 agent", eddsa(ec.id, ed.priv), ReasonWrongAlgorithm, 1},
		{"ES256 for an unknown agent", es256(strangerEC.id, strangerEC.priv), ReasonUnknownAgent, 1},
		{"old key of two", eddsa(edOld.id, edOld.priv), "", 0},
		{"new key of two", eddsa(edNew.id, edNew.priv), "", 0},
		{"neither key of two", eddsa(edNew.id, ed.priv), ReasonBadSignature, 0},
		{"mixed kinds, EdDSA", eddsa(mixedEd.id, mixedEd.priv), "", 0},
		{"mixed kinds, ES256", es256(mixedEC.id, mixedEC.priv), "", 0},
		{"ES384 refused", "Bearer " + signWith(t, jwt.SigningMethodES384, mustP384(t), ec.baseClaims(clock.Now()), nil), ReasonWrongAlgorithm, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := dummyVerifications.Load()
			id, err := v.Verify(dir, tt.header)
			got := ""
			if err != nil {
				got = reasonOf(t, err)
			} else if id == "" {
				t.Fatal("accepted without an id")
			}
			if got != tt.reason {
				t.Fatalf("reason %q, want %q", got, tt.reason)
			}
			if n := dummyVerifications.Load() - before; n != tt.dummy {
				t.Fatalf("%d dummy verifications, want %d", n, tt.dummy)
			}
		})
	}
}

// ecAgent is an agent with a P-256 key, as a TPM makes.
type ecAgent struct {
	id   string
	priv *ecdsa.PrivateKey
}

func newECAgent(t testing.TB, id string) ecAgent {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return ecAgent{id: id, priv: k}
}

func (a ecAgent) baseClaims(now time.Time) jwt.MapClaims {
	return agent{id: a.id}.baseClaims(now)
}

func mustP384(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The cnf claim: an X25519 OKP key comes back as Verified.Recipient; a cnf
// that is anything else is refused (bad_claims); none leaves it nil (the
// API decides whether the request needs one).
func TestConfirmationKey(t *testing.T) {
	a := newAgent(t, "clinic-a")
	dir := newDir(a)
	clock := newClock()
	v := NewVerifier(Options{Now: clock.Now})
	x, _ := ecdh.X25519().GenerateKey(rand.Reader)
	good := assertion.X25519JWK(x.PublicKey())
	n := 0
	with := func(cnf any) string {
		n++
		c := a.baseClaims(clock.Now())
		c["jti"] = fmt.Sprint("cnf-", n)
		if cnf != nil {
			c["cnf"] = cnf
		}
		return "Bearer " + signWith(t, jwt.SigningMethodEdDSA, a.priv, c, nil)
	}
	tests := []struct {
		name      string
		header    string
		reason    string
		recipient bool
	}{
		{"X25519 key", with(map[string]any{"jwk": good}), "", true},
		{"signed by the agent's own code", func() string {
			tok, err := assertion.Sign(a.priv, a.id, testAudience, clock.Now(), assertion.DefaultLifetime, x.PublicKey())
			if err != nil {
				t.Fatal(err)
			}
			return "Bearer " + tok
		}(), "", true},
		{"no cnf", with(nil), "", false},
		{"cnf without jwk", with(map[string]any{}), ReasonBadClaims, false},
		{"cnf null jwk", with(map[string]any{"jwk": nil}), ReasonBadClaims, false},
		{"EC key", with(map[string]any{"jwk": map[string]any{"kty": "EC", "crv": "P-256", "x": good.X}}), ReasonBadClaims, false},
		{"Ed25519 OKP", with(map[string]any{"jwk": map[string]any{"kty": "OKP", "crv": "Ed25519", "x": good.X}}), ReasonBadClaims, false},
		{"short x", with(map[string]any{"jwk": map[string]any{"kty": "OKP", "crv": "X25519", "x": good.X[:20]}}), ReasonBadClaims, false},
		{"jku instead", with(map[string]any{"jku": "https://attacker.example/keys"}), ReasonBadClaims, false},
		{"cnf as a string", with("x"), ReasonMalformed, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Check(dir, tt.header)
			reason := ""
			if err != nil {
				reason = reasonOf(t, err)
			}
			if reason != tt.reason || (got.Recipient != nil) != tt.recipient {
				t.Fatalf("reason %q (want %q), recipient %v", reason, tt.reason, got.Recipient)
			}
			if tt.recipient && !got.Recipient.Equal(x.PublicKey()) {
				t.Fatal("recipient is not the cnf key")
			}
		})
	}
}
