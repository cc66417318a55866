package function

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestMakeFuzzRunsEveryTarget keeps `make fuzz` honest: every func Fuzz…
// in the module's test files is in the Makefile's FUZZ_TARGETS, and every
// listed target exists.
func TestMakeFuzzRunsEveryTarget(t *testing.T) {
	mk, err := os.ReadFile("Makefile")
	if err != nil {
		t.Fatal(err)
	}
	listed := makeList(t, string(mk), "FUZZ_TARGETS")

	fuzzFunc := regexp.MustCompile(`(?m)^func (Fuzz\w*)\(\w+ \*testing\.F\)`)
	var found []string
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			// Other modules (tools/…, packaging/composecheck) and data are
			// not part of this one.
			if path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || fileExists(filepath.Join(path, "go.mod"))) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range fuzzFunc.FindAllStringSubmatch(string(src), -1) {
			found = append(found, "./"+filepath.ToSlash(filepath.Dir(path))+":"+m[1])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) < 5 {
		t.Fatalf("found only %d fuzz targets; the walk is broken", len(found))
	}
	for _, f := range found {
		if !slices.Contains(listed, f) {
			t.Errorf("%s is not in the Makefile's FUZZ_TARGETS: make fuzz would not run it", f)
		}
	}
	for _, l := range listed {
		if !slices.Contains(found, l) {
			t.Errorf("FUZZ_TARGETS lists %s, which does not exist", l)
		}
	}
}

// makeList returns the words of a Makefile variable written as
// "NAME = \" followed by one word per continued line.
func makeList(t *testing.T, mk, name string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(mk, "\n"+name+" = \\\n")
	if !ok {
		t.Fatalf("no %s in the Makefile", name)
	}
	var words []string
	for _, line := range strings.Split(rest, "\n") {
		w, more := strings.CutSuffix(strings.TrimSpace(line), "\\")
		words = append(words, strings.TrimSpace(w))
		if !more {
			break
		}
	}
	return words
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
