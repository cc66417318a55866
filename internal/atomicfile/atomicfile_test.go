package atomicfile

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestWriteJSON(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for _, tc := range []struct {
		v    any
		want string
	}{
		{map[string]int{"a": 1}, "{\n  \"a\": 1\n}\n"},
		{[]string{"x"}, "[\n  \"x\"\n]\n"}, // replaces the first
	} {
		if err := WriteJSON(path, tc.v, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tc.want {
			t.Errorf("content %q, want %q", got, tc.want)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// On Windows a file has no mode bits: Go maps perm's owner-write bit to
	// the read-only attribute only, and who may read the file is the
	// directory's inherited access list (docs/agent.md has the agent's
	// data folder made private). There, 0600 is a writable file (0666).
	want := os.FileMode(0o600)
	if runtime.GOOS == "windows" {
		want = 0o666
	}
	if fi.Mode().Perm() != want {
		t.Errorf("mode %v, want %v", fi.Mode().Perm(), want)
	}
	left, _ := os.ReadDir(dir)
	if len(left) != 1 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestWriteFailsAndKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := Write(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(path, func() {}, 0o644); err == nil {
		t.Fatal("WriteJSON of a func succeeded")
	}
	if err := Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o644); err == nil {
		t.Fatal("Write into a missing directory succeeded")
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Errorf("old content changed to %q", got)
	}
}

// TestWriteReadOnly: perm without the owner-write bit gives a read-only
// file, on Windows the read-only attribute. A later Write replaces it on
// Unix (the rename replaces the name); on Windows MoveFileEx refuses to
// replace a read-only file ("Access denied"), and the old content stays.
// (The agent writes only 0600 files with Write.)
func TestWriteReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro")
	for i, data := range []string{"one", "two"} {
		err := Write(path, []byte(data), 0o400)
		if i == 1 && runtime.GOOS == "windows" {
			if err == nil {
				t.Error("Windows replaced a read-only file")
			}
			if got, _ := os.ReadFile(path); string(got) != "one" {
				t.Errorf("content %q, want the old one", got)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != data {
			t.Errorf("content %q, want %q", got, data)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o200 != 0 {
			t.Errorf("mode %v: writable, want read-only", fi.Mode().Perm())
		}
	}
}

// TestSyncDir: flushing a directory works wherever the agent runs (on
// Windows it is a no-op: see syncdir_windows.go).
func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Fatal(err)
	}
}
