package policy

import (
	"slices"
	"testing"
)

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
