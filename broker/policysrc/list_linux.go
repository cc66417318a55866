package policysrc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// listDir reads the names unsorted and stats each relative to the open
// directory (fstatat, following symbolic links): no path joined and
// resolved per file, no FileInfo allocated. At 40,000 fragments the stats
// are most of a listing's cost.
func listDir(dir string) ([]Object, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("policy: cannot list directory %s: %s", dir, pathReason(err))
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("policy: cannot list directory %s: %s", dir, pathReason(err))
	}
	fd := int(f.Fd())
	prefix := filepath.Clean(dir) + string(filepath.Separator)
	out := make([]Object, 0, len(names))
	var st unix.Stat_t
	for _, name := range names {
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		if err := unix.Fstatat(fd, name, &st, 0); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // removed since the directory was read, or a dangling link
			}
			return nil, fmt.Errorf("policy: cannot stat fragment %s: %s", prefix+name, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue // a subdirectory, a device, a socket
		}
		out = append(out, Object{Name: prefix + name, Size: st.Size,
			Version: Version{Size: st.Size, ModTime: st.Mtim.Nano()}})
	}
	return out, nil
}
