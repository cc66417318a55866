// Package agentauth authenticates agents to the broker: it checks the
// "Authorization: Bearer <JWT>" header every request carries (docs/design.md,
// "Agent authentication"). The agent side that makes the JWT is
// internal/assertion.
//
// A token is accepted only when it is a compact JWT signed with a key the
// policy registers for its issuer, by that key's algorithm (EdDSA for an
// ed25519: key, ES256 for an ecdsa-p256: one; never an algorithm the
// token's header picks for a key of another kind), with
// iss == sub == agent id, an aud naming this broker, iat and exp present, a
// lifetime of at most MaxLifetime, valid now (within ClockSkew), and a jti
// not seen before for that agent while the token is unexpired.
//
// Parsing, the signature and the standard claims are golang-jwt's
// (jwt.ParseWithClaims over crypto/ed25519 and crypto/ecdsa); the broker's
// own claim rules, the cnf key among them, are claims.go; the replay cache
// is replay.go.
package agentauth

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
)

// Reasons a Verify call fails. Each is one fixed word, safe as a log field
// or metric label.
const (
	ReasonMissing         = "missing"
	ReasonMalformed       = "malformed"
	ReasonWrongAlgorithm  = "wrong_algorithm"
	ReasonBadSignature    = "bad_signature"
	ReasonUnknownAgent    = "unknown_agent"
	ReasonWrongAudience   = "wrong_audience"
	ReasonExpired         = "expired"
	ReasonNotYetValid     = "not_yet_valid"
	ReasonLifetimeTooLong = "lifetime_too_long"
	ReasonReplayed        = "replayed"
	ReasonBadClaims       = "bad_claims"
	ReasonReplayCacheFull = "replay_cache_full"
	// ReasonNoConfirmationKey: a token request whose assertion has no cnf
	// key to seal the answer to (an agent older than sealed answers).
	ReasonNoConfirmationKey = "no_confirmation_key"
	maxReportedAgentIDSize  = 128
)

// ReasonSourceNotAllowed is the one Reason the Verifier never returns: the
// assertion is good, but the agent's AllowedSourceRanges (broker/policy)
// do not hold the address the request came from. broker/api finds that
// out and answers it as an *Error like every other authentication
// failure, so it is listed here with them: one list of the words the
// broker's "agent authentication failed" line can carry.
const ReasonSourceNotAllowed = "source_not_allowed"

// Reasons lists every Reason an *Error can carry, for pre-registering
// metric label values.
func Reasons() []string {
	return []string{
		ReasonMissing, ReasonMalformed, ReasonWrongAlgorithm, ReasonBadSignature,
		ReasonUnknownAgent, ReasonWrongAudience, ReasonExpired, ReasonNotYetValid,
		ReasonLifetimeTooLong, ReasonReplayed, ReasonBadClaims, ReasonReplayCacheFull,
		ReasonNoConfirmationKey, ReasonSourceNotAllowed,
	}
}

// Limits on the untrusted input, applied before any parsing or lookup.
const (
	// MaxHeaderBytes caps the Authorization header. A real assertion is
	// about 350 bytes.
	MaxHeaderBytes = 8 << 10
	// MaxJTIBytes caps the jti, which the replay cache keeps in memory.
	// internal/assertion makes 22-byte ones.
	MaxJTIBytes = 128
)

// Defaults for zero Options fields.
const (
	DefaultClockSkew = 60 * time.Second
	// DefaultReplayCapacity is the replay cache's total: 524,288 entries,
	// at most 64 MiB (ReplayCacheBytesPerEntry each; about 60 bytes
	// measured), whatever the number of agents. With 10,000 agents each
	// agent's share is 52 assertions per 7 minutes; an agent polls about
	// once a minute.
	DefaultReplayCapacity         = 1 << 19
	DefaultPerAgentReplayCapacity = 10_000
	// ReplayCacheBytesPerEntry bounds the memory of one replay-cache
	// entry (map slot, heap slot, growth slack; TestReplayEntryMemory
	// checks it), so the cache's budget in bytes is this times
	// Options.ReplayCapacity.
	ReplayCacheBytesPerEntry = 128
)

// Directory is what the verifier needs from the current policy. The policy
// reloads, so it is passed on every call rather than held.
type Directory interface {
	// Audience is the broker URL tokens must be addressed to; it is
	// compared after dropping one trailing slash on both sides.
	Audience() string
	// AgentKeys returns the agent's public keys (ed25519.PublicKey or a
	// P-256 *ecdsa.PublicKey; any one authenticates); false for unknown OR
	// disabled agents.
	AgentKeys(agentID string) ([]crypto.PublicKey, bool)
	// AgentCount is the number of agents in the policy. Each agent's
	// share of the replay cache is the per-agent capacity or
	// Options.ReplayCapacity / AgentCount, whichever is smaller, so the
	// shares add up to at most the fixed total and one agent filling its
	// share never refuses another agent's fresh jti; 0 means unknown (the
	// per-agent capacity and the total apply).
	AgentCount() int
}

// Error is every failure Verify returns. Callers answer all of them with
// the same 401 so that nobody can probe which agent ids exist.
type Error struct {
	// Reason is one of the Reason* words.
	Reason string
	// AgentID is the agent id the token claims (its iss), for server logs
	// only. It is proven only for the reasons found after the signature
	// check (wrong_audience, expired, not_yet_valid, lifetime_too_long,
	// replayed, replay_cache_full, no_confirmation_key, source_not_allowed,
	// and bad_claims with an iss); otherwise anyone could have written it.
	// Empty when absent, longer than 128 bytes or not printable ASCII, so it
	// is always safe to log.
	AgentID string
}

// Error returns a fixed message with the reason; it never contains the
// token or the claimed agent id.
func (e *Error) Error() string { return "agent authentication failed: " + e.Reason }

// RequestBudget is the caller's per-agent rate limit (broker/ratelimit's
// Limiter), which holds the settings: MaxIn reports how many requests one
// agent can make within d, and false when agents are not limited.
type RequestBudget interface {
	MaxIn(d time.Duration) (n int, limited bool)
}

// Options configures a Verifier. Zero fields take the defaults.
type Options struct {
	Now            func() time.Time // injected clock; default time.Now
	ClockSkew      time.Duration    // default DefaultClockSkew (60 s)
	MaxLifetime    time.Duration    // default assertion.MaxLifetime (5 min)
	ReplayCapacity int              // bound on remembered jtis in all; default DefaultReplayCapacity
	// PerAgentReplayCapacity bounds one agent's remembered jtis, so a
	// single agent (or a stolen key) cannot fill the whole cache and lock
	// the others out. When zero it is what Budget lets one agent send
	// while one assertion can live (MaxLifetime + 2 × ClockSkew), bounded
	// to [MinPerAgentReplayCapacity, DefaultPerAgentReplayCapacity], so a
	// rate-limited agent never reaches it; DefaultPerAgentReplayCapacity
	// without a Budget. Never more than ReplayCapacity.
	PerAgentReplayCapacity int
	Budget                 RequestBudget
}

// MinPerAgentReplayCapacity is the smallest per-agent cap derived from
// Options.Budget.
const MinPerAgentReplayCapacity = 64

// Verifier checks agent assertions. It is safe for concurrent use.
type Verifier struct {
	now         func() time.Time
	skew        time.Duration
	maxLifetime time.Duration
	replay      *replayCache
}

// NewVerifier returns a Verifier with o's settings.
func NewVerifier(o Options) *Verifier {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ClockSkew <= 0 {
		o.ClockSkew = DefaultClockSkew
	}
	if o.MaxLifetime <= 0 {
		o.MaxLifetime = assertion.MaxLifetime
	}
	if o.ReplayCapacity <= 0 {
		o.ReplayCapacity = DefaultReplayCapacity
	}
	if o.PerAgentReplayCapacity <= 0 {
		o.PerAgentReplayCapacity = perAgentCapacity(o.Budget, o.MaxLifetime+2*o.ClockSkew)
	}
	if o.PerAgentReplayCapacity > o.ReplayCapacity {
		o.PerAgentReplayCapacity = o.ReplayCapacity
	}
	return &Verifier{
		now:         o.Now,
		skew:        o.ClockSkew,
		maxLifetime: o.MaxLifetime,
		replay:      newReplayCache(o.ReplayCapacity, o.PerAgentReplayCapacity),
	}
}

// perAgentCapacity is how many jtis one agent can have accepted within
// window under budget, bounded; the default without a limit.
func perAgentCapacity(budget RequestBudget, window time.Duration) int {
	if budget == nil {
		return DefaultPerAgentReplayCapacity
	}
	n, limited := budget.MaxIn(window)
	if !limited || n >= DefaultPerAgentReplayCapacity {
		return DefaultPerAgentReplayCapacity
	}
	return max(n, MinPerAgentReplayCapacity)
}

// ReplayLen reports how many jtis the replay cache holds, after dropping
// the expired ones. For metrics and tests.
func (v *Verifier) ReplayLen() int { return v.replay.len(v.now()) }

// Verify checks an Authorization header value, records its jti and
// returns the authenticated agent id: Check followed by Record. Every
// failure is an *Error. A caller that rate-limits agents uses Check, then
// its limit, then Record, so refused requests never reach the replay cache.
func (v *Verifier) Verify(dir Directory, authorizationHeader string) (agentID string, err error) {
	a, err := v.Check(dir, authorizationHeader)
	if err != nil {
		return "", err
	}
	if err := v.Record(a); err != nil {
		return "", err
	}
	return a.Agent, nil
}

// Verified is an assertion that passed every check but the replay check,
// for Record.
type Verified struct {
	Agent string // the authenticated agent id
	// Recipient is the X25519 key of the assertion's cnf claim, to seal
	// the answer's tokens to; nil when the assertion has none.
	Recipient *ecdh.PublicKey
	jti       string
	expires   time.Time // exp + skew
	agents    int       // agents in the policy
}

// Check verifies an Authorization header value — signature, agent and
// claims — without recording its jti. Every failure is an *Error. A jti
// already recorded is refused here too (ReasonReplayed), so a replayed
// assertion never spends the agent's rate limit; Record is still the
// atomic check that lets one of two concurrent first uses through.
func (v *Verifier) Check(dir Directory, authorizationHeader string) (Verified, error) {
	if authorizationHeader == "" {
		return Verified{}, &Error{Reason: ReasonMissing}
	}
	// Cap before any work, so a huge header costs nothing.
	if len(authorizationHeader) > MaxHeaderBytes {
		return Verified{}, &Error{Reason: ReasonMalformed}
	}
	tok, ok := bearerToken(authorizationHeader)
	if !ok || !threeParts(tok) {
		return Verified{}, &Error{Reason: ReasonMalformed}
	}
	if dir == nil {
		return Verified{}, &Error{Reason: ReasonUnknownAgent}
	}
	// An empty audience would make the library skip the aud check: a
	// policy without one accepts nobody.
	want := assertion.NormalizeAudience(dir.Audience())
	if want == "" {
		return Verified{}, &Error{Reason: ReasonWrongAudience}
	}

	c := claims{maxLifetime: v.maxLifetime}
	var kf keyfunc
	kf.dir = dir
	kf.claims = &c
	_, err := jwt.NewParser(
		jwt.WithValidMethods(validMethods),
		// One trailing slash is dropped on both sides before comparing.
		jwt.WithAudience(want, want+"/"),
		jwt.WithIssuedAt(),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(v.skew),
		jwt.WithTimeFunc(v.now),
		jwt.WithStrictDecoding(),
	).ParseWithClaims(tok, &c, kf.key)
	if err != nil {
		return Verified{}, &Error{Reason: kf.reasonFor(err), AgentID: reportableID(c.Issuer)}
	}
	if v.replay.has(c.Issuer, c.ID, v.now()) {
		return Verified{}, &Error{Reason: ReasonReplayed, AgentID: reportableID(c.Issuer)}
	}
	return Verified{
		Agent:     c.Issuer,
		Recipient: c.recipient,
		jti:       c.ID,
		expires:   c.ExpiresAt.Add(v.skew),
		agents:    dir.AgentCount(),
	}, nil
}

// Record remembers a's jti until its token expires. It fails with
// ReasonReplayed when the jti is already remembered (atomically: of two
// concurrent Records of one jti exactly one succeeds), or
// ReasonReplayCacheFull when the agent's share is full. Call it only after
// Check and the caller's rate limit, so forged, invalid or refused tokens
// never fill the cache.
func (v *Verifier) Record(a Verified) error {
	if a.Agent == "" || a.jti == "" {
		return &Error{Reason: ReasonBadClaims}
	}
	if reason := v.replay.add(a.Agent, a.jti, a.expires, v.now(), a.agents); reason != "" {
		return &Error{Reason: reason, AgentID: reportableID(a.Agent)}
	}
	return nil
}

// validMethods are the algorithms of the key kinds a policy can hold. The
// library refuses any other before looking up a key; keyfunc.key then
// keeps only the agent's keys of the token's algorithm.
var validMethods = []string{jwt.SigningMethodEdDSA.Alg(), jwt.SigningMethodES256.Alg()}

// keyfunc finds the keys for one token and remembers what it found, so the
// library's error can be told apart afterwards.
type keyfunc struct {
	dir     Directory
	claims  *claims
	called  bool   // the library decoded both parts and accepted alg
	refused string // a Reason found by key, reported whatever the library says
	dummy   bool   // the id is unknown or disabled: the dummy key was used
}

func (k *keyfunc) key(t *jwt.Token) (any, error) {
	k.called = true
	if !headerOK(t) {
		k.refused = ReasonMalformed
		return nil, errRefused
	}
	if k.claims.Issuer == "" {
		k.refused = ReasonBadClaims
		return nil, errRefused
	}
	alg := t.Method.Alg()
	keys, ok := k.dir.AgentKeys(k.claims.Issuer)
	valid := 0 // keys of a kind the broker can check (the policy makes sure)
	var usable []jwt.VerificationKey
	for _, pub := range keys {
		switch algOf(pub) {
		case "":
			continue
		case alg:
			usable = append(usable, pub)
		}
		valid++
	}
	switch {
	case !ok || valid == 0:
		// Unknown or disabled: the library checks the signature against
		// the dummy key of the token's algorithm, so the answer takes as
		// long as for a known agent and response time does not tell which
		// ids exist.
		k.dummy = true
	case len(usable) == 0:
		// The algorithm is the key's, never the header's choice. The dummy
		// check keeps this answer as slow as the others too.
		k.refused = ReasonWrongAlgorithm
	case len(usable) == 1:
		return usable[0], nil
	default:
		return jwt.VerificationKeySet{Keys: usable}, nil
	}
	dummyVerifications.Add(1)
	return dummyKeys[alg], nil
}

// algOf is the JWS algorithm of a policy key; "" for anything else.
func algOf(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		if len(k) == ed25519.PublicKeySize {
			return jwt.SigningMethodEdDSA.Alg()
		}
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return jwt.SigningMethodES256.Alg()
		}
	}
	return ""
}

var errRefused = errors.New("refused by the key lookup")

// reasonFor maps what ParseWithClaims returned to a Reason. The library
// checks in this order: both parts decode, alg is valid, the signature
// decodes, key (header, iss, agent), signature, then the claims.
func (k *keyfunc) reasonFor(err error) string {
	switch {
	case k.refused != "":
		return k.refused
	case errors.Is(err, jwt.ErrTokenMalformed):
		return ReasonMalformed
	case !k.called:
		// alg missing, unknown, or not one a policy key can have.
		return ReasonWrongAlgorithm
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if k.dummy {
			return ReasonUnknownAgent
		}
		return ReasonBadSignature
	// The signature is good: the claims are the agent's own. The order is
	// the one the logs have always used.
	case errors.Is(err, errBadClaims):
		return ReasonBadClaims
	case errors.Is(err, jwt.ErrTokenInvalidAudience), errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// exp missing is errBadClaims above, so a missing claim here is aud.
		return ReasonWrongAudience
	case errors.Is(err, errLifetimeLong):
		return ReasonLifetimeTooLong
	case errors.Is(err, jwt.ErrTokenExpired):
		return ReasonExpired
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued), errors.Is(err, jwt.ErrTokenNotValidYet):
		return ReasonNotYetValid
	}
	return ReasonBadClaims
}

// headerOK refuses header parameters the broker does not understand — a
// typ other than JWT (another kind of JWT must not be usable here) and any
// crit extension (RFC 7515 §4.1.11 requires refusing unknown ones) — and a
// header with a member named twice.
func headerOK(t *jwt.Token) bool {
	if typ, present := t.Header["typ"]; present {
		s, ok := typ.(string)
		if !ok || !strings.EqualFold(s, "JWT") {
			return false
		}
	}
	if _, crit := t.Header["crit"]; crit {
		return false
	}
	seg, _, _ := strings.Cut(t.Raw, ".")
	raw, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	return err == nil && ambiguous(raw, headerParams) == nil
}

// dummyKeys are public keys, one per algorithm, of private keys thrown
// away at start-up (so nobody can sign for them), checked against for the
// unknown and disabled agent ids and for a key of the wrong kind.
var dummyKeys = func() map[string]crypto.PublicKey {
	ed, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic("agentauth: cannot generate the dummy key: " + err.Error())
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic("agentauth: cannot generate the dummy key: " + err.Error())
	}
	return map[string]crypto.PublicKey{
		jwt.SigningMethodEdDSA.Alg(): ed,
		jwt.SigningMethodES256.Alg(): &ec.PublicKey,
	}
}()

// dummyVerifications counts the checks against dummyKey, for tests.
var dummyVerifications atomic.Uint64

// bearerToken extracts the token from "Bearer <token>"; the scheme is
// case-insensitive (RFC 7235).
func bearerToken(h string) (string, bool) {
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok := strings.Trim(rest, " \t")
	return tok, tok != ""
}

// threeParts reports whether tok is three non-empty parts joined by dots.
// The library would take an unsigned token (an empty third part) as far as
// its algorithm check; here it is malformed.
func threeParts(tok string) bool {
	parts := strings.Split(tok, ".")
	return len(parts) == 3 && parts[0] != "" && parts[1] != "" && parts[2] != ""
}

// reportableID returns id when it is short printable ASCII, else "", so the
// claimed id in an Error is always safe to put in a log line.
func reportableID(id string) string {
	if len(id) > maxReportedAgentIDSize {
		return ""
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return ""
		}
	}
	return id
}
