//go:build !windows

package config

import (
	"fmt"
	"os"
)

// checkPasswordMode refuses an Orthanc.PasswordFile that is not a regular
// file or that has any permission bit for others.
func checkPasswordMode(path string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return fmt.Errorf("%s has mode %#o; it must not be readable or writable by others "+
			"(chmod o-rwx; group-readable 0640 with the agent's group is fine)", path, perm)
	}
	return nil
}
