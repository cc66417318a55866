// Package jsonenc appends JSON strings without reflection, for the
// broker's hot path (the token answer and the audit line). The bytes match
// a reference encoder exactly, so readers see no difference; which one is
// the Style.
package jsonenc

import "unicode/utf8"

// Style names the encoder whose output AppendString reproduces.
type Style int

const (
	// EncodingJSON is encoding/json.Marshal: <, > and & escaped as \u003c,
	// \u003e, \u0026, and \b, \f written as such.
	EncodingJSON Style = iota
	// Slog is log/slog's JSON handler: no HTML escaping; \b and \f as \u00XX.
	Slog
)

const hexDigits = "0123456789abcdef"

// AppendString appends s to b as a quoted JSON string in the given style:
// quotes, backslashes and control characters escaped, invalid UTF-8 as
// \ufffd, U+2028 and U+2029 escaped.
func AppendString(b []byte, s string, style Style) []byte {
	html := style == EncodingJSON
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && (!html || c != '<' && c != '>' && c != '&') {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case html && c == '\b':
				b = append(b, '\\', 'b')
			case html && c == '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
