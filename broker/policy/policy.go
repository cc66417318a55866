// Package policy parses and validates the broker's policy document: which
// DICOM stores exist, how the broker gets a Google token for each, and which
// agent may use which store. This is where a token request is authorised.
package policy

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/strictjson"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
)

// DefaultBaseURL is the Cloud Healthcare API root.
const DefaultBaseURL = "https://healthcare.googleapis.com/v1/"

// DefaultScope is the OAuth2 scope of minted tokens unless an account sets Scopes.
const DefaultScope = "https://www.googleapis.com/auth/cloud-healthcare"

// MaxDocumentSize bounds the policy document and each fragment of a
// policy read from a directory or a Cloud Storage prefix.
const MaxDocumentSize = 1 << 20

// Policy is the policy in force: a document, or the merge of fragments.
type Policy struct {
	Audience string
	BaseUrl  string //nolint:revive // name fixed by the document format

	accounts *table[*Account]
	agents   *table[*Agent]
	baseURL  *url.URL
}

// document is what a policy document or fragment decodes into. Field names
// follow the old Orthanc GCP plugin.
type document struct {
	Audience string
	BaseUrl  string //nolint:revive // name fixed by the document format
	Accounts map[string]*Account
	Agents   map[string]*Agent
}

// Account returns the account named name, nil if there is none.
func (p *Policy) Account(name string) *Account {
	a, _ := p.accounts.get(name)
	return a
}

// Agent returns the agent id, nil if there is none.
func (p *Policy) Agent(id string) *Agent {
	ag, _ := p.agents.get(id)
	return ag
}

// NumAccounts is how many accounts the policy has.
func (p *Policy) NumAccounts() int { return p.accounts.len() }

// NumAgents is how many agents the policy has.
func (p *Policy) NumAgents() int { return p.agents.len() }

// Accounts yields every account by name, in no order.
func (p *Policy) Accounts() iter.Seq2[string, *Account] { return p.accounts.all() }

// AccountChanges compares p with old, an earlier policy: gone holds the
// accounts of old that p does not have as they were (removed or redefined),
// added those of p that old did not have (new or redefined). After an
// incremental reload it costs the shards the reload wrote, not the fleet.
// A nil old has no accounts.
func (p *Policy) AccountChanges(old *Policy) (gone, added []*Account) {
	if old == nil {
		for _, a := range p.Accounts() {
			added = append(added, a)
		}
		return nil, added
	}
	return p.accounts.changes(old.accounts, func(a, b *Account) bool { return a.cacheKey == b.cacheKey })
}

// Agents yields every agent by id, in no order.
func (p *Policy) Agents() iter.Seq2[string, *Agent] { return p.agents.all() }

// Account is one DICOM store and the credential the broker uses for it.
type Account struct {
	Project    string
	Location   string
	Dataset    string
	DicomStore string

	ServiceAccountSecret string `json:",omitempty"`

	AuthorizedUserSecret       string `json:",omitempty"`
	AuthorizedUserClientId     string `json:",omitempty"` //nolint:revive
	AuthorizedUserClientSecret string `json:",omitempty"`
	AuthorizedUserRefreshToken string `json:",omitempty"`

	ImpersonateServiceAccount string `json:",omitempty"`
	TokenLifetime             string `json:",omitempty"`

	Scopes []string `json:",omitempty"`

	name        string
	from        string // the fragment that defines it ("" for a single document)
	kind        Kind
	lifetime    time.Duration
	dicomWebURL string
	fingerprint string
	cacheKey    string
}

// Agent is one on-prem agent and the accounts it may use.
//
// Its key is PublicKey, or PublicKeys: a list of one or two keys of any
// kind, any of which authenticates. Two is enough to roll a key over
// without a window in which the site is locked out (register the new key
// next to the old, switch the agent, then drop the old one) and to move a
// site from a file key to a TPM-made one; more would only widen what a
// stolen key can hide behind. Exactly one of the two fields is set.
//
// AllowedSourceRanges binds the agent to its site's networks: when set, a
// request signed with its key is refused unless it comes from one of
// these prefixes (broker/clientaddr says where a request comes from). A
// key copied off the site is then of no use elsewhere. Absent means from
// anywhere.
type Agent struct {
	PublicKey           string   `json:",omitempty"`
	PublicKeys          []string `json:",omitempty"`
	Accounts            []string
	AllowedSourceRanges []string `json:",omitempty"`
	Disabled            bool     `json:",omitempty"`

	keys   []crypto.PublicKey // parsed: ed25519.PublicKey or *ecdsa.PublicKey
	id     string             // its key in Agents
	from   string             // the fragment that defines it ("" for a single document)
	ranges []netip.Prefix     // parsed AllowedSourceRanges
}

// MaxAgentKeys is how many keys an agent's PublicKeys may list.
const MaxAgentKeys = 2

// Kind says where an account's Google token comes from.
type Kind int

// The credential kinds.
const (
	ServiceAccountKey Kind = iota + 1 // ServiceAccountSecret: service_account JSON
	AuthorizedUser                    // AuthorizedUserSecret or the three inline fields
	Impersonation                     // ImpersonateServiceAccount: keyless
)

func (k Kind) String() string {
	switch k {
	case ServiceAccountKey:
		return "service_account"
	case AuthorizedUser:
		return "authorized_user"
	case Impersonation:
		return "impersonation"
	}
	return "unknown"
}

// Parse decodes and validates a policy document. The error lists every
// problem found, each naming the account or agent and the field.
//
// The document is read with internal/strictjson: a duplicated key, a key
// that matches a field only case-insensitively ("disabled" for Disabled),
// an unknown key or data after the document is refused naming the key, so
// the policy in force is the one a reviewer reads.
//
// A single document is a policy of one unnamed fragment: Parse is
// ParseFragment then Merge, so a document and a set of fragments are
// validated by the same code.
func Parse(data []byte) (*Policy, error) {
	f, err := ParseFragment("", data)
	if f == nil {
		return nil, err
	}
	p, mergeErr := Merge([]*Fragment{f})
	if err != nil || mergeErr != nil {
		return nil, errors.Join(err, mergeErr)
	}
	return p, nil
}

// describeJSONError keeps decoder errors useful without echoing document
// content (which may hold an inline refresh token): strictjson names where
// (the key path) and what, never a value.
func describeJSONError(err error) string {
	var se *strictjson.Error
	if !errors.As(err, &se) {
		return "invalid JSON document"
	}
	path := logtext.Clip(se.Path)
	switch {
	case se.Path == "" && strings.HasPrefix(se.Msg, "unexpected data after"):
		return "unexpected data after the JSON document"
	case se.Msg == "unknown field":
		key := path[strings.LastIndexByte(path, '.')+1:]
		if key == path {
			return fmt.Sprintf("unknown field %q", key)
		}
		return fmt.Sprintf("unknown field %q (at %s)", key, path)
	case path == "":
		return logtext.Clip(se.Msg)
	}
	return path + ": " + logtext.Clip(se.Msg)
}

// The account rules stay regular expressions: they decide what the broker
// will mint for, and byte-by-byte copies of them bought about 9 % of a
// 10,000-site first load (BENCHMARKS.md), not worth a second home per rule.
var (
	segmentRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,256}$`)
	smRE      = regexp.MustCompile(`^sm://projects/[A-Za-z0-9_.:-]+/secrets/[A-Za-z0-9_-]+/versions/(latest|[1-9][0-9]*)$`)
	emailRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*@[a-z0-9.-]+\.[a-z]{2,}$`)
)

// parseKeys parses PublicKey or PublicKeys (exactly one of them is set)
// into the agent's key list, each key checked by parseAgentKey. The errors
// name the field and, in a list, the index.
func (ag *Agent) parseKeys() ([]crypto.PublicKey, []error) {
	switch {
	case ag.PublicKey != "" && ag.PublicKeys != nil:
		return nil, []error{errors.New("PublicKey and PublicKeys are both set: set exactly one")}
	case ag.PublicKey == "" && ag.PublicKeys == nil:
		return nil, []error{errors.New("no key: set PublicKey or PublicKeys")}
	case ag.PublicKeys == nil:
		k, err := parseAgentKey(ag.PublicKey)
		if err != nil {
			return nil, []error{fmt.Errorf("PublicKey: %v", err)}
		}
		return []crypto.PublicKey{k}, nil
	case len(ag.PublicKeys) == 0 || len(ag.PublicKeys) > MaxAgentKeys:
		return nil, []error{fmt.Errorf("PublicKeys: %d keys; list 1 or %d (the current key and the next one)", len(ag.PublicKeys), MaxAgentKeys)}
	}
	var errs []error
	keys := make([]crypto.PublicKey, len(ag.PublicKeys)) // nil where refused
	for i, s := range ag.PublicKeys {
		k, err := parseAgentKey(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("PublicKeys[%d]: %v", i, err))
			continue
		}
		// Compared as keys, not strings: one key, one entry, whatever the
		// spelling.
		for j, prev := range keys[:i] {
			if prev != nil && prev.(interface{ Equal(crypto.PublicKey) bool }).Equal(k) {
				errs = append(errs, fmt.Errorf("PublicKeys[%d]: the same key as PublicKeys[%d] (listed twice)", i, j))
			}
		}
		keys[i] = k
	}
	return keys, errs
}

// parseSourceRanges parses AllowedSourceRanges: CIDR prefixes, IPv4 or
// IPv6, each in its one canonical form. A prefix with host bits set
// (10.0.0.1/8) is refused rather than masked: it is more likely a typo for
// 10.0.0.1/32 than a wish for the whole /8, and the reader of the policy
// should see what is allowed. An empty list is refused too: it would lock
// the agent out, which is what Disabled says plainly.
func parseSourceRanges(list []string) ([]netip.Prefix, []error) {
	if list == nil {
		return nil, nil
	}
	if len(list) == 0 {
		return nil, []error{errors.New("AllowedSourceRanges: an empty list would refuse every request; omit the field to allow any address, or set Disabled")}
	}
	var errs []error
	out := make([]netip.Prefix, 0, len(list))
	seen := make(map[netip.Prefix]int, len(list))
	for i, s := range list {
		q := logtext.Truncate(s, 64)
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("AllowedSourceRanges[%d]: %q is not a CIDR prefix such as 203.0.113.0/24 or 2001:db8::/48 (one address is 203.0.113.7/32)", i, q))
			continue
		case p != p.Masked():
			errs = append(errs, fmt.Errorf("AllowedSourceRanges[%d]: %q has host bits set: write %s, or the address alone as %s", i, q, p.Masked(), netip.PrefixFrom(p.Addr(), p.Addr().BitLen())))
			continue
		case p.Addr().Is4In6():
			// Client addresses are unmapped before matching, so this
			// would never match anything.
			errs = append(errs, fmt.Errorf("AllowedSourceRanges[%d]: %q is an IPv4-mapped IPv6 prefix: write the IPv4 prefix", i, q))
			continue
		}
		if j, dup := seen[p]; dup {
			errs = append(errs, fmt.Errorf("AllowedSourceRanges[%d]: %s listed twice (also [%d])", i, p, j))
			continue
		}
		seen[p] = i
		out = append(out, p)
	}
	return out, errs
}

func (a *Account) validate() []error {
	var errs []error
	for _, f := range []struct{ name, v string }{
		{"Project", a.Project}, {"Location", a.Location}, {"Dataset", a.Dataset}, {"DicomStore", a.DicomStore},
	} {
		switch {
		case f.v == "":
			errs = append(errs, fmt.Errorf("%s: required", f.name))
		case !segmentRE.MatchString(f.v) || f.v == "." || f.v == "..":
			errs = append(errs, fmt.Errorf("%s: %q is not a valid identifier", f.name, f.v))
		}
	}

	inline := a.AuthorizedUserClientId != "" || a.AuthorizedUserClientSecret != "" || a.AuthorizedUserRefreshToken != ""
	var sources []string
	if a.ServiceAccountSecret != "" {
		sources = append(sources, "ServiceAccountSecret")
		a.kind = ServiceAccountKey
		if err := checkSecretRef(a.ServiceAccountSecret); err != nil {
			errs = append(errs, fmt.Errorf("ServiceAccountSecret: %v", err))
		}
	}
	if a.AuthorizedUserSecret != "" {
		sources = append(sources, "AuthorizedUserSecret")
		a.kind = AuthorizedUser
		if err := checkSecretRef(a.AuthorizedUserSecret); err != nil {
			errs = append(errs, fmt.Errorf("AuthorizedUserSecret: %v", err))
		}
	}
	if inline {
		sources = append(sources, "AuthorizedUserClientId/ClientSecret/RefreshToken")
		a.kind = AuthorizedUser
		for _, f := range []struct{ name, v string }{
			{"AuthorizedUserClientId", a.AuthorizedUserClientId},
			{"AuthorizedUserClientSecret", a.AuthorizedUserClientSecret},
			{"AuthorizedUserRefreshToken", a.AuthorizedUserRefreshToken},
		} {
			if f.v == "" {
				errs = append(errs, fmt.Errorf("%s: required when any inline AuthorizedUser field is set", f.name))
			}
		}
	}
	if a.ImpersonateServiceAccount != "" {
		sources = append(sources, "ImpersonateServiceAccount")
		a.kind = Impersonation
		if !emailRE.MatchString(a.ImpersonateServiceAccount) {
			errs = append(errs, fmt.Errorf("ImpersonateServiceAccount: %q is not a service account email", a.ImpersonateServiceAccount))
		}
	}
	switch len(sources) {
	case 0:
		errs = append(errs, errors.New("no credential: set exactly one of ServiceAccountSecret, AuthorizedUserSecret, the inline AuthorizedUser* fields, or ImpersonateServiceAccount"))
	case 1:
	default:
		errs = append(errs, fmt.Errorf("several credentials (%s): set exactly one", strings.Join(sources, ", ")))
	}

	a.lifetime = time.Hour
	if a.TokenLifetime != "" {
		d, err := time.ParseDuration(a.TokenLifetime)
		switch {
		case a.kind != Impersonation:
			errs = append(errs, errors.New("TokenLifetime: only applies to ImpersonateServiceAccount (Google fixes key-based token lifetimes at 1h)"))
		case err != nil:
			errs = append(errs, fmt.Errorf("TokenLifetime: %q is not a duration like \"15m\"", a.TokenLifetime))
		case d < time.Second || d > 12*time.Hour:
			errs = append(errs, fmt.Errorf("TokenLifetime: %s is outside 1s..12h", d))
		default:
			a.lifetime = d
		}
	}
	for i, s := range a.Scopes {
		if u, err := url.Parse(s); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("Scopes[%d]: %q is not an https scope URL", i, s))
		}
	}

	// The fingerprint changes whenever anything that shapes the token does,
	// so a token cached for an old definition is never handed out.
	def, _ := json.Marshal(a)
	sum := sha256.Sum256(def)
	a.fingerprint = hex.EncodeToString(sum[:8])
	a.cacheKey = a.name + "\x00" + a.fingerprint
	return errs
}

// checkURL applies urlrule (https, or http only to loopback, so a typo
// cannot send tokens in clear over a network) and refuses a query or
// fragment, which the broker would otherwise drop or misplace when it joins
// paths onto the URL.
func checkURL(s string) (*url.URL, error) {
	u, err := urlrule.ParseBearerURL(s)
	if err != nil {
		return nil, err
	}
	// ContainsAny catches a bare "?" or "#" too, which url.Parse keeps as
	// empty parts: joined onto, "…/v1/?" would turn every path into a query.
	if strings.ContainsAny(s, "?#") {
		// Only the parts before the query: it may hold an API key.
		return nil, fmt.Errorf("%q must not have a query or fragment", u.Scheme+"://"+u.Host+u.Path)
	}
	return u, nil
}

// googleAPIHostRE is a host under googleapis.com (healthcare.googleapis.com,
// a regional or Private Service Connect endpoint): lower-case DNS labels
// only, so no escape, port or trailing-dot spelling slips past the suffix.
var googleAPIHostRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+googleapis\.com$`)

// IsGoogleAPIHost reports whether host (without port) is a lower-case host
// under googleapis.com, such as healthcare.googleapis.com or
// oauth2.googleapis.com. googleapis.com itself and look-alikes
// ("x.googleapis.com.evil.example", "evilgoogleapis.com") are not.
func IsGoogleAPIHost(host string) bool { return googleAPIHostRE.MatchString(host) }

// checkBaseURL is checkURL plus where: the broker hands BaseUrl out with
// its tokens (agents push it into Orthanc with the bearer token), so it must
// be Google's: https to a *.googleapis.com host, or http(s) to loopback (the
// fakes, the demo).
func checkBaseURL(s string) (*url.URL, error) {
	u, err := checkURL(s)
	if err != nil {
		return nil, err
	}
	host := u.Hostname()
	switch {
	case urlrule.IsLoopbackHost(host):
	case u.Scheme == "https" && IsGoogleAPIHost(host):
	default:
		return nil, fmt.Errorf("host %q is not allowed: want https to a *.googleapis.com host, in lower case (or http to loopback for the fakes)", logtext.Truncate(host, 80))
	}
	return u, nil
}

// parseAgentKey parses the policy form of an agent key and refuses a weak
// one. A P-256 key must be a point on the curve (agentkey checks it). An
// Ed25519 key must be a point on its curve, canonically encoded (one key,
// one spelling; crypto/ed25519 and edwards25519's SetBytes accept some),
// and not of small order (the identity and its seven siblings), for which a
// signature with R = that point and S = 0 verifies for any message: anyone
// could log in as the agent.
func parseAgentKey(s string) (crypto.PublicKey, error) {
	k, err := agentkey.ParsePublicKey(s)
	if err != nil {
		return nil, err
	}
	key, ok := k.(ed25519.PublicKey)
	if !ok {
		return k, nil // *ecdsa.PublicKey on P-256
	}
	p, err := new(edwards25519.Point).SetBytes(key)
	if err != nil {
		return nil, errors.New("public key is not a valid Ed25519 point")
	}
	if !canonicalEd25519(p, key) {
		return nil, errors.New("public key is a non-canonical Ed25519 point encoding (weak key refused)")
	}
	if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return nil, errors.New("public key is a small-order Ed25519 point (weak key refused: anyone could sign as this agent)")
	}
	return key, nil
}

// canonicalEd25519 reports whether key, which decodes to p, is p's one
// canonical encoding. SetBytes accepts the two other spellings: a y of p
// or more (y's field element re-encoded differs), and the sign bit set on
// an x of zero. This is p.Bytes() == key without p.Bytes()'s field
// inversion, which was a twentieth of a 10,000-agent start.
func canonicalEd25519(p *edwards25519.Point, key []byte) bool {
	var y field.Element
	if _, err := y.SetBytes(key); err != nil { // ignores the sign bit
		return false
	}
	yb := y.Bytes()
	if !bytes.Equal(yb[:31], key[:31]) || yb[31] != key[31]&0x7f {
		return false
	}
	x, _, _, _ := p.ExtendedCoordinates() // x/z: zero exactly when x is
	return key[31]&0x80 == 0 || x.Equal(new(field.Element)) == 0
}

func checkSecretRef(ref string) error {
	if strings.HasPrefix(ref, "sm://") {
		if !smRE.MatchString(ref) {
			return fmt.Errorf("%q is not sm://projects/P/secrets/S/versions/V", ref)
		}
		return nil
	}
	if strings.Contains(ref, "://") {
		return fmt.Errorf("%q: only sm:// references or local file paths are supported", ref)
	}
	return nil
}

// Name returns the account's name (its key in Accounts).
func (a *Account) Name() string { return a.name }

// Kind returns where the account's token comes from.
func (a *Account) Kind() Kind { return a.kind }

// Lifetime is the token lifetime requested for impersonated accounts.
func (a *Account) Lifetime() time.Duration { return a.lifetime }

// StorePath is "projects/P/locations/L/datasets/D/dicomStores/S".
func (a *Account) StorePath() string {
	return "projects/" + a.Project + "/locations/" + a.Location + "/datasets/" + a.Dataset + "/dicomStores/" + a.DicomStore
}

// DICOMwebURL is the store's DICOMweb root, ending in "/dicomWeb/".
func (a *Account) DICOMwebURL() string { return a.dicomWebURL }

// ScopeList returns the OAuth2 scopes to request.
func (a *Account) ScopeList() []string {
	if len(a.Scopes) > 0 {
		return slices.Clone(a.Scopes)
	}
	return []string{DefaultScope}
}

// Fingerprint identifies this exact account definition.
func (a *Account) Fingerprint() string { return a.fingerprint }

// CacheKey identifies the account by name and exact definition, for caches
// of what is minted for it (broker/tokencache): it changes whenever
// anything that shapes the token does, and two accounts never share one.
func (a *Account) CacheKey() string { return a.cacheKey }

// SecretRef returns the secret reference the account's credential is read
// from, or "" for inline and keyless accounts.
func (a *Account) SecretRef() string {
	if a.ServiceAccountSecret != "" {
		return a.ServiceAccountSecret
	}
	return a.AuthorizedUserSecret
}

// AudienceURL returns Audience normalised for comparison with a JWT aud.
func (p *Policy) AudienceURL() string { return assertion.NormalizeAudience(p.Audience) }

// AgentKeys returns the public keys of an enabled agent (each an
// ed25519.PublicKey or a P-256 *ecdsa.PublicKey); false for an unknown or
// disabled one.
func (p *Policy) AgentKeys(id string) ([]crypto.PublicKey, bool) {
	ag := p.Agent(id)
	if ag == nil || ag.Disabled || len(ag.keys) == 0 {
		return nil, false
	}
	return ag.keys, true
}

// SourceAllowed reports whether agent id may be served a request from
// addr: always for an agent without AllowedSourceRanges, otherwise only
// when addr is in one of them. addr is compared without a zone and with
// IPv4-mapped IPv6 unmapped (::ffff:203.0.113.7 is 203.0.113.7), so one
// client has one spelling. The zero Addr stands for a client address
// that could not be found: it is allowed only where any address is.
// Unknown agents are refused.
func (p *Policy) SourceAllowed(id string, addr netip.Addr) bool {
	ag := p.Agent(id)
	switch {
	case ag == nil:
		return false
	case ag.AllowedSourceRanges == nil:
		return true
	case !addr.IsValid():
		return false
	}
	addr = addr.WithZone("").Unmap()
	for _, r := range ag.ranges {
		if r.Contains(addr) {
			return true
		}
	}
	return false
}

// Grants returns the accounts agent id may use, in name order. A disabled or
// unknown agent has none.
func (p *Policy) Grants(id string) []*Account {
	ag := p.Agent(id)
	if ag == nil || ag.Disabled {
		return nil
	}
	out := make([]*Account, 0, len(ag.Accounts))
	for _, n := range ag.Accounts {
		out = append(out, p.Account(n))
	}
	slices.SortFunc(out, func(a, b *Account) int { return strings.Compare(a.name, b.name) })
	return out
}

// Allowed returns the account if agent id may use it.
func (p *Policy) Allowed(id, account string) (*Account, bool) {
	ag := p.Agent(id)
	if ag == nil || ag.Disabled || !slices.Contains(ag.Accounts, account) {
		return nil, false
	}
	return p.Account(account), true
}
