// Package logtext bounds text before it reaches a log line or an error
// message: text from the network or from a parser can be long or hold
// control characters that forge log lines.
package logtext

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Truncate returns at most n bytes of s, cut on a rune boundary, with "…"
// appended when something was cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Clip replaces control characters with spaces and truncates to 200 bytes.
func Clip(s string) string {
	return Truncate(strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s), 200)
}

// Printable returns s for a terminal: each C0 control (U+0000–U+001F), DEL
// (U+007F) and C1 control (U+0080–U+009F, U+009B being a one-rune CSI), and
// each byte that is not valid UTF-8, is written as a visible escape — \t,
// \n, \r, else \xHH (C0, DEL, invalid bytes) or \u00HH (C1) — so text from
// Orthanc, the broker or a configuration cannot move the cursor, clear the
// screen, retitle the window or fake a line of output. Everything else,
// letters of any script and backslashes (Windows paths) included, is kept
// as it is, and s is returned unchanged when nothing needs escaping.
func Printable(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return r == utf8.RuneError || isControl(r) })
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for s = s[i:]; s != ""; {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x80 && isControl(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case isControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

// isControl: C0, DEL and C1.
func isControl(r rune) bool { return r < 0x20 || r >= 0x7f && r <= 0x9f }
