package agentauth

import (
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// The jwt library decodes every NumericDate and ClaimStrings with a nested
// json.Unmarshal (an interface{} for aud). numericDate and audience decode
// the forms assertions use, a plain integer and a string or one-string list
// without escapes, directly, and hand every other form to the library's own
// decoder, so what is accepted and what it means is unchanged
// (FuzzMatchesLibrary).

// numericDate is jwt.NumericDate with a fast path for integers.
type numericDate struct{ time.Time }

// maxFastDigits keeps the fast path exact: up to 15 digits is below 2^53,
// where the library's float64 arithmetic is exact too.
const maxFastDigits = 15

func (d *numericDate) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && len(b) <= maxFastDigits {
		var n int64
		ok := true
		for _, c := range b {
			if c < '0' || c > '9' {
				ok = false
				break
			}
			n = n*10 + int64(c-'0')
		}
		if ok {
			d.Time = time.Unix(n, 0).Truncate(jwt.TimePrecision)
			return nil
		}
	}
	var lib jwt.NumericDate
	if err := lib.UnmarshalJSON(b); err != nil {
		return err
	}
	d.Time = lib.Time
	return nil
}

// audience is jwt.ClaimStrings with a fast path for "x" and ["x"].
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	s := b
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' && plainString(s[1:len(s)-1]) {
		*a = audience{string(s[1 : len(s)-1])}
		return nil
	}
	var lib jwt.ClaimStrings
	if err := lib.UnmarshalJSON(b); err != nil {
		return err
	}
	*a = audience(lib)
	return nil
}

// plainString reports whether s, the inside of a JSON string literal,
// decodes to itself: printable ASCII with no quote or backslash.
func plainString(s []byte) bool {
	for _, c := range s {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
