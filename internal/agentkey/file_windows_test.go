package agentkey

import (
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/windows"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/winacl"
)

// The Windows glue around CheckDACL, on real files. CI only compiles
// these (GOOS=windows go test -c); the rule itself is tested everywhere
// in acl_test.go.

// TestServiceSIDMatchesWindows: ServiceSID computes what Windows resolves
// "NT SERVICE\name" to.
func TestServiceSIDMatchesWindows(t *testing.T) {
	sid, _, _, err := windows.LookupSID("", `NT SERVICE\TrustedInstaller`)
	if err != nil {
		t.Skipf("looking up NT SERVICE\\TrustedInstaller: %v", err)
	}
	if got := ServiceSID("TrustedInstaller"); got != sid.String() {
		t.Errorf("ServiceSID = %s, Windows says %s", got, sid)
	}
}

// TestFileACLWindows: a key WriteNew made is owned by the user and
// accepted; an entry for anyone outside the allow-list is refused with
// its SID and the icacls command; the agent's service SID is accepted.
func TestFileACLWindows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.key")
	if _, err := WriteNew(path); err != nil {
		t.Fatal(err)
	}
	user, err := currentUserSID()
	if err != nil {
		t.Fatal(err)
	}
	owner, _, _, err := fileSecurity(path)
	if err != nil {
		t.Fatal(err)
	}
	if owner != user {
		t.Errorf("the new key is owned by %s, want the user %s", owner, user)
	}
	if _, err := ReadFile(path); err != nil {
		t.Fatalf("the new key is refused: %v", err)
	}
	base := "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;" + user + ")"
	for _, sid := range []string{"S-1-5-32-555", "S-1-5-15", "S-1-5-113", "S-1-5-6", "S-1-5-32-547", "S-1-1-0"} {
		winacl.Set(t, path, base+"(A;;FR;;;"+sid+")")
		_, err := ReadFile(path)
		if err == nil || !strings.Contains(err.Error(), sid) || !strings.Contains(err.Error(), "icacls") {
			t.Errorf("%s may read: got %v, want a refusal naming it and icacls", sid, err)
		}
	}
	winacl.Set(t, path, base+"(A;;FR;;;"+ServiceSID(ServiceName)+")")
	if _, err := ReadFile(path); err != nil {
		t.Errorf("the agent's service SID is refused: %v", err)
	}
}
