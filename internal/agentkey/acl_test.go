package agentkey

import (
	"strings"
	"testing"
)

// Access masks as icacls and Explorer set them.
const (
	maskFull        = 0x1f01ff // F
	maskModify      = 0x1301bf // M
	maskReadExecute = 0x1200a9 // RX
	maskListOnly    = 0x100080 // SYNCHRONIZE | FILE_READ_ATTRIBUTES
)

// TestCheckDACL evaluates synthetic DACLs the way the Windows build reads
// them from a key or password file.
func TestCheckDACL(t *testing.T) {
	const user = "S-1-5-21-1004336348-1177238915-682003330-1001"
	private := []ACE{
		{Type: ACEAllowed, Mask: maskFull, SID: "S-1-5-18"},     // SYSTEM
		{Type: ACEAllowed, Mask: maskFull, SID: "S-1-5-32-544"}, // Administrators
		{Type: ACEAllowed, Mask: maskFull, SID: user},
	}
	with := func(extra ...ACE) []ACE { return append(append([]ACE{}, private...), extra...) }
	tests := []struct {
		name    string
		aces    []ACE
		null    bool
		mask    uint32
		wantErr string // "" means accepted
	}{
		{name: "SYSTEM, Administrators and the user", aces: private, mask: ReadAccess | WriteAccess},
		{name: "empty DACL (nobody)", aces: nil, mask: ReadAccess | WriteAccess},
		{name: "null DACL", null: true, mask: ReadAccess, wantErr: "no DACL"},
		{name: "Everyone read", aces: with(ACE{Type: ACEAllowed, Mask: maskReadExecute, SID: "S-1-1-0"}),
			mask: ReadAccess, wantErr: "Everyone (S-1-1-0)"},
		{name: "Authenticated Users modify", aces: with(ACE{Type: ACEAllowed, Mask: maskModify, SID: "S-1-5-11"}),
			mask: ReadAccess, wantErr: "Authenticated Users (S-1-5-11)"},
		{name: "BUILTIN Users inherited read", aces: with(ACE{Type: ACEAllowed, Flags: 0x10 /* INHERITED_ACE */, Mask: maskReadExecute, SID: "S-1-5-32-545"}),
			mask: ReadAccess, wantErr: `BUILTIN\Users (S-1-5-32-545)`},
		{name: "Users inherit-only entry does not apply to the file", aces: with(ACE{Type: ACEAllowed, Flags: ACEInheritOnly | 0x3, Mask: maskReadExecute, SID: "S-1-5-32-545"}),
			mask: ReadAccess},
		{name: "Users denied", aces: with(ACE{Type: ACEDenied, Mask: maskFull, SID: "S-1-5-32-545"}), mask: ReadAccess},
		{name: "deny before allow still refused", aces: append([]ACE{{Type: ACEDenied, Mask: maskFull, SID: "S-1-1-0"}},
			with(ACE{Type: ACEAllowed, Mask: maskReadExecute, SID: "S-1-1-0"})...), mask: ReadAccess, wantErr: "Everyone"},
		{name: "Everyone may only see attributes", aces: with(ACE{Type: ACEAllowed, Mask: maskListOnly, SID: "S-1-1-0"}),
			mask: ReadAccess | WriteAccess},
		{name: "Everyone GENERIC_READ", aces: with(ACE{Type: ACEAllowed, Mask: genericRead, SID: "S-1-1-0"}),
			mask: ReadAccess, wantErr: "Everyone"},
		{name: "Everyone GENERIC_ALL", aces: with(ACE{Type: ACEAllowed, Mask: genericAll, SID: "S-1-1-0"}),
			mask: ReadAccess, wantErr: "Everyone"},
		{name: "Users may change the permissions", aces: with(ACE{Type: ACEAllowed, Mask: writeDAC, SID: "S-1-5-32-545"}),
			mask: ReadAccess, wantErr: "Users"},
		{name: "Users may take ownership", aces: with(ACE{Type: ACEAllowed, Mask: writeOwner, SID: "S-1-5-32-545"}),
			mask: ReadAccess, wantErr: "Users"},
		{name: "Users write only, read checked", aces: with(ACE{Type: ACEAllowed, Mask: fileWriteData | fileAppendData, SID: "S-1-5-32-545"}),
			mask: ReadAccess},
		{name: "Users write only, write checked", aces: with(ACE{Type: ACEAllowed, Mask: fileWriteData, SID: "S-1-5-32-545"}),
			mask: ReadAccess | WriteAccess, wantErr: "Users"},
		{name: "callback allow counts", aces: with(ACE{Type: ACEAllowedCallback, Mask: maskReadExecute, SID: "S-1-5-11"}),
			mask: ReadAccess, wantErr: "Authenticated Users"},
		{name: "object allow counts", aces: with(ACE{Type: ACEAllowedObject, Mask: maskReadExecute, SID: "S-1-1-0"}),
			mask: ReadAccess, wantErr: "Everyone"},
		{name: "lower-case SID", aces: with(ACE{Type: ACEAllowed, Mask: maskReadExecute, SID: "s-1-1-0"}),
			mask: ReadAccess, wantErr: "Everyone"},
		{name: "Domain Users", aces: with(ACE{Type: ACEAllowed, Mask: maskReadExecute, SID: "S-1-5-21-1-2-3-513"}),
			mask: ReadAccess, wantErr: "Domain Users"},
		{name: "Guests", aces: with(ACE{Type: ACEAllowed, Mask: maskReadExecute, SID: "S-1-5-32-546"}),
			mask: ReadAccess, wantErr: "Guests"},
		{name: "INTERACTIVE", aces: with(ACE{Type: ACEAllowed, Mask: maskReadExecute, SID: "S-1-5-4"}),
			mask: ReadAccess, wantErr: "INTERACTIVE"},
		{name: "another named account", aces: with(ACE{Type: ACEAllowed, Mask: maskReadExecute, SID: "S-1-5-21-1-2-3-1105"}),
			mask: ReadAccess},
		{name: "a service's own SID", aces: with(ACE{Type: ACEAllowed, Mask: maskReadExecute, SID: "S-1-5-80-1-2-3-4-5"}),
			mask: ReadAccess},
		{name: "unknown ACE type ignored", aces: with(ACE{Type: 0x11, Mask: maskFull, SID: "S-1-1-0"}),
			mask: ReadAccess | WriteAccess},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDACL(tc.aces, tc.null, tc.mask)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestPrivateSDDL: the DACL a new key file gets on Windows is protected
// and names only SYSTEM, Administrators and the user; as ACEs it passes
// CheckDACL.
func TestPrivateSDDL(t *testing.T) {
	tests := []struct {
		user string
		want string
	}{
		{"S-1-5-21-1-2-3-1001", "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;S-1-5-21-1-2-3-1001)"},
		{"S-1-5-18", "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;S-1-5-18)"}, // LocalSystem
	}
	for _, tc := range tests {
		got := PrivateSDDL(tc.user)
		if got != tc.want {
			t.Errorf("PrivateSDDL(%q) = %q, want %q", tc.user, got, tc.want)
		}
		for _, broad := range []string{"WD", "AU", "BU", "S-1-1-0", "S-1-5-11", "S-1-5-32-545"} {
			if strings.Contains(got, ";"+broad+")") {
				t.Errorf("PrivateSDDL(%q) grants %s", tc.user, broad)
			}
		}
		aces := []ACE{
			{Type: ACEAllowed, Mask: maskFull, SID: "S-1-5-18"},
			{Type: ACEAllowed, Mask: maskFull, SID: "S-1-5-32-544"},
			{Type: ACEAllowed, Mask: maskFull, SID: tc.user},
		}
		if err := CheckDACL(aces, false, ReadAccess|WriteAccess); err != nil {
			t.Errorf("the key's own DACL is refused: %v", err)
		}
	}
	if h := ACLFixHint(`C:\ProgramData\orthanc-gcp-agent\agent.key`); !strings.Contains(h, `icacls "C:\ProgramData\orthanc-gcp-agent\agent.key" /inheritance:r /grant:r *S-1-5-18:F *S-1-5-32-544:F`) {
		t.Errorf("hint %q", h)
	}
}
