package agentkey

import (
	"errors"
	"strings"
	"testing"
)

// Access masks as icacls and Explorer set them.
const (
	maskFull        = 0x1f01ff // F
	maskModify      = 0x1301bf // M
	maskReadExecute = 0x1200a9 // RX
	maskRead        = 0x120089 // R
	maskListOnly    = 0x100080 // SYNCHRONIZE | FILE_READ_ATTRIBUTES
	maskReadControl = 0x120000 // SYNCHRONIZE | READ_CONTROL
)

// SIDs of the tests: a machine (or domain), its users, and the agent's
// service SID.
const (
	testDomain = "S-1-5-21-1004336348-1177238915-682003330"
	testUser   = testDomain + "-1001" // the key's owner
	testOther  = testDomain + "-1002" // any single other user
	testRunAs  = testDomain + "-1003" // an account the agent runs as, not the owner
)

var testService = ServiceSID(ServiceName)

// TestCheckDACL evaluates synthetic security descriptors the way the
// Windows build reads them from a key or password file: the owner, the
// SIDs the agent adds (its service SID and the account it runs as) and the
// DACL's entries.
func TestCheckDACL(t *testing.T) {
	private := []ACE{
		{Type: ACEAllowed, Mask: maskFull, SID: "S-1-5-18"},     // SYSTEM
		{Type: ACEAllowed, Mask: maskFull, SID: "S-1-5-32-544"}, // Administrators
		{Type: ACEAllowed, Mask: maskFull, SID: testUser},       // the owner
	}
	with := func(extra ...ACE) []ACE { return append(append([]ACE{}, private...), extra...) }
	read := func(sid string) ACE { return ACE{Type: ACEAllowed, Mask: maskReadExecute, SID: sid} }
	asService := []string{testService, SIDLocalSystem} // the service, as LocalSystem
	tests := []struct {
		name    string
		owner   string   // "" means testUser; "-" means unknown
		allowed []string // nil means asService
		aces    []ACE
		null    bool
		mask    uint32
		wantErr string // "" means accepted
	}{
		// Accepted: the allow-list.
		{name: "SYSTEM, Administrators and the owner", aces: private},
		{name: "empty DACL (nobody)", aces: nil},
		{name: "SYSTEM only", aces: []ACE{read("S-1-5-18")}},
		{name: "Administrators only", aces: []ACE{read("S-1-5-32-544")}},
		{name: "the owner only", aces: []ACE{read(testUser)}},
		{name: "another single user who owns the file", owner: testOther, aces: []ACE{read(testOther)}},
		{name: "the agent's service SID", aces: with(read(testService))},
		{name: "the agent's service SID, lower case", aces: with(read(strings.ToLower(testService)))},
		{name: "the account the agent runs as", allowed: []string{testService, testRunAs}, aces: with(read(testRunAs))},
		{name: "LocalSystem as the account the agent runs as", allowed: []string{testService, "S-1-5-18"}, aces: with(read("S-1-5-18"))},
		{name: "OWNER RIGHTS when the owner is known", aces: with(read("S-1-3-4"))},
		{name: "lower-case owner", owner: strings.ToLower(testOther), aces: []ACE{read(testOther)}},
		{name: "Administrators own the file", owner: "S-1-5-32-544", aces: []ACE{read("S-1-5-18"), read("S-1-5-32-544")}},

		// Accepted: entries that grant nothing to the file.
		{name: "other user inherit-only entry does not apply to the file",
			aces: with(ACE{Type: ACEAllowed, Flags: ACEInheritOnly | 0x3, Mask: maskReadExecute, SID: testOther})},
		{name: "Users inherit-only entry does not apply to the file",
			aces: with(ACE{Type: ACEAllowed, Flags: ACEInheritOnly | 0x3, Mask: maskReadExecute, SID: "S-1-5-32-545"})},
		{name: "Users denied", aces: with(ACE{Type: ACEDenied, Mask: maskFull, SID: "S-1-5-32-545"})},
		{name: "other user denied", aces: with(ACE{Type: ACEDenied, Mask: maskFull, SID: testOther})},
		{name: "Everyone may only see attributes", aces: with(ACE{Type: ACEAllowed, Mask: maskListOnly, SID: "S-1-1-0"})},
		{name: "other user may only read the permissions", aces: with(ACE{Type: ACEAllowed, Mask: maskReadControl, SID: testOther})},
		{name: "Users write only, read checked", mask: ReadAccess,
			aces: with(ACE{Type: ACEAllowed, Mask: fileWriteData | fileAppendData, SID: "S-1-5-32-545"})},
		{name: "unknown ACE type ignored", aces: with(ACE{Type: 0x11, Mask: maskFull, SID: "S-1-1-0"})},

		// Refused: what the broad-group list refused, still refused.
		{name: "null DACL", null: true, mask: ReadAccess, wantErr: "no DACL"},
		{name: "Everyone read", aces: with(read("S-1-1-0")), wantErr: "Everyone (S-1-1-0)"},
		{name: "Authenticated Users modify", aces: with(ACE{Type: ACEAllowed, Mask: maskModify, SID: "S-1-5-11"}),
			wantErr: "Authenticated Users (S-1-5-11)"},
		{name: "BUILTIN Users inherited read", aces: with(ACE{Type: ACEAllowed, Flags: ACEInherited, Mask: maskReadExecute, SID: "S-1-5-32-545"}),
			wantErr: `BUILTIN\Users (S-1-5-32-545)`},
		{name: "deny before allow still refused", aces: append([]ACE{{Type: ACEDenied, Mask: maskFull, SID: "S-1-1-0"}},
			with(read("S-1-1-0"))...), wantErr: "Everyone"},
		{name: "Everyone GENERIC_READ", aces: with(ACE{Type: ACEAllowed, Mask: genericRead, SID: "S-1-1-0"}), wantErr: "Everyone"},
		{name: "Everyone GENERIC_ALL", aces: with(ACE{Type: ACEAllowed, Mask: genericAll, SID: "S-1-1-0"}), wantErr: "Everyone"},
		{name: "Users may change the permissions", aces: with(ACE{Type: ACEAllowed, Mask: writeDAC, SID: "S-1-5-32-545"}), wantErr: "Users"},
		{name: "Users may take ownership", aces: with(ACE{Type: ACEAllowed, Mask: writeOwner, SID: "S-1-5-32-545"}), wantErr: "Users"},
		{name: "Users write only, write checked", aces: with(ACE{Type: ACEAllowed, Mask: fileWriteData, SID: "S-1-5-32-545"}), wantErr: "Users"},
		{name: "callback allow counts", aces: with(ACE{Type: ACEAllowedCallback, Mask: maskReadExecute, SID: "S-1-5-11"}), wantErr: "Authenticated Users"},
		{name: "object allow counts", aces: with(ACE{Type: ACEAllowedObject, Mask: maskReadExecute, SID: "S-1-1-0"}), wantErr: "Everyone"},
		{name: "lower-case SID", aces: with(read("s-1-1-0")), wantErr: "Everyone (S-1-1-0)"},
		{name: "Domain Users", aces: with(read(testDomain + "-513")), wantErr: "Domain Users"},
		{name: "Guests", aces: with(read("S-1-5-32-546")), wantErr: "Guests"},
		{name: "INTERACTIVE", aces: with(read("S-1-5-4")), wantErr: "INTERACTIVE"},

		// Refused: what the broad-group list let through (security review).
		{name: "This Organization", aces: with(read("S-1-5-15")), wantErr: "This Organization (S-1-5-15)"},
		{name: "Local account", aces: with(read("S-1-5-113")), wantErr: "Local account (S-1-5-113)"},
		{name: "SERVICE", aces: with(read("S-1-5-6")), wantErr: "SERVICE (S-1-5-6)"},
		{name: "Remote Desktop Users", aces: with(read("S-1-5-32-555")), wantErr: `BUILTIN\Remote Desktop Users (S-1-5-32-555)`},
		{name: "Power Users", aces: with(read("S-1-5-32-547")), wantErr: `BUILTIN\Power Users (S-1-5-32-547)`},
		{name: "Domain Computers", aces: with(read(testDomain + "-515")), wantErr: "Domain Computers (" + testDomain + "-515)"},
		{name: "any single other user", aces: with(read(testOther)), wantErr: "lets " + testOther + " read"},
		{name: "any single other user, read only", aces: with(ACE{Type: ACEAllowed, Mask: maskRead, SID: testOther}), wantErr: testOther},
		{name: "any single other user, inherited", aces: with(ACE{Type: ACEAllowed, Flags: ACEInherited, Mask: maskReadExecute, SID: testOther}), wantErr: testOther},
		{name: "any single other user, callback", aces: with(ACE{Type: ACEAllowedCallback, Mask: maskReadExecute, SID: testOther}), wantErr: testOther},
		{name: "any single other user may change the permissions", aces: with(ACE{Type: ACEAllowed, Mask: writeDAC, SID: testOther}), wantErr: testOther},
		{name: "any single other user, write only", aces: with(ACE{Type: ACEAllowed, Mask: fileWriteData, SID: testOther}), wantErr: testOther},
		{name: "another service's SID", aces: with(read(ServiceSID("TrustedInstaller"))), wantErr: ServiceSID("TrustedInstaller")},
		{name: "LOCAL SERVICE when the agent does not run as it", aces: with(read("S-1-5-19")), wantErr: "LOCAL SERVICE (S-1-5-19)"},
		{name: "the account a user runs the agent as, for the service", aces: with(read(testRunAs)), wantErr: testRunAs},
		{name: "Backup Operators", aces: with(read("S-1-5-32-551")), wantErr: "Backup Operators"},
		{name: "Domain Admins of another domain", aces: with(read("S-1-5-21-1-2-3-512")), wantErr: "Domain Admins"},
		{name: "OWNER RIGHTS when the owner is unknown", owner: "-", aces: with(read("S-1-3-4")), wantErr: "OWNER RIGHTS"},
		{name: "owner unknown: the key's user entry", owner: "-", aces: private, wantErr: testUser},
		{name: "two others named at once", aces: with(read("S-1-5-15"), read(testOther)),
			wantErr: "let This Organization (S-1-5-15, access mask 0x1200a9) and " + testOther + " (access mask 0x1200a9) read or change it"},
		{name: "one trustee in two entries is named once", aces: with(ACE{Type: ACEAllowed, Mask: fileReadData, SID: testOther}, ACE{Type: ACEAllowed, Mask: fileWriteData, SID: testOther}),
			wantErr: "an ACL entry that lets " + testOther + " read or change it (access mask 0x3)"},
		{name: "a group of many as the agent's account is ignored", allowed: []string{"S-1-1-0", "S-1-5-32-545"}, aces: with(read("S-1-1-0")), wantErr: "Everyone"},

		// Refused: an owner that is a group of many accounts.
		{name: "owned by Users", owner: "S-1-5-32-545", aces: []ACE{read("S-1-5-18")}, wantErr: `is owned by BUILTIN\Users (S-1-5-32-545)`},
		{name: "owned by Everyone, with its entry", owner: "S-1-1-0", aces: []ACE{read("S-1-5-18"), read("S-1-1-0")},
			wantErr: "is owned by Everyone (S-1-1-0), a group whose members may all change its permissions, and has an ACL entry that lets Everyone (S-1-1-0) read"},
		{name: "owned by Domain Computers: OWNER RIGHTS", owner: testDomain + "-515", aces: []ACE{read("S-1-3-4")}, wantErr: "OWNER RIGHTS (S-1-3-4)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			owner := tc.owner
			switch owner {
			case "":
				owner = testUser
			case "-":
				owner = ""
			}
			allowed := tc.allowed
			if allowed == nil {
				allowed = asService
			}
			mask := tc.mask
			if mask == 0 {
				mask = ReadAccess | WriteAccess
			}
			err := CheckDACL(owner, allowed, tc.aces, tc.null, mask)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
			if err != nil {
				var e *ACLError
				if !errors.As(err, &e) {
					t.Fatalf("error %T, want *ACLError", err)
				}
			}
		})
	}
}

// TestCheckDACLRefusesEachOther: with the key's own DACL as the base,
// an entry for any SID outside the allow-list is refused, whatever the
// SID; the SIDs are those of the security review and the groups the
// previous rule named.
func TestCheckDACLRefusesEachOther(t *testing.T) {
	others := []string{
		"S-1-1-0", "S-1-5-11", "S-1-5-32-545", "S-1-5-15", "S-1-5-113", "S-1-5-6",
		"S-1-5-32-555", "S-1-5-32-547", testDomain + "-515", testDomain + "-513", testOther,
		"S-1-5-32-546", "S-1-5-4", "S-1-5-2", "S-1-2-0", "S-1-5-7", "S-1-15-2-1",
		"S-1-5-20", "S-1-5-80-1-2-3-4-5", "S-1-3-0",
	}
	base := []ACE{
		{Type: ACEAllowed, Mask: maskFull, SID: "S-1-5-18"},
		{Type: ACEAllowed, Mask: maskFull, SID: "S-1-5-32-544"},
	}
	for _, sid := range others {
		aces := append(append([]ACE{}, base...), ACE{Type: ACEAllowed, Mask: maskRead, SID: sid})
		err := CheckDACL(testUser, []string{testService, SIDLocalSystem}, aces, false, ReadAccess|WriteAccess)
		if err == nil || !strings.Contains(err.Error(), sid) {
			t.Errorf("%s: got %v, want a refusal naming it", sid, err)
		}
		for _, allowed := range []string{"S-1-5-18", "S-1-5-32-544", testUser, testService} {
			a := []ACE{{Type: ACEAllowed, Mask: maskFull, SID: allowed}}
			if err := CheckDACL(testUser, []string{testService, SIDLocalSystem}, a, false, ReadAccess|WriteAccess); err != nil {
				t.Errorf("%s refused: %v", allowed, err)
			}
		}
	}
}

// TestACLFix: the command in the message removes what was refused: an
// explicit entry with icacls /remove:g, an inherited one (or no DACL) by
// dropping inheritance and granting SYSTEM and Administrators, a group
// owner with takeown /a; SIDs with icacls' "*".
func TestACLFix(t *testing.T) {
	const path = `C:\ProgramData\orthanc-gcp-agent\agent.key`
	base := []ACE{{Type: ACEAllowed, Mask: maskFull, SID: "S-1-5-18"}}
	tests := []struct {
		name  string
		owner string
		aces  []ACE
		null  bool
		want  string
	}{
		{name: "explicit", owner: testUser, aces: append(base, ACE{Type: ACEAllowed, Mask: maskRead, SID: testOther}),
			want: `icacls "` + path + `" /remove:g *` + testOther},
		{name: "two explicit", owner: testUser, aces: append(base, ACE{Type: ACEAllowed, Mask: maskRead, SID: "S-1-5-32-555"}, ACE{Type: ACEAllowed, Mask: maskRead, SID: testOther}),
			want: `icacls "` + path + `" /remove:g *S-1-5-32-555 *` + testOther},
		{name: "inherited", owner: testUser, aces: append(base, ACE{Type: ACEAllowed, Flags: ACEInherited, Mask: maskRead, SID: "S-1-5-32-545"}),
			want: `icacls "` + path + `" /inheritance:r /remove:g *S-1-5-32-545 /grant:r *S-1-5-18:F *S-1-5-32-544:F`},
		{name: "no DACL", owner: testUser, null: true,
			want: `icacls "` + path + `" /inheritance:r /grant:r *S-1-5-18:F *S-1-5-32-544:F`},
		{name: "group owner", owner: "S-1-5-32-545", aces: base,
			want: `takeown /f "` + path + `" /a`},
		{name: "group owner and an entry", owner: "S-1-5-15", aces: append(base, ACE{Type: ACEAllowed, Mask: maskRead, SID: "S-1-5-15"}),
			want: `takeown /f "` + path + `" /a, then icacls "` + path + `" /remove:g *S-1-5-15`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e *ACLError
			if err := CheckDACL(tc.owner, nil, tc.aces, tc.null, ReadAccess|WriteAccess); !errors.As(err, &e) {
				t.Fatalf("CheckDACL = %v, want an *ACLError", err)
			}
			if got := e.Fix(path); got != tc.want {
				t.Errorf("Fix = %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestRefusalMessage: the whole message names the file, the trustee (by
// the name Windows gives when known), who may have access and the fix.
func TestRefusalMessage(t *testing.T) {
	const path = `C:\ProgramData\orthanc-gcp-agent\orthanc.password`
	aces := []ACE{
		{Type: ACEAllowed, Mask: maskFull, SID: "S-1-5-18"},
		{Type: ACEAllowed, Mask: maskRead, SID: testOther},
	}
	var e *ACLError
	if err := CheckDACL(testUser, []string{testService, SIDLocalSystem}, aces, false, ReadAccess|WriteAccess); !errors.As(err, &e) {
		t.Fatalf("CheckDACL = %v, want an *ACLError", err)
	}
	e.Owner.Name = `HOST\alice` // as the Windows build fills them in
	e.Grants[0].Name = `HOST\bob`
	err := refusal(path, e, `NT AUTHORITY\SYSTEM`)
	want := path + ` has an ACL entry that lets HOST\bob (` + testOther + `) read or change it (access mask 0x120089); ` +
		`only SYSTEM, Administrators, the file's owner (HOST\alice (` + testUser + `)), NT SERVICE\orthanc-gcp-agent ` +
		`and the account the agent runs as (NT AUTHORITY\SYSTEM) may have access; ` +
		`to fix it, run from an elevated prompt: icacls "` + path + `" /remove:g *` + testOther
	if err.Error() != want {
		t.Errorf("message\n%s\nwant\n%s", err, want)
	}
	if !errors.Is(err, e) {
		t.Errorf("the message does not wrap the *ACLError")
	}
	if got := refusal(path, &ACLError{NullDACL: true}, "").Error(); !strings.Contains(got, "has no DACL") ||
		!strings.Contains(got, "the file's owner, NT SERVICE") || !strings.Contains(got, "the account the agent runs as may") {
		t.Errorf("message without names: %s", got)
	}
}

// TestServiceSID: the virtual account SID of a service, checked against
// SIDs that Windows printed for well-known services (sc.exe showsid,
// whoami, LookupAccountName), whatever the case of the name.
func TestServiceSID(t *testing.T) {
	tests := []struct{ name, want string }{
		{"TrustedInstaller", "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"},
		{"trustedinstaller", "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"},
		{"MSSQLSERVER", "S-1-5-80-3880718306-3832830129-1677859214-2598158968-1052248003"},
		{"WinDefend", "S-1-5-80-1913148863-3492339771-4165695881-2087618961-4109116736"},
		// The agent's, by the same computation; pinned so that a change shows.
		{ServiceName, "S-1-5-80-2109486040-944739391-3474404919-977686769-1940520775"},
	}
	for _, tc := range tests {
		if got := ServiceSID(tc.name); got != tc.want {
			t.Errorf("ServiceSID(%q) = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestPrivateDirSDDL: a private directory gets the key's descriptor with
// each entry also inherited by files and folders (OICI).
func TestPrivateDirSDDL(t *testing.T) {
	got := PrivateDirSDDL(testUser)
	want := strings.ReplaceAll(PrivateSDDL(testUser), "(A;;", "(A;OICI;")
	if got != want || !strings.Contains(got, "D:P(") {
		t.Errorf("PrivateDirSDDL = %q, want %q", got, want)
	}
}

// TestPrivateSDDL: the security descriptor a new key file gets on Windows
// is owned by the user, protected, and names only SYSTEM, Administrators
// and the user; as ACEs it passes CheckDACL both for the user and for the
// service running as LocalSystem.
func TestPrivateSDDL(t *testing.T) {
	tests := []struct {
		user string
		want string
	}{
		{testUser, "O:" + testUser + "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;" + testUser + ")"},
		{"S-1-5-18", "O:S-1-5-18D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;S-1-5-18)"}, // LocalSystem
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
		for _, runAs := range []string{tc.user, SIDLocalSystem} {
			if err := CheckDACL(tc.user, []string{testService, runAs}, aces, false, ReadAccess|WriteAccess); err != nil {
				t.Errorf("the key's own security descriptor is refused (agent running as %s): %v", runAs, err)
			}
		}
	}
}
