// Package agentauth authenticates agents to the broker: it checks the
// "Authorization: Bearer <JWT>" header every request carries (DESIGN.md,
// "Agent authentication"). The agent side that makes the JWT is
// internal/assertion.
//
// A token is accepted only when it is a compact JWT signed EdDSA by the key
// the policy registers for its issuer, with iss == sub == agent id, an aud
// naming this broker, iat and exp present, a lifetime of at most
// MaxLifetime, valid now (within ClockSkew), and a jti not seen before for
// that agent while the token is unexpired.
//
// The JWS is decoded by hand (jws.go) and its signature checked by
// crypto/ed25519's rules on keys expanded once (sigcheck.go); both are
// fuzzed against the libraries they replace.
package agentauth

import (
	"crypto/ed25519"
	"math"
	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
)

// Reasons a Verify call fails. Each is one fixed word, safe as a log field
// or metric label.
const (
	ReasonMissing          = "missing"
	ReasonMalformed        = "malformed"
	ReasonWrongAlgorithm   = "wrong_algorithm"
	ReasonBadSignature     = "bad_signature"
	ReasonUnknownAgent     = "unknown_agent"
	ReasonWrongAudience    = "wrong_audience"
	ReasonExpired          = "expired"
	ReasonNotYetValid      = "not_yet_valid"
	ReasonLifetimeTooLong  = "lifetime_too_long"
	ReasonReplayed         = "replayed"
	ReasonBadClaims        = "bad_claims"
	ReasonReplayCacheFull  = "replay_cache_full"
	maxReportedAgentIDSize = 128
)

// Reasons lists every Reason an *Error can carry, for pre-registering
// metric label values.
func Reasons() []string {
	return []string{
		ReasonMissing, ReasonMalformed, ReasonWrongAlgorithm, ReasonBadSignature,
		ReasonUnknownAgent, ReasonWrongAudience, ReasonExpired, ReasonNotYetValid,
		ReasonLifetimeTooLong, ReasonReplayed, ReasonBadClaims, ReasonReplayCacheFull,
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
	DefaultClockSkew              = 60 * time.Second
	DefaultReplayCapacity         = 100_000
	DefaultPerAgentReplayCapacity = 10_000
)

// Directory is what the verifier needs from the current policy. The policy
// reloads, so it is passed on every call rather than held.
type Directory interface {
	// Audience is the broker URL tokens must be addressed to; it is
	// compared after dropping one trailing slash on both sides.
	Audience() string
	// AgentKey returns the agent's public key; false for unknown OR
	// disabled agents.
	AgentKey(agentID string) (ed25519.PublicKey, bool)
}

// Error is every failure Verify returns. Callers answer all of them with
// the same 401 so that nobody can probe which agent ids exist.
type Error struct {
	// Reason is one of the Reason* words.
	Reason string
	// AgentID is the agent id the token claims (its iss), for server logs
	// only. It is proven only for the reasons found after the signature
	// check (wrong_audience, expired, not_yet_valid, lifetime_too_long,
	// replayed, replay_cache_full, and bad_claims with an iss); otherwise
	// anyone could have written it. Empty when absent, longer than 128
	// bytes or not printable ASCII, so it is always safe to log.
	AgentID string
}

// Error returns a fixed message with the reason; it never contains the
// token or the claimed agent id.
func (e *Error) Error() string { return "agent authentication failed: " + e.Reason }

// Options configures a Verifier. Zero fields take the defaults.
type Options struct {
	Now            func() time.Time // injected clock; default time.Now
	ClockSkew      time.Duration    // default DefaultClockSkew (60 s)
	MaxLifetime    time.Duration    // default assertion.MaxLifetime (5 min)
	ReplayCapacity int              // bound on remembered jtis; default DefaultReplayCapacity
	// PerAgentReplayCapacity bounds one agent's remembered jtis, so a
	// single agent (or a stolen key) cannot fill the whole cache and lock
	// the others out. Default DefaultPerAgentReplayCapacity, and never more
	// than ReplayCapacity.
	PerAgentReplayCapacity int
	// AgentRate and AgentBurst are the caller's per-agent rate limit
	// (requests per second, burst). When PerAgentReplayCapacity is zero and
	// AgentRate is set, the per-agent cap is what that limit lets through
	// while one assertion can live (rate × (MaxLifetime + 2 × ClockSkew) +
	// burst), bounded to [MinPerAgentReplayCapacity,
	// DefaultPerAgentReplayCapacity]: a rate-limited agent never reaches it.
	AgentRate  float64
	AgentBurst int
}

// MinPerAgentReplayCapacity is the smallest per-agent cap derived from
// Options.AgentRate.
const MinPerAgentReplayCapacity = 64

// Verifier checks agent assertions. It is safe for concurrent use.
type Verifier struct {
	now         func() time.Time
	skew        time.Duration
	maxLifetime time.Duration
	replay      *replayCache
	keys        keyCache // agents' keys, expanded for verification
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
		o.PerAgentReplayCapacity = perAgentCapacity(o.AgentRate, o.AgentBurst, o.MaxLifetime+2*o.ClockSkew)
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

// perAgentCapacity is how many jtis an agent limited to rate per second
// (bursts of burst) can have accepted within window, bounded; the default
// when rate is not a positive finite number.
func perAgentCapacity(rate float64, burst int, window time.Duration) int {
	if !(rate > 0) || math.IsInf(rate, 1) {
		return DefaultPerAgentReplayCapacity
	}
	n := rate*window.Seconds() + float64(max(burst, 0))
	if n >= DefaultPerAgentReplayCapacity {
		return DefaultPerAgentReplayCapacity
	}
	return max(int(math.Ceil(n)), MinPerAgentReplayCapacity)
}

// ReplayLen reports how many jtis the replay cache holds, after dropping
// the expired ones. For metrics and tests.
func (v *Verifier) ReplayLen() int { return v.replay.len(v.now()) }

// claims is the claim set Verify reads. A time claim that is absent or
// null has its has* flag false, which is how missing iat/exp are told
// apart.
type claims struct {
	Issuer, Subject, ID            string
	Audience                       []string
	ExpiresAt, IssuedAt, NotBefore time.Time
	hasExp, hasIat, hasNbf         bool
}

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
	Agent   string // the authenticated agent id
	jti     string
	expires time.Time // exp + skew
	agents  int       // agents in the policy; 0 when the Directory does not say
}

// AgentCounter is an optional Directory method: the number of agents in the
// policy. When the Directory has it, the replay cache is one partition of
// PerAgentReplayCapacity per agent (total cap per-agent cap × agents), so
// one agent filling its share never refuses another agent's fresh jti.
type AgentCounter interface {
	AgentCount() int
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
	if !ok {
		return Verified{}, &Error{Reason: ReasonMalformed}
	}
	if !compactShape(tok) {
		return Verified{}, &Error{Reason: ReasonMalformed}
	}
	if dir == nil {
		return Verified{}, &Error{Reason: ReasonUnknownAgent}
	}

	// The signature is checked first (right after the key lookup) so that
	// every later reason describes a token the agent really signed: an
	// "expired" in the logs then means that agent's clock is off, not that
	// someone sent junk. Doing the cheap claim checks first would save no
	// CPU against an attacker, who can always make unsigned claims pass them.
	var c claims
	if reason := verifySignature(dir, &v.keys, tok, &c); reason != "" {
		return Verified{}, &Error{Reason: reason, AgentID: reportableID(c.Issuer)}
	}

	if reason := v.checkClaims(dir, &c); reason != "" {
		return Verified{}, &Error{Reason: reason, AgentID: reportableID(c.Issuer)}
	}
	if v.replay.has(c.Issuer, c.ID, v.now()) {
		return Verified{}, &Error{Reason: ReasonReplayed, AgentID: reportableID(c.Issuer)}
	}
	a := Verified{Agent: c.Issuer, jti: c.ID, expires: c.ExpiresAt.Add(v.skew)}
	if ac, ok := dir.(AgentCounter); ok {
		a.agents = ac.AgentCount()
	}
	return a, nil
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

// checkClaims applies the claim rules to a signed claim set and returns a
// Reason, or "" when the claims are acceptable.
func (v *Verifier) checkClaims(dir Directory, c *claims) string {
	if c.Subject != c.Issuer {
		return ReasonBadClaims
	}
	if c.ID == "" || len(c.ID) > MaxJTIBytes {
		return ReasonBadClaims
	}
	if !c.hasIat || !c.hasExp {
		return ReasonBadClaims
	}
	iat, exp := c.IssuedAt, c.ExpiresAt
	if !exp.After(iat) {
		return ReasonBadClaims
	}
	if !audienceOK(dir.Audience(), c.Audience) {
		return ReasonWrongAudience
	}
	if exp.Sub(iat) > v.maxLifetime {
		return ReasonLifetimeTooLong
	}
	now := v.now()
	if !exp.Add(v.skew).After(now) {
		return ReasonExpired
	}
	if iat.Add(-v.skew).After(now) {
		return ReasonNotYetValid
	}
	if c.hasNbf && c.NotBefore.Add(-v.skew).After(now) {
		return ReasonNotYetValid
	}
	return ""
}

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

// compactShape reports whether tok is three non-empty base64url segments
// joined by dots: a cheap filter before any decoding.
func compactShape(tok string) bool {
	dots := 0
	segLen := 0
	for i := 0; i < len(tok); i++ {
		ch := tok[i]
		switch {
		case ch == '.':
			if segLen == 0 {
				return false
			}
			dots++
			segLen = 0
		case ch >= 'A' && ch <= 'Z', ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9', ch == '-', ch == '_':
			segLen++
		default:
			return false
		}
	}
	return dots == 2 && segLen > 0
}

// audienceOK reports whether aud names want, after dropping one trailing
// slash on both sides. An empty policy audience matches nothing.
func audienceOK(want string, aud []string) bool {
	want = assertion.NormalizeAudience(want)
	if want == "" {
		return false
	}
	for _, a := range aud {
		if assertion.NormalizeAudience(a) == want {
			return true
		}
	}
	return false
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
