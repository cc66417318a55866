package logtext

import (
	"strings"
	"testing"
)

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"abcdefghijk", 5, "abcde…"},
		{"aé", 2, "a…"}, // é is two bytes: never cut inside it
		{"", 3, ""},
	} {
		if got := Truncate(tc.in, tc.n); got != tc.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

func TestClip(t *testing.T) {
	if got := Clip("a\nb\x7fc\td"); got != "a b c d" {
		t.Errorf("Clip control chars = %q", got)
	}
	long := Clip(strings.Repeat("x", 500))
	if len(long) != 200+len("…") {
		t.Errorf("Clip length = %d", len(long))
	}
}
