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

func TestPrintable(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"plain", "store-a ok", "store-a ok"},
		{"empty", "", ""},
		{"letters of any script kept", "é 日本 Ωmega", "é 日本 Ωmega"},
		{"backslash kept (Windows path)", `C:\Orthanc\sa.json`, `C:\Orthanc\sa.json`},
		{"ESC [ 2 J clears the screen", "a\x1b[2Jb", `a\x1b[2Jb`},
		{"OSC retitles the window", "\x1b]0;pwned\x07", `\x1b]0;pwned\x07`},
		{"U+009B is a one-rune CSI", "a\u009b2Jb", `a\u009b2Jb`},
		{"C1 bounds", "\u0080\u009f\u00a0", `\u0080\u009f` + "\u00a0"},
		{"DEL", "a\x7fb", `a\x7fb`},
		{"NUL", "a\x00b", `a\x00b`},
		{"newline in a store name fakes a line", "store\nagent x: healthy", `store\nagent x: healthy`},
		{"tab and carriage return", "a\tb\rc", `a\tb\rc`},
		{"invalid UTF-8 byte", "a\xffb", `a\xffb`},
		{"lone 8-bit CSI byte", "a\x9b2J", `a\x9b2J`},
		{"truncated rune", "日\xe6\x97", `日\xe6\x97`},
		{"U+FFFD itself kept", "a\uFFFDb", "a\uFFFDb"},
	} {
		if got := Printable(tc.in); got != tc.want {
			t.Errorf("%s: Printable(%q) = %q, want %q", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestPrintableUnchangedNoAlloc(t *testing.T) {
	s := "store-a: é 日本"
	if n := testing.AllocsPerRun(100, func() { _ = Printable(s) }); n != 0 {
		t.Errorf("Printable of clean text allocates %v times", n)
	}
}
