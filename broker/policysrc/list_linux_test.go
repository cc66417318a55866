package policysrc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadEach: a directory's files read together (the directory opened
// once, each file relative to it) give what reading each by its path
// gives, including every refusal, and a name not directly in the
// directory is read by its path.
func TestReadEach(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir()
	write := func(path, data string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "a.json"), `{"a":1}`)
	write(filepath.Join(dir, "grown.json"), `{"grown":"longer than listed"}`)
	write(filepath.Join(other, "elsewhere.json"), `{"elsewhere":1}`)
	if err := os.Mkdir(filepath.Join(dir, "..v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(dir, "..v1", "linked.json"), `{"linked":1}`)
	if err := os.Symlink("..v1/linked.json", filepath.Join(dir, "linked.json")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		path    string
		size    int64
		want    string // content, or the error's text
		wantErr bool
	}{
		{"a file", filepath.Join(dir, "a.json"), 7, `{"a":1}`, false},
		{"listed smaller than it is now", filepath.Join(dir, "grown.json"), 5, `{"grown":"longer than listed"}`, false},
		{"a link into a dot entry", filepath.Join(dir, "linked.json"), 12, `{"linked":1}`, false},
		{"gone since listed", filepath.Join(dir, "gone.json"), 3, "no such file or directory", true},
		{"a FIFO in a fragment's place", filepath.Join(dir, "fifo.json"), 0, "", false},
		{"not in the directory: read by its path", filepath.Join(other, "elsewhere.json"), 15, `{"elsewhere":1}`, false},
		{"in a subdirectory: read by its path", filepath.Join(dir, "..v1", "linked.json"), 12, `{"linked":1}`, false},
	}
	var objs []Object
	for _, c := range cases {
		objs = append(objs, Object{Name: c.path, Size: c.size})
	}
	got := make([]int, len(cases))
	Dir(dir).ReadEach(context.Background(), objs, func(i int, data []byte, err error) {
		got[i]++
		c := cases[i]
		one, oneErr := Dir(dir).Read(context.Background(), objs[i])
		switch {
		case c.wantErr:
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: error %v, want one saying %q", c.name, err, c.want)
			}
			if oneErr == nil || oneErr.Error() != err.Error() {
				t.Errorf("%s: ReadEach says %v, Read says %v", c.name, err, oneErr)
			}
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		case string(data) != c.want || string(one) != c.want || oneErr != nil:
			t.Errorf("%s: ReadEach %q, Read %q (%v), want %q", c.name, data, one, oneErr, c.want)
		}
	})
	for i, n := range got {
		if n != 1 {
			t.Errorf("%s: called %d times", cases[i].name, n)
		}
	}

	// A directory gone since it was listed: every read says so.
	gone := filepath.Join(t.TempDir(), "removed")
	Dir(gone).ReadEach(context.Background(), []Object{{Name: filepath.Join(gone, "a.json"), Size: 1}}, func(_ int, _ []byte, err error) {
		if err == nil || !strings.Contains(err.Error(), "no such file") {
			t.Errorf("a removed directory: %v", err)
		}
	})
}
