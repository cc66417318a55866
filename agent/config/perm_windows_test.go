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
// service SID and the account the agent runs as read it (the rule is
// tested everywhere in internal/agentkey).
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
	// Everyone's entry is kept by Windows and by wine; Remote Desktop
	// Users' only by Windows.
	for _, sid := range []string{"S-1-1-0", "S-1-5-32-555"} {
		t.Run(sid, func(t *testing.T) {
			if !winacl.SetKept(t, path, "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FR;;;"+sid+")", sid) {
				t.Skip(winacl.Dropped)
			}
			_, err := readPassword(path)
			if err == nil || !strings.Contains(err.Error(), sid) || !strings.Contains(err.Error(), "icacls") {
				t.Fatalf("%s may read the password file: got %v", sid, err)
			}
		})
	}
}
