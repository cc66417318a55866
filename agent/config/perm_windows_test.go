package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/winacl"
)

// TestPasswordFileACLWindows: Orthanc.PasswordFile is refused when its DACL
// lets anyone outside SYSTEM, Administrators, its owner, the agent's
// service SID and the account the agent runs as read it (CI only compiles
// this; the rule is tested everywhere in internal/agentkey).
func TestPasswordFileACLWindows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "orthanc.password")
	if err := os.WriteFile(path, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A file of the user's temporary directory: SYSTEM, Administrators
	// and the user, who owns it.
	if pw, err := readPassword(path); err != nil || pw != "secret" {
		t.Fatalf("readPassword = %q, %v", pw, err)
	}
	winacl.Set(t, path, "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FR;;;S-1-5-32-555)")
	_, err := readPassword(path)
	if err == nil || !strings.Contains(err.Error(), "S-1-5-32-555") || !strings.Contains(err.Error(), "icacls") {
		t.Fatalf("Remote Desktop Users may read the password file: got %v", err)
	}
}
