//go:build !windows

package atomicfile

import "os"

// SyncDir flushes dir's entries (a rename or a new file in it) to disk:
// fsync on the directory itself.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
