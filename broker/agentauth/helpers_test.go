package agentauth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/clocktest"
)

const testAudience = "https://broker.example.test"

// t0 is the fixed instant the tests start at.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func newClock() *clocktest.Clock { return clocktest.New(t0) }

// testDir is an in-memory policy.
type testDir struct {
	aud      string
	keys     map[string]crypto.PublicKey
	disabled map[string]bool
	count    int // AgentCount; 0 (unknown) unless a test sets it
}

func (d *testDir) Audience() string { return d.aud }

func (d *testDir) AgentKeys(id string) ([]crypto.PublicKey, bool) {
	k, ok := d.keys[id]
	if !ok || d.disabled[id] {
		return nil, false
	}
	if ks, ok := k.([]crypto.PublicKey); ok { // an agent with two keys
		return ks, true
	}
	return []crypto.PublicKey{k}, true
}

func (d *testDir) AgentCount() int { return d.count }

// agent is a registered key pair.
type agent struct {
	id   string
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newAgent(t testing.TB, id string) agent {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return agent{id: id, pub: pub, priv: priv}
}

func newDir(agents ...agent) *testDir {
	d := &testDir{aud: testAudience, keys: map[string]crypto.PublicKey{}, disabled: map[string]bool{}}
	for _, a := range agents {
		d.keys[a.id] = a.pub
	}
	return d
}

// sign makes a real assertion the way agents do.
func (a agent) sign(t testing.TB, now time.Time) string {
	t.Helper()
	tok, err := assertion.Sign(a.priv, a.id, testAudience, now, assertion.DefaultLifetime, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// baseClaims is a valid claim set for a at now, as a map so tests can drop
// or change any claim.
func (a agent) baseClaims(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": a.id,
		"sub": a.id,
		"aud": []string{testAudience},
		"iat": now.Unix(),
		"exp": now.Add(assertion.DefaultLifetime).Unix(),
		"jti": "jti-" + now.Format(time.RFC3339Nano) + "-" + a.id,
	}
}

// signWith signs claims with any method and key via golang-jwt directly,
// applying edit to the header first.
func signWith(t testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims, edit func(h map[string]any)) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if edit != nil {
		edit(tok.Header)
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func testRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsaKey = k
	})
	return rsaKey
}

// reasonOf returns err's Reason, failing the test when err is not an *Error.
func reasonOf(t testing.TB, err error) string {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *agentauth.Error", err, err)
	}
	return e.Reason
}

// assertNoSecret fails when the error text contains the token or any of its
// parts (header, payload, signature).
func assertNoSecret(t testing.TB, err error, header string) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	tok := strings.TrimSpace(header)
	if _, rest, ok := strings.Cut(tok, " "); ok {
		tok = strings.TrimSpace(rest)
	}
	for _, part := range append([]string{tok}, strings.Split(tok, ".")...) {
		if len(part) >= 8 && strings.Contains(msg, part) {
			t.Fatalf("error %q contains (part of) the token", msg)
		}
	}
	assertFixedMessage(t, err)
}

// assertFixedMessage fails unless err's text is one of the fixed messages,
// which by construction cannot carry any input.
func assertFixedMessage(t testing.TB, err error) {
	t.Helper()
	msg := err.Error()
	known := false
	for _, r := range Reasons() {
		if msg == "agent authentication failed: "+r {
			known = true
		}
	}
	if !known {
		t.Fatalf("error text %q is not one of the fixed messages", msg)
	}
}
