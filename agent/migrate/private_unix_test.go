//go:build !windows

package migrate

import (
	"os"
	"testing"
)

// checkModes: the directory is 0700, load-secrets.sh 0700, the rest 0600,
// and nothing else is in it.
func checkModes(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("%s has mode %v, want 0700", dir, fi.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{TfvarsFile: 0o600, LoadSecretsFile: 0o700, AgentConfigFile: 0o600}
	if len(entries) != len(want) {
		t.Errorf("%s holds %d entries, want %d", dir, len(entries), len(want))
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if perm, ok := want[e.Name()]; !ok || info.Mode().Perm() != perm || !info.Mode().IsRegular() {
			t.Errorf("%s: mode %v (want %v, known %v)", e.Name(), info.Mode(), perm, ok)
		}
	}
}
