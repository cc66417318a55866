// Package logtext bounds text before it reaches a log line or an error
// message: text from the network or from a parser can be long or hold
// control characters that forge log lines.
package logtext

import (
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
