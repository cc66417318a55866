package migrate

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/winacl"
)

// checkModes, on Windows, where modes mean nothing: the directory and each
// file pass the agent's own private-file check (only SYSTEM,
// Administrators, the owner and the agent may read or change them), and
// nothing else is in the directory.
func checkModes(t *testing.T, dir string) {
	t.Helper()
	if err := agentkey.CheckFileACL(dir, agentkey.ReadAccess|agentkey.WriteAccess); err != nil {
		t.Errorf("the output directory: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{TfvarsFile: true, LoadSecretsFile: true, AgentConfigFile: true}
	if len(entries) != len(want) {
		t.Errorf("%s holds %d entries, want %d", dir, len(entries), len(want))
	}
	for _, e := range entries {
		if !want[e.Name()] || !e.Type().IsRegular() {
			t.Errorf("%s: unexpected entry (%v)", e.Name(), e.Type())
			continue
		}
		if err := agentkey.CheckFileACL(filepath.Join(dir, e.Name()), agentkey.ReadAccess|agentkey.WriteAccess); err != nil {
			t.Errorf("%s: %v", e.Name(), err)
		}
	}
}

// TestOutDirPrivateWindows: in a folder whose access list lets Everyone
// read what is created in it, the migration directory and its files are
// still private: the directory's protected DACL replaces what it would
// have inherited (mode 0700's counterpart).
func TestOutDirPrivateWindows(t *testing.T) {
	parent := t.TempDir()
	winacl.Set(t, parent, "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;OW)(A;OICI;FR;;;WD)")
	// On Windows the folder's inheritable entry reaches a plain new folder:
	// what the migration directory must not get. Wine gives a new folder
	// its mode from the umask instead, but adds the parent's inheritable
	// entries when a DACL is set on an existing folder (SetNamedSecurityInfo,
	// even a protected one), which the migration must not do either.
	probe := filepath.Join(parent, "probe")
	if err := os.Mkdir(probe, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := agentkey.CheckFileACL(probe, agentkey.ReadAccess); err == nil {
		t.Log("a new folder did not inherit Everyone's entry here (wine)")
	}
	cfg := bookConfig(t, "service-account", map[string]string{"dicom-osimis.json": saKeyJSON("orthanc@osimis-test.iam.gserviceaccount.com")})
	if err := Run(Options{OrthancConfig: cfg, OutDir: filepath.Join(parent, "migration")}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	checkModes(t, filepath.Join(parent, "migration"))
}
