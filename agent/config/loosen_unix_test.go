//go:build !windows

package config

import (
	"os"
	"testing"
)

// loosen gives path the permissions of mode (group or others may read it)
// and reports that they were kept.
func loosen(t *testing.T, path string, mode os.FileMode) bool {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return true
}
