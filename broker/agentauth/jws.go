package agentauth

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"unicode/utf8"
)

// Decoding the compact JWS. golang-jwt's Parser spent more CPU decoding the
// token than anything in Verify but the signature (about 50 allocations: the
// header into a map[string]any, every claim through reflection and nested
// json.Unmarshal calls). The token is small and its shape fixed, so it is
// decoded here into one reused buffer, with the same outcome as the
// library's parser for every token (FuzzMatchesLibrary) except where this
// one is stricter: a duplicated member in the header, or a duplicated
// registered claim, is refused instead of the last one winning, and so is
// a claim named like a registered one but for letter case ("ISS", which
// encoding/json would have read as iss). The signature is checked by
// crypto/ed25519's rules in sigcheck.go.
//
// Order of checks, as before: both JSON parts decode (malformed), alg is
// EdDSA (wrong_algorithm), the signature decodes (malformed), the header
// has no crit and a typ of JWT if any (malformed), iss is set (bad_claims),
// the key is registered (unknown_agent), the signature verifies
// (bad_signature).

// segEncoding is base64url without padding, refusing non-zero trailing
// bits (the library's WithStrictDecoding).
var segEncoding = base64.RawURLEncoding.Strict()

var tokBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// verifySignature decodes tok (already compactShape) into c and checks its
// signature with the key dir registers for c.Issuer. It returns "" or a
// Reason; c holds what could be decoded either way.
func verifySignature(dir Directory, keys *keyCache, tok string, c *claims) string {
	dot1 := strings.IndexByte(tok, '.')
	dot2 := dot1 + 1 + strings.IndexByte(tok[dot1+1:], '.')

	// One buffer: the token's bytes (the signing input is its prefix),
	// then the decoded header, claims and signature.
	bp := tokBufPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 16<<10 {
			tokBufPool.Put(bp)
		}
	}()
	need := len(tok) * 2
	buf := *bp
	if cap(buf) < need {
		buf = make([]byte, 0, need)
		*bp = buf
	}
	buf = append(buf[:0], tok...)
	raw := buf[:len(tok)]
	out := buf[len(tok):cap(buf)]
	decode := func(seg []byte) ([]byte, bool) {
		n, err := segEncoding.Decode(out, seg)
		if err != nil {
			return nil, false
		}
		d := out[:n:n]
		out = out[n:]
		return d, true
	}

	hdrJSON, ok := decode(raw[:dot1])
	if !ok {
		return ReasonMalformed
	}
	var h header
	if h.parse(hdrJSON) != nil {
		return ReasonMalformed
	}
	claimsJSON, ok := decode(raw[dot1+1 : dot2])
	if !ok {
		return ReasonMalformed
	}
	if c.parse(claimsJSON) != nil {
		return ReasonMalformed
	}
	if h.alg != algEdDSA {
		// alg missing, unknown, or not EdDSA (none, HS*, RS*, ...).
		return ReasonWrongAlgorithm
	}
	sig, ok := decode(raw[dot2+1:])
	if !ok {
		return ReasonMalformed
	}
	if h.crit || (h.hasTyp && !strings.EqualFold(h.typ, "JWT")) {
		return ReasonMalformed
	}
	if c.Issuer == "" {
		return ReasonBadClaims
	}
	key, ok := dir.AgentKey(c.Issuer)
	if !ok || len(key) != ed25519.PublicKeySize {
		// Unknown, disabled or unusable: do the same signature work as for
		// a known agent, so response time does not tell which ids exist.
		dummyVerify(raw[:dot2], sig)
		return ReasonUnknownAgent
	}
	x := keys.expanded(key)
	if x == nil {
		// Not a curve point: crypto/ed25519 refuses every signature.
		dummyVerify(raw[:dot2], sig)
		return ReasonBadSignature
	}
	if !verifyExpanded(x, raw[:dot2], sig) {
		return ReasonBadSignature
	}
	return ""
}

const algEdDSA = "EdDSA"

// header is what Verify reads of the JOSE header.
type header struct {
	alg    string // "" unless a JSON string
	typ    string // "\x00" when not a JSON string
	hasTyp bool   // typ present (any JSON type)
	crit   bool   // crit present (any JSON type)
}

var errBadJSON = errors.New("bad JSON")

func (h *header) parse(b []byte) error {
	var seen [3]bool
	return members(b, func(key, val []byte) error {
		var i int
		switch {
		case keyIs(key, "alg"):
			i = 0
			if val[0] == '"' {
				s, err := jsonString(val)
				if err != nil {
					return err
				}
				h.alg = s
			}
		case keyIs(key, "typ"):
			i = 1
			h.hasTyp = true
			if val[0] != '"' {
				h.typ = "\x00" // never equal to JWT
				break
			}
			s, err := jsonString(val)
			if err != nil {
				return err
			}
			h.typ = s
		case keyIs(key, "crit"):
			i = 2
			h.crit = true
		default:
			return nil
		}
		if seen[i] {
			return errBadJSON
		}
		seen[i] = true
		return nil
	})
}

// claim member indexes, for refusing duplicates.
const (
	claimIss = iota
	claimSub
	claimAud
	claimExp
	claimNbf
	claimIat
	claimJti
	numClaims
)

var claimNames = [numClaims]string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti"}

// parse decodes the registered claims of the JSON object b the way
// encoding/json decodes them into jwt.RegisteredClaims: strings must be
// JSON strings (null leaves them empty), exp/iat/nbf and aud use the
// library's own decoders for anything but their plain forms, null times
// stay nil, other members are ignored.
func (c *claims) parse(b []byte) error {
	var seen [numClaims]bool
	return members(b, func(key, val []byte) error {
		i := claimIndex(key)
		switch i {
		case numClaims:
			return nil
		case -1:
			return errBadJSON
		}
		if seen[i] {
			return errBadJSON
		}
		seen[i] = true
		if val[0] == 'n' { // null: as encoding/json, leave the zero value
			return nil
		}
		var err error
		switch i {
		case claimIss:
			c.Issuer, err = claimString(val)
		case claimSub:
			c.Subject, err = claimString(val)
		case claimJti:
			c.ID, err = claimString(val)
		case claimAud:
			var a audience
			err = a.UnmarshalJSON(val)
			c.Audience = a
		case claimExp, claimNbf, claimIat:
			var d numericDate
			if err = d.UnmarshalJSON(val); err == nil {
				switch i {
				case claimExp:
					c.ExpiresAt, c.hasExp = d.Time, true
				case claimNbf:
					c.NotBefore, c.hasNbf = d.Time, true
				default:
					c.IssuedAt, c.hasIat = d.Time, true
				}
			}
		}
		return err
	})
}

// claimIndex returns the index of the registered claim the JSON string
// literal key names, numClaims for any other name, and -1 for a name that
// equals a registered one only case-insensitively ("ISS"): encoding/json
// would have read that as the claim, so the token is ambiguous.
func claimIndex(key []byte) int {
	for i, n := range claimNames {
		if keyIs(key, n) {
			return i
		}
	}
	inner := key[1 : len(key)-1]
	if len(inner) > 3*len(`\u0000`) { // longer than any spelling of a 3-letter name
		return numClaims
	}
	name, err := jsonString(key)
	if err != nil {
		return -1
	}
	for _, n := range claimNames {
		if strings.EqualFold(name, n) {
			return -1
		}
	}
	return numClaims
}

// claimString decodes a JSON string value; any other type is an error, as
// encoding/json's for a string field.
func claimString(val []byte) (string, error) {
	if val[0] != '"' {
		return "", errBadJSON
	}
	return jsonString(val)
}

// jsonString decodes the JSON string literal s.
func jsonString(s []byte) (string, error) {
	inner := s[1 : len(s)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), nil
	}
	var out string
	err := json.Unmarshal(s, &out)
	return out, err
}

// keyIs reports whether the JSON string literal key decodes to name.
func keyIs(key []byte, name string) bool {
	inner := key[1 : len(key)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == name
	}
	s, err := jsonString(key)
	return err == nil && s == name
}

// members calls fn with the raw key (a string literal with its quotes) and
// raw value of each member of the JSON object b, in order. null counts as
// an object without members, as encoding/json treats it for a struct or a
// map; any other non-object, or invalid JSON, is an error. Scanning relies
// on json.Valid having accepted b, and still never indexes out of range.
func members(b []byte, fn func(key, val []byte) error) error {
	if !json.Valid(b) {
		return errBadJSON
	}
	i := skipSpace(b, 0)
	if i < len(b) && b[i] == 'n' {
		return nil
	}
	if i >= len(b) || b[i] != '{' {
		return errBadJSON
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for i < len(b) {
		kEnd := valueEnd(b, i)
		if b[i] != '"' || kEnd < 0 {
			return errBadJSON
		}
		key := b[i:kEnd]
		i = skipSpace(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return errBadJSON
		}
		i = skipSpace(b, i+1)
		vEnd := valueEnd(b, i)
		if vEnd < 0 {
			return errBadJSON
		}
		if err := fn(key, b[i:vEnd]); err != nil {
			return err
		}
		i = skipSpace(b, vEnd)
		if i < len(b) && b[i] == '}' {
			return nil
		}
		if i >= len(b) || b[i] != ',' {
			return errBadJSON
		}
		i = skipSpace(b, i+1)
	}
	return errBadJSON
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd returns the index just after the JSON value starting at b[i],
// or -1.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		for j := i + 1; j < len(b); j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return j + 1
			}
		}
		return -1
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			case '"':
				e := valueEnd(b, j)
				if e < 0 {
					return -1
				}
				j = e - 1
			}
		}
		return -1
	}
	j := i
	for j < len(b) && !strings.ContainsRune(",}] \t\n\r", rune(b[j])) {
		j++
	}
	if j == i {
		return -1
	}
	return j
}
