package agentkey

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/winacl"
)

// The Windows glue around CheckDACL. make windows-test runs these under
// wine; the rule itself is tested everywhere in acl_test.go.

// TestServiceSIDMatchesWindows: ServiceSID computes what Windows resolves
// "NT SERVICE\name" to.
func TestServiceSIDMatchesWindows(t *testing.T) {
	sid, _, _, err := windows.LookupSID("", `NT SERVICE\TrustedInstaller`)
	if err != nil {
		// wine has no service accounts to look up
		t.Skipf("this system does not resolve NT SERVICE\\TrustedInstaller: %v", err)
	}
	if got := ServiceSID("TrustedInstaller"); got != sid.String() {
		t.Errorf("ServiceSID = %s, Windows says %s", got, sid)
	}
}

// outsiders are trustees outside the allow-list: Remote Desktop Users,
// This Organization, Local account, SERVICE, Account Operators, Everyone.
var outsiders = []string{"S-1-5-32-555", "S-1-5-15", "S-1-5-113", "S-1-5-6", "S-1-5-32-547", "S-1-1-0"}

// TestDescriptorACLWindows: the owner and entries Windows' own SDDL parser
// puts into a security descriptor are read, checked and named as they are
// for a file (checkDescriptor is CheckFileACL after GetNamedSecurityInfo).
// This runs the same under wine, which cannot keep most of these entries on
// a file.
func TestDescriptorACLWindows(t *testing.T) {
	user, err := currentUserSID()
	if err != nil {
		t.Fatal(err)
	}
	base := "O:" + user + "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;" + user + ")"
	type tc struct {
		name, sddl string
		refuse     []string // "" = accepted; else the message holds each
	}
	tests := []tc{
		{"private", base, nil},
		{"service SID", base + "(A;;FR;;;" + ServiceSID(ServiceName) + ")", nil},
		{"owner rights", base + "(A;;FA;;;OW)", nil},
		{"inherit-only Everyone", base + "(A;OIIO;FR;;;WD)", nil},
		{"deny Everyone", base + "(D;;FA;;;WD)", nil},
		{"Everyone may only read attributes", base + "(A;;0x80;;;WD)", nil},
		{"inherited Everyone", base + "(A;ID;FR;;;WD)", []string{"S-1-1-0", "icacls", "/inheritance:r"}},
		{"Everyone may change the DACL", base + "(A;;WD;;;WD)", []string{"S-1-1-0", "icacls"}},
		{"owned by Everyone", "O:WDD:P(A;;FA;;;SY)", []string{"S-1-1-0", "takeown"}},
	}
	for _, sid := range outsiders {
		tests = append(tests, tc{"read for " + sid, base + "(A;;FR;;;" + sid + ")", []string{sid, "icacls"}})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sd, err := windows.SecurityDescriptorFromString(tc.sddl)
			if err != nil {
				t.Fatal(err)
			}
			err = checkDescriptor(`C:\x\agent.key`, sd, ReadAccess|WriteAccess)
			if tc.refuse == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want a refusal naming %q", tc.refuse)
			}
			for _, want := range append(tc.refuse, `C:\x\agent.key`) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("refusal %q lacks %q", err, want)
				}
			}
		})
	}
}

// TestNullDACLWindows: a descriptor without a DACL (everyone has full
// access) is refused. Made with the API rather than "D:NO_ACCESS_CONTROL",
// which wine's SDDL parser turns into an empty DACL (nobody has access).
func TestNullDACLWindows(t *testing.T) {
	user, err := currentUserSID()
	if err != nil {
		t.Fatal(err)
	}
	sd, err := windows.NewSecurityDescriptor()
	if err != nil {
		t.Fatal(err)
	}
	owner, err := windows.StringToSid(user)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.SetOwner(owner, false); err != nil {
		t.Fatal(err)
	}
	if err := sd.SetDACL(nil, true, false); err != nil {
		t.Fatal(err)
	}
	err = checkDescriptor(`C:\x\agent.key`, sd, ReadAccess|WriteAccess)
	if err == nil || !strings.Contains(err.Error(), "has no DACL") || !strings.Contains(err.Error(), "/inheritance:r") {
		t.Fatalf("got %v, want a refusal saying it has no DACL, with icacls /inheritance:r", err)
	}
}

// TestObjectACEWindows: the SID of an object entry comes after its flags
// and GUIDs, and is found there. The ACL is built by hand: wine's SDDL
// parser refuses the GUID of an "OA" entry.
func TestObjectACEWindows(t *testing.T) {
	user, err := currentUserSID()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		flags uint32 // ACE_OBJECT_TYPE_PRESENT, ACE_INHERITED_OBJECT_TYPE_PRESENT
	}{{"no GUID", 0}, {"object type", 1}, {"both GUIDs", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			rdp, _ := windows.StringToSid("S-1-5-32-555")
			sidBytes := unsafe.Slice((*byte)(unsafe.Pointer(rdp)), windows.GetLengthSid(rdp))
			body := binary.LittleEndian.AppendUint32(nil, windows.FILE_GENERIC_READ)
			body = binary.LittleEndian.AppendUint32(body, tc.flags)
			for f := uint32(1); f <= 2; f <<= 1 {
				if tc.flags&f != 0 {
					body = append(body, bytes.Repeat([]byte{byte(0xA0 + f)}, 16)...)
				}
			}
			body = append(body, sidBytes...)
			ace := append([]byte{ACEAllowedObject, 0}, binary.LittleEndian.AppendUint16(nil, uint16(4+len(body)))...)
			ace = append(ace, body...)
			acl := []byte{4 /* ACL_REVISION_DS */, 0}
			acl = binary.LittleEndian.AppendUint16(acl, uint16(8+len(ace)))
			acl = binary.LittleEndian.AppendUint16(acl, 1)
			acl = append(acl, 0, 0)
			acl = append(acl, ace...)
			sd, err := windows.NewSecurityDescriptor()
			if err != nil {
				t.Fatal(err)
			}
			owner, _ := windows.StringToSid(user)
			if err := sd.SetOwner(owner, false); err != nil {
				t.Fatal(err)
			}
			if err := sd.SetDACL((*windows.ACL)(unsafe.Pointer(&acl[0])), true, false); err != nil {
				t.Fatal(err)
			}
			err = checkDescriptor(`C:\x\agent.key`, sd, ReadAccess|WriteAccess)
			runtime.KeepAlive(acl)
			if err == nil || !strings.Contains(err.Error(), "S-1-5-32-555") {
				t.Fatalf("got %v, want a refusal naming S-1-5-32-555", err)
			}
		})
	}
}

// TestFileACLWindows: a key WriteNew made is owned by the user and
// accepted; a real file's DACL is read from the file system and an entry
// for anyone outside the allow-list is refused with its SID and the icacls
// command; the agent's service SID is accepted.
func TestFileACLWindows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.key")
	if _, err := WriteNew(path); err != nil {
		t.Fatal(err)
	}
	user, err := currentUserSID()
	if err != nil {
		t.Fatal(err)
	}
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.OWNER_SECURITY_INFORMATION)
	if err != nil {
		t.Fatal(err)
	}
	if owner, _, err := sd.Owner(); err != nil || owner.String() != user {
		t.Errorf("the new key is owned by %v (%v), want the user %s", owner, err, user)
	}
	if _, err := ReadFile(path); err != nil {
		t.Fatalf("the new key is refused: %v", err)
	}
	base := "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;" + user + ")"
	// Everyone, read or write: kept on a file by Windows and by wine.
	for _, ace := range []string{"(A;;FR;;;WD)", "(A;;FW;;;WD)"} {
		if !winacl.SetKept(t, path, base+ace, "S-1-1-0") {
			t.Fatalf("%s was not kept on the file", ace)
		}
		_, err := ReadFile(path)
		if err == nil || !strings.Contains(err.Error(), "S-1-1-0") || !strings.Contains(err.Error(), "icacls") {
			t.Errorf("%s: got %v, want a refusal naming S-1-1-0 and icacls", ace, err)
		}
	}
	for _, sid := range outsiders[:len(outsiders)-1] {
		t.Run("read for "+sid, func(t *testing.T) {
			if !winacl.SetKept(t, path, base+"(A;;FR;;;"+sid+")", sid) {
				t.Skip(winacl.Dropped)
			}
			_, err := ReadFile(path)
			if err == nil || !strings.Contains(err.Error(), sid) || !strings.Contains(err.Error(), "icacls") {
				t.Errorf("%s may read: got %v, want a refusal naming it and icacls", sid, err)
			}
		})
	}
	winacl.Set(t, path, base+"(A;;FR;;;"+ServiceSID(ServiceName)+")")
	if _, err := ReadFile(path); err != nil {
		t.Errorf("the agent's service SID is refused: %v", err)
	}
}
