//go:build !windows

package agentkey

import (
	"fmt"
	"io/fs"
	"os"
)

// createPrivate creates path for writing with mode 0600, failing if
// anything (a dangling symlink included) already has the name.
func createPrivate(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

// checkPrivate refuses a key file that group or others can access.
func checkPrivate(path string, fi fs.FileInfo) error {
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s has mode %#o; it must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	return nil
}

// MkdirPrivate creates the directory path with mode 0700 (whatever the
// umask), failing if anything already has the name.
func MkdirPrivate(path string) error {
	if err := os.Mkdir(path, 0o700); err != nil {
		return err
	}
	return os.Chmod(path, 0o700)
}
