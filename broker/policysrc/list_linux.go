package policysrc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

func listDir(dir string) ([]Object, error) {
	objs, _, err := listDirLinks(dir, nil)
	return objs, err
}

// listDirLinks reads the entries unsorted and stats each *.json one
// relative to the open directory (fstatat, following symbolic links): no
// path joined and resolved per file, no FileInfo allocated. At 40,000
// fragments the stats are most of a listing's cost. outside reports a
// fragment that is a link not through one of the directory's dot entries
// (see insideDotEntry). stats, when not nil, counts the stats made.
func listDirLinks(dir string, stats *atomic.Int64) (objs []Object, outside bool, err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, false, fmt.Errorf("policy: cannot list directory %s: %s", dir, pathReason(err))
	}
	defer f.Close()
	entries, err := f.ReadDir(-1) // types from getdents: no stat
	if err != nil {
		return nil, false, fmt.Errorf("policy: cannot list directory %s: %s", dir, pathReason(err))
	}
	fd := int(f.Fd())
	prefix := filepath.Clean(dir) + string(filepath.Separator)
	out := make([]Object, 0, len(entries))
	var st unix.Stat_t
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		if e.Type()&fs.ModeSymlink != 0 {
			if target, err := readlinkAt(fd, name); err == nil && !insideDotEntry(target) {
				outside = true
			}
		}
		if stats != nil {
			stats.Add(1)
		}
		if err := unix.Fstatat(fd, name, &st, 0); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // removed since the directory was read, or a dangling link
			}
			return nil, false, fmt.Errorf("policy: cannot stat fragment %s: %s", prefix+name, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue // a subdirectory, a device, a socket
		}
		out = append(out, Object{Name: prefix + name, Size: st.Size,
			Version: Version{Size: st.Size, ModTime: st.Mtim.Nano()}})
	}
	return out, outside, nil
}

func readlinkAt(fd int, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(fd, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}
