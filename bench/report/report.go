// Package report writes benchmark figures into a named section of
// BENCHMARKS.md, so each load generator owns its section and re-running one
// does not disturb the others' figures.
package report

import (
	"bytes"
	"fmt"
	"os"
)

// WriteSection replaces (or appends) the section named name in the
// markdown file at path with body.
func WriteSection(path, name, body string) error {
	start := []byte(fmt.Sprintf("<!-- bench:%s:start -->", name))
	end := []byte(fmt.Sprintf("<!-- bench:%s:end -->", name))
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	block := append(append(append(append(append([]byte{}, start...), '\n'), body...), '\n'), end...)
	i, j := bytes.Index(old, start), bytes.Index(old, end)
	var out []byte
	if i >= 0 && j > i {
		out = append(append(append([]byte{}, old[:i]...), block...), old[j+len(end):]...)
	} else {
		if len(old) == 0 {
			old = []byte("# Benchmarks\n\nFigures measured on the project's 2-core machine; each section says the command that produced it.\nCompare figures as ratios within one run: the machine is small and shared.\n")
		}
		out = append(append(bytes.TrimRight(old, "\n"), '\n', '\n'), block...)
		out = append(out, '\n')
	}
	return os.WriteFile(path, out, 0o644)
}
