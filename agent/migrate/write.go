package migrate

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/atomicfile"
)

type outFile struct {
	name string
	data []byte
	perm os.FileMode
}

// prepareOutDir checks, before anything is read or written, that dir can
// be created: it does not exist (its parent does) or is an empty directory.
func prepareOutDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", &Error{Field: "--out", Msg: err.Error()}
	}
	fi, err := os.Lstat(abs)
	switch {
	case err == nil && !fi.IsDir():
		return "", &Error{Field: "--out", Msg: abs + " exists and is not a directory"}
	case err == nil:
		f, err := os.Open(abs)
		if err != nil {
			return "", &Error{Field: "--out", Msg: err.Error()}
		}
		_, err = f.Readdirnames(1)
		f.Close()
		if err != io.EOF {
			return "", &Error{Field: "--out", Msg: abs + " exists and is not empty; give a new directory (nothing is ever overwritten)"}
		}
	case errors.Is(err, os.ErrNotExist):
		pfi, err := os.Stat(filepath.Dir(abs))
		if err != nil || !pfi.IsDir() {
			return "", &Error{Field: "--out", Msg: "the parent directory " + filepath.Dir(abs) + " does not exist"}
		}
	default:
		return "", &Error{Field: "--out", Msg: err.Error()}
	}
	return abs, nil
}

// writeDir writes files into a new temporary directory next to dir, then
// renames it to dir: dir appears complete or not at all. The rename fails
// rather than replace a directory that became non-empty in the meantime.
func writeDir(dir string, files []outFile) (err error) {
	tmp, err := mkdirTempPrivate(filepath.Dir(dir), "."+filepath.Base(dir)+".migrate-")
	if err != nil {
		return &Error{Field: "--out", Msg: err.Error()}
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	for _, f := range files {
		if err := writeNew(filepath.Join(tmp, f.name), f.data, f.perm); err != nil {
			return &Error{Field: "--out", Msg: err.Error()}
		}
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return &Error{Field: "--out", Msg: err.Error()}
	}
	// os.Rename never replaces a directory, not even an empty one: remove
	// an empty one first (os.Remove refuses a directory that is not empty,
	// so files someone put there in the meantime stay, and Rename then fails).
	if fi, err := os.Lstat(dir); err == nil && fi.IsDir() {
		if err := os.Remove(dir); err != nil {
			return &Error{Field: "--out", Msg: fmt.Sprintf("cannot replace the empty directory %s: %v", dir, err)}
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return &Error{Field: "--out", Msg: fmt.Sprintf("cannot create %s (it must not exist, or be empty): %v", dir, err)}
	}
	_ = atomicfile.SyncDir(filepath.Dir(dir))
	return nil
}

// mkdirTempPrivate is os.MkdirTemp(parent, prefix+"*") made private from
// the start (agentkey.MkdirPrivate: mode 0700; on Windows a protected DACL
// for SYSTEM, Administrators and the user, which the files created in it
// inherit).
func mkdirTempPrivate(parent, prefix string) (string, error) {
	for range 100 {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		dir := filepath.Join(parent, prefix+hex.EncodeToString(b[:]))
		err := agentkey.MkdirPrivate(dir)
		if err == nil {
			return dir, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("cannot make a temporary directory in %s: every name tried exists", parent)
}

func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm) // the umask may have narrowed it; never widen beyond perm
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
