//go:build !windows

package agentkey

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The mode-bit tests (Unix only; on Windows the DACL check replaces them,
// see acl_test.go).

func TestWriteNewAndReadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.key")

	// Mode 0600 must not depend on a restrictive umask.
	old := syscall.Umask(0)
	pub, err := WriteNew(path)
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %#o, want 0600", fi.Mode().Perm())
	}
	priv, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !priv.Public().(ed25519.PublicKey).Equal(pub) {
		t.Fatal("WriteNew returned a public key that does not match the file")
	}

	// Never overwrite: the second call fails and the file is unchanged.
	before, _ := os.ReadFile(path)
	if _, err := WriteNew(path); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second WriteNew: %v, want refusal", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("WriteNew changed an existing key file")
	}
	// Not through a symlink either (O_EXCL does not follow it).
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(filepath.Join(dir, "target-does-not-exist"), link); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteNew(link); err == nil {
		t.Fatal("WriteNew followed a dangling symlink")
	}
	if _, err := os.Stat(filepath.Join(dir, "target-does-not-exist")); !os.IsNotExist(err) {
		t.Fatal("WriteNew created the symlink target")
	}
}

func TestReadFileRefusesLooseModes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.key")
	if _, err := WriteNew(path); err != nil {
		t.Fatal(err)
	}
	pemText, _ := os.ReadFile(path)
	tests := []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o644, false},
		{0o640, false},
		{0o604, false},
		{0o660, false},
		{0o700, true},
		{0o610, false},
	}
	for _, tc := range tests {
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		_, err := ReadFile(path)
		if tc.ok != (err == nil) {
			t.Fatalf("mode %#o: err %v, want ok=%v", tc.mode, err, tc.ok)
		}
		if err != nil && strings.Contains(err.Error(), strings.Split(string(pemText), "\n")[1]) {
			t.Fatalf("mode %#o: error echoes the key", tc.mode)
		}
	}
	if _, err := ReadFile(filepath.Join(dir, "missing.key")); err == nil {
		t.Fatal("missing file accepted")
	}
}
