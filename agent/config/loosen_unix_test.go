//go:build !windows

package config

import (
	"os"
	"testing"
)

// loosen gives path the permissions of mode: group or others may read it.
func loosen(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
