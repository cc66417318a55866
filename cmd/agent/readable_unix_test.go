//go:build !windows

package main

import (
	"os"
	"testing"
)

// makeWorldReadable lets others read path: mode 0644.
func makeWorldReadable(t *testing.T, path string) {
	t.Helper()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
}
