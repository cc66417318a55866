package agentkey

import (
	"fmt"
	"strings"
)

// Windows has no mode bits: who may read a file is its DACL, a list of
// access control entries (ACEs). This file holds the evaluation of a DACL as
// a pure function so that it is tested on every platform; the Windows-only
// part (acl_windows.go) only reads the ACEs from the file system.

// ACE is one access control entry of a file's DACL, reduced to what the
// check needs.
type ACE struct {
	Type  uint8  // ACE_HEADER.AceType, e.g. ACEAllowed
	Flags uint8  // ACE_HEADER.AceFlags, e.g. ACEInheritOnly
	Mask  uint32 // the access mask
	SID   string // the trustee, e.g. "S-1-1-0"
}

// ACE types and flags (winnt.h).
const (
	ACEAllowed               = 0x0
	ACEDenied                = 0x1
	ACEAllowedObject         = 0x5
	ACEAllowedCallback       = 0x9
	ACEAllowedCallbackObject = 0xB

	// ACEInheritOnly marks an ACE that applies only to objects created
	// inside a directory, not to the object it is on.
	ACEInheritOnly = 0x08
)

// Access rights (winnt.h). WRITE_DAC and WRITE_OWNER are part of both
// masks below: whoever may change a file's permissions may read it.
const (
	fileReadData   = 0x0001
	fileWriteData  = 0x0002
	fileAppendData = 0x0004
	writeDAC       = 0x0004_0000
	writeOwner     = 0x0008_0000
	genericAll     = 0x1000_0000
	genericWrite   = 0x4000_0000
	genericRead    = 0x8000_0000

	// ReadAccess are the rights that let a trustee read a file's content.
	ReadAccess = fileReadData | genericRead | genericAll | writeDAC | writeOwner
	// WriteAccess are the rights that let a trustee change it.
	WriteAccess = fileWriteData | fileAppendData | genericWrite | genericAll | writeDAC | writeOwner
)

// broadSIDs are the well-known groups that stand for "others" on a Windows
// host: every account, or every user of the machine or domain.
var broadSIDs = map[string]string{
	"S-1-1-0":      "Everyone",
	"S-1-2-0":      "LOCAL",
	"S-1-5-2":      "NETWORK",
	"S-1-5-4":      "INTERACTIVE",
	"S-1-5-7":      "ANONYMOUS LOGON",
	"S-1-5-11":     "Authenticated Users",
	"S-1-5-32-545": "BUILTIN\\Users",
	"S-1-5-32-546": "BUILTIN\\Guests",
	"S-1-15-2-1":   "ALL APPLICATION PACKAGES",
}

// broadGroup names sid if it is one of the groups that stand for
// "others": the well-known ones, and a domain's Domain Users (RID 513) and
// Domain Guests (RID 514).
func broadGroup(sid string) (string, bool) {
	sid = strings.ToUpper(sid)
	if name, ok := broadSIDs[sid]; ok {
		return name, true
	}
	if strings.HasPrefix(sid, "S-1-5-21-") {
		switch {
		case strings.HasSuffix(sid, "-513"):
			return "Domain Users", true
		case strings.HasSuffix(sid, "-514"):
			return "Domain Guests", true
		}
	}
	return "", false
}

func isAllow(t uint8) bool {
	switch t {
	case ACEAllowed, ACEAllowedObject, ACEAllowedCallback, ACEAllowedCallbackObject:
		return true
	}
	return false
}

// CheckDACL refuses a DACL that grants any of the rights in mask to a
// group that stands for "others" (Everyone, Authenticated Users,
// BUILTIN\Users, …). nullDACL means the file has no DACL at all, which
// Windows treats as full access for everyone.
//
// The check is deliberately stricter than Windows' access check: an allow
// entry counts even when an earlier deny entry would cancel it, because a
// DACL that needs a deny to be safe is one edit away from leaking the file.
// Entries that apply only to children (inherit-only) do not count.
func CheckDACL(aces []ACE, nullDACL bool, mask uint32) error {
	if nullDACL {
		return fmt.Errorf("has no DACL, so everyone has full access")
	}
	for _, a := range aces {
		if !isAllow(a.Type) || a.Flags&ACEInheritOnly != 0 || a.Mask&mask == 0 {
			continue
		}
		if name, ok := broadGroup(a.SID); ok {
			return fmt.Errorf("has an ACL entry that lets %s (%s) read or change it (access mask %#x)", name, a.SID, a.Mask)
		}
	}
	return nil
}

// PrivateSDDL is the security descriptor a new key file gets on Windows: a
// protected DACL (nothing inherited from the directory) with full control
// for SYSTEM, the Administrators group and userSID (the account that runs
// keygen or enrol), and nothing for anyone else.
func PrivateSDDL(userSID string) string {
	return "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;" + userSID + ")"
}

// ACLFixHint is the command that gives path a protected DACL like a key
// file's: full control for SYSTEM (S-1-5-18) and Administrators
// (S-1-5-32-544) only, by SID so that it works on Windows in any language.
// A service account other than LocalSystem needs a grant of its own.
func ACLFixHint(path string) string {
	return fmt.Sprintf(`icacls "%s" /inheritance:r /grant:r *S-1-5-18:F *S-1-5-32-544:F`, path)
}
