package policy

import (
	"math/rand/v2"
	"regexp"
	"slices"
	"testing"
)

// The hand-checked rules say exactly what the regexps they replaced said:
// each is compared with its regexp on chosen edge cases and on many
// strings built from the rules' own alphabet and the bytes around it.
func TestRulesMatchTheirRegexps(t *testing.T) {
	segmentRE := regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,256}$`)
	smRE := regexp.MustCompile(`^sm://projects/[A-Za-z0-9_.:-]+/secrets/[A-Za-z0-9_-]+/versions/(latest|[1-9][0-9]*)$`)
	long := string(make([]byte, 0, 300))
	for range 256 {
		long += "a"
	}
	inputs := []string{
		"", "a", ".", "..", "a:b.c_d-e", "a/b", "a b", "é", "\xff", long, long + "a", "a\n",
		"sm://projects/p/secrets/s/versions/latest", "sm://projects/p/secrets/s/versions/1",
		"sm://projects/p/secrets/s/versions/10", "sm://projects/p/secrets/s/versions/0",
		"sm://projects/p/secrets/s/versions/01", "sm://projects/p/secrets/s/versions/",
		"sm://projects/p/secrets/s/versions/latest\n", "sm://projects//secrets/s/versions/1",
		"sm://projects/p/secrets//versions/1", "sm://projects/p.q:r/secrets/s_t-u/versions/7",
		"sm://projects/p/secrets/s.t/versions/1", "sm://projects/p/x/secrets/s/versions/1",
		"sm://projects/p/secrets/s/versions/1/versions/2", "sm://projects/p/secrets/s/x/versions/1",
		"sm://projects/p/secrets/s/versions/Latest", "sm://projects/p/secrets/s/versions/1a",
		"SM://projects/p/secrets/s/versions/1", "sm://projects/p/secrets/s/versions/١",
	}
	parts := []string{"sm://projects/", "/secrets/", "/versions/", "latest", "p", "0", "1", "9", "/", ":", ".", "-", "_", "a", "Z", " ", "é", "\x00", "\n", "secrets", "versions"}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		s := ""
		for range r.IntN(9) {
			s += parts[r.IntN(len(parts))]
		}
		inputs = append(inputs, s)
	}
	for _, s := range inputs {
		if got, want := validSegment(s), segmentRE.MatchString(s); got != want {
			t.Errorf("validSegment(%q) = %v, regexp says %v", s, got, want)
		}
		if got, want := validSMRef(s), smRE.MatchString(s); got != want {
			t.Errorf("validSMRef(%q) = %v, regexp says %v", s, got, want)
		}
	}
}

func TestListedTwice(t *testing.T) {
	long := make([]string, 40)
	for i := range long {
		long[i] = string(rune('a' + i%20)) // each of 20 names twice
	}
	for _, tc := range []struct {
		in, want []string
	}{
		{nil, nil},
		{[]string{"a"}, nil},
		{[]string{"a", "b", "a", "a", "c", "b"}, []string{"a", "a", "b"}},
		{long, long[20:]},
	} {
		if got := listedTwice(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("listedTwice(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
