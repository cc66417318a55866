package policysrc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
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

// readFiles reads the listed fragments of dir, calling each with every
// one's content or error, in order. The directory is opened once and each
// file relative to it: opening by the whole path walked every component
// of it again for each of 40,000 fragments.
func readFiles(dir string, objs []Object, each func(i int, data []byte, err error)) {
	prefix := filepath.Clean(dir) + string(filepath.Separator)
	dirfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		dirfd = -1 // each read by its path then reports why
	} else {
		defer unix.Close(dirfd)
	}
	for i, o := range objs {
		name, ok := strings.CutPrefix(o.Name, prefix)
		if dirfd < 0 || !ok || strings.ContainsRune(name, filepath.Separator) {
			data, err := readFile(o.Name, o.Size)
			each(i, data, err)
			continue
		}
		data, err := readFileAt(dirfd, name, o.Size)
		each(i, data, err)
	}
}

func readFile(path string, size int64) ([]byte, error) {
	return readFileAt(unix.AT_FDCWD, path, size)
}

// readFileAt reads one fragment, name relative to dirfd, with plain
// system calls, into a buffer of the size the listing saw. os.Open would
// also make the descriptor non-blocking and offer it to the poller, calls
// that do nothing for a regular file but were a third of the reading at
// 40,000 fragments. O_NONBLOCK makes a FIFO put in a fragment's place an
// error, not a hang.
func readFileAt(dirfd int, name string, size int64) ([]byte, error) {
	const flags = unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK
	fd, err := unix.Openat(dirfd, name, flags, 0)
	for err == unix.EINTR {
		fd, err = unix.Openat(dirfd, name, flags, 0)
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, min(max(size, 0), policy.MaxDocumentSize)+1)
	for {
		if len(buf) == cap(buf) { // grown since it was listed
			if len(buf) > policy.MaxDocumentSize {
				return nil, fmt.Errorf("fragment is larger than %d bytes", policy.MaxDocumentSize)
			}
			buf = slices.Grow(buf, min(len(buf), policy.MaxDocumentSize+1-len(buf)))
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, fmt.Errorf("cannot read: %s", err)
		case n == 0:
			return buf, nil
		}
		buf = buf[:len(buf)+n]
		if int64(len(buf)) == size && len(buf) < cap(buf) {
			// Asked for one byte more than listed and got exactly the
			// listed size: that is the file as listed, and the read
			// that would return 0 is one system call per fragment.
			return buf, nil
		}
	}
}
