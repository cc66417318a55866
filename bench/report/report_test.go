package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "B.md")
	steps := []struct {
		name, body string
		want       []string
		notWant    []string
	}{
		{"a", "first A", []string{"# Benchmarks", "first A"}, nil},
		{"b", "first B", []string{"first A", "first B"}, nil},
		{"a", "second A", []string{"second A", "first B"}, []string{"first A"}},
	}
	for _, s := range steps {
		if err := WriteSection(path, s.name, s.body); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(path)
		for _, w := range s.want {
			if !strings.Contains(string(data), w) {
				t.Errorf("after %s=%q: missing %q in\n%s", s.name, s.body, w, data)
			}
		}
		for _, w := range s.notWant {
			if strings.Contains(string(data), w) {
				t.Errorf("after %s=%q: still has %q", s.name, s.body, w)
			}
		}
	}
	data, _ := os.ReadFile(path)
	if n := strings.Count(string(data), "<!-- bench:a:start -->"); n != 1 {
		t.Errorf("section a appears %d times", n)
	}
}
