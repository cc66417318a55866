package agentkey

import (
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf16"
)

// Windows has no mode bits: who may read a file is its DACL, a list of
// access control entries (ACEs). This file holds the evaluation of a DACL as
// a pure function so that it is tested on every platform; the Windows-only
// part (file_windows.go) only reads the owner and the ACEs from the file
// system and looks up account names for the message.

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
	// ACEInherited marks an ACE the file got from its directory; icacls
	// /remove does not touch those, /inheritance:r does.
	ACEInherited = 0x10
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

// The SIDs the check always allows, and OWNER RIGHTS, which stands for
// whoever owns the file.
const (
	SIDLocalSystem    = "S-1-5-18"
	SIDAdministrators = "S-1-5-32-544"
	sidOwnerRights    = "S-1-3-4"
)

// ServiceName is the agent's Windows service (and event log source) name.
const ServiceName = "orthanc-gcp-agent"

// ServiceSID returns the SID of the virtual account "NT SERVICE\name",
// which Windows derives from the name alone (sc.exe showsid prints it):
// S-1-5-80 followed by the SHA-1 of the upper-case name in UTF-16LE, read
// as five little-endian 32-bit words. The upper-casing is Go's, which is
// Windows' for the ASCII names services have.
func ServiceSID(name string) string {
	u := utf16.Encode([]rune(strings.ToUpper(name)))
	b := make([]byte, 0, 2*len(u))
	for _, c := range u {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	sum := sha1.Sum(b)
	var s strings.Builder
	s.WriteString("S-1-5-80")
	for i := 0; i < len(sum); i += 4 {
		fmt.Fprintf(&s, "-%d", binary.LittleEndian.Uint32(sum[i:]))
	}
	return s.String()
}

// wellKnownNames names the SIDs a message may mention; the Windows build
// prefers the name the system gives (LookupAccountSid, in its language).
var wellKnownNames = map[string]string{
	"S-1-1-0":      "Everyone",
	"S-1-2-0":      "LOCAL",
	"S-1-2-1":      "CONSOLE LOGON",
	"S-1-3-0":      "CREATOR OWNER",
	"S-1-3-1":      "CREATOR GROUP",
	"S-1-3-4":      "OWNER RIGHTS",
	"S-1-5-1":      "DIALUP",
	"S-1-5-2":      "NETWORK",
	"S-1-5-3":      "BATCH",
	"S-1-5-4":      "INTERACTIVE",
	"S-1-5-6":      "SERVICE",
	"S-1-5-7":      "ANONYMOUS LOGON",
	"S-1-5-11":     "Authenticated Users",
	"S-1-5-13":     "TERMINAL SERVER USER",
	"S-1-5-14":     "REMOTE INTERACTIVE LOGON",
	"S-1-5-15":     "This Organization",
	"S-1-5-18":     "SYSTEM",
	"S-1-5-19":     "LOCAL SERVICE",
	"S-1-5-20":     "NETWORK SERVICE",
	"S-1-5-113":    "Local account",
	"S-1-5-114":    "Local account and member of Administrators group",
	"S-1-5-1000":   "Other Organization",
	"S-1-5-32-544": "BUILTIN\\Administrators",
	"S-1-5-32-545": "BUILTIN\\Users",
	"S-1-5-32-546": "BUILTIN\\Guests",
	"S-1-5-32-547": "BUILTIN\\Power Users",
	"S-1-5-32-551": "BUILTIN\\Backup Operators",
	"S-1-5-32-555": "BUILTIN\\Remote Desktop Users",
	"S-1-5-32-580": "BUILTIN\\Remote Management Users",
	"S-1-15-2-1":   "ALL APPLICATION PACKAGES",
	"S-1-15-2-2":   "ALL RESTRICTED APPLICATION PACKAGES",
}

// domainRIDNames names a domain's (or the machine's) well-known accounts
// and groups, S-1-5-21-<domain>-<RID>.
var domainRIDNames = map[string]string{
	"500": "Administrator",
	"501": "Guest",
	"512": "Domain Admins",
	"513": "Domain Users",
	"514": "Domain Guests",
	"515": "Domain Computers",
	"516": "Domain Controllers",
}

// wellKnownName names sid if the tables above know it, else "".
func wellKnownName(sid string) string {
	if name, ok := wellKnownNames[sid]; ok {
		return name
	}
	if strings.HasPrefix(sid, "S-1-5-21-") {
		return domainRIDNames[sid[strings.LastIndexByte(sid, '-')+1:]]
	}
	return ""
}

// manySIDs are the groups that stand for many accounts: every account, or
// every user, service or computer of the machine or domain. They never own
// a key, nor count as the account the agent runs as.
var manySIDs = map[string]bool{
	"S-1-1-0": true, "S-1-2-0": true, "S-1-2-1": true,
	"S-1-5-1": true, "S-1-5-2": true, "S-1-5-3": true, "S-1-5-4": true,
	"S-1-5-6": true, "S-1-5-7": true, "S-1-5-11": true, "S-1-5-13": true,
	"S-1-5-14": true, "S-1-5-15": true, "S-1-5-113": true, "S-1-5-1000": true,
	"S-1-5-32-545": true, "S-1-5-32-546": true, "S-1-5-32-547": true,
	"S-1-5-32-555": true, "S-1-5-32-580": true,
	"S-1-15-2-1": true, "S-1-15-2-2": true,
}

// manyAccounts reports whether sid (upper case) is one of manySIDs or a
// domain's Domain Users, Domain Guests or Domain Computers (RID 513, 514,
// 515; 513 is also a standalone machine's "None", which holds every local
// user).
func manyAccounts(sid string) bool {
	if manySIDs[sid] {
		return true
	}
	if strings.HasPrefix(sid, "S-1-5-21-") {
		switch sid[strings.LastIndexByte(sid, '-')+1:] {
		case "513", "514", "515":
			return true
		}
	}
	return false
}

func isAllow(t uint8) bool {
	switch t {
	case ACEAllowed, ACEAllowedObject, ACEAllowedCallback, ACEAllowedCallbackObject:
		return true
	}
	return false
}

// Trustee is a SID and, when known, its account or group name.
type Trustee struct {
	SID  string
	Name string // "" when unknown
}

func (t Trustee) String() string {
	if t.Name == "" {
		return t.SID
	}
	return t.Name + " (" + t.SID + ")"
}

// Grant is a trustee outside the allow-list that the DACL gives access to.
type Grant struct {
	Trustee
	Mask      uint32 // the union of the masks of its entries
	Inherited bool   // one of its entries comes from the directory
}

// ACLError is CheckDACL's refusal: what is wrong with the file's security
// descriptor, enough to name it and to say how to fix it.
type ACLError struct {
	NullDACL bool
	// Owner is the file's owner ("" SID when unknown); OwnerRefused says
	// it is a group that stands for many accounts, whose members may all
	// change the file's permissions.
	Owner        Trustee
	OwnerRefused bool
	// Grants are the trustees outside the allow-list, in DACL order.
	Grants []Grant
}

func (e *ACLError) Error() string {
	if e.NullDACL {
		return "has no DACL, so everyone has full access"
	}
	var parts []string
	if e.OwnerRefused {
		parts = append(parts, fmt.Sprintf("is owned by %s, a group whose members may all change its permissions", e.Owner))
	}
	switch len(e.Grants) {
	case 0:
	case 1:
		g := e.Grants[0]
		parts = append(parts, fmt.Sprintf("has an ACL entry that lets %s read or change it (access mask %#x)", g.Trustee, g.Mask))
	default:
		var who []string
		for _, g := range e.Grants {
			if g.Name == "" {
				who = append(who, fmt.Sprintf("%s (access mask %#x)", g.SID, g.Mask))
			} else {
				who = append(who, fmt.Sprintf("%s (%s, access mask %#x)", g.Name, g.SID, g.Mask))
			}
		}
		last := len(who) - 1
		parts = append(parts, fmt.Sprintf("has ACL entries that let %s and %s read or change it", strings.Join(who[:last], ", "), who[last]))
	}
	return strings.Join(parts, ", and ")
}

// Fix is what to run, from an elevated prompt, to repair path: takeown
// /a gives a file owned by a group of many to Administrators; icacls
// /remove:g drops explicit entries; an inherited entry (or no DACL at all)
// needs /inheritance:r and a protected DACL for SYSTEM and Administrators.
// SIDs are written with icacls' "*" so that
// the command works on Windows in any language.
func (e *ACLError) Fix(path string) string {
	var cmds []string
	if e.OwnerRefused {
		cmds = append(cmds, fmt.Sprintf(`takeown /f "%s" /a`, path))
	}
	var remove []string
	inherited := e.NullDACL
	for _, g := range e.Grants {
		remove = append(remove, "*"+g.SID)
		inherited = inherited || g.Inherited
	}
	switch {
	case inherited:
		cmd := fmt.Sprintf(`icacls "%s" /inheritance:r`, path)
		if len(remove) > 0 {
			cmd += " /remove:g " + strings.Join(remove, " ")
		}
		cmds = append(cmds, cmd+" /grant:r *"+SIDLocalSystem+":F *"+SIDAdministrators+":F")
	case len(remove) > 0:
		cmds = append(cmds, fmt.Sprintf(`icacls "%s" /remove:g %s`, path, strings.Join(remove, " ")))
	}
	return strings.Join(cmds, ", then ")
}

// CheckDACL is the rule for a key or password file on Windows, an
// allow-list: an entry of the DACL that grants any of the rights in mask
// must be for SYSTEM, Administrators, the file's owner (who may change its
// permissions anyway), or one of allowed (the agent's service SID and the
// account it runs as). Anyone else is refused: Everyone, Users,
// Authenticated Users, This Organization, Local account, SERVICE, Remote
// Desktop Users, Power Users, Domain Computers, another single user, ...
// owner and allowed are SIDs ("" when unknown); an owner that is a group
// of many accounts (manyAccounts) is refused, and such a group in allowed
// is ignored. nullDACL means the file has no DACL at all, which Windows
// treats as full access for everyone. The error is an *ACLError.
//
// The check is deliberately stricter than Windows' access check: an allow
// entry counts even when an earlier deny entry would cancel it, because a
// DACL that needs a deny to be safe is one edit away from leaking the file.
// Deny entries grant nothing, and entries that apply only to children
// (inherit-only) do not count.
func CheckDACL(owner string, allowed []string, aces []ACE, nullDACL bool, mask uint32) error {
	owner = strings.ToUpper(owner)
	e := &ACLError{Owner: Trustee{SID: owner, Name: wellKnownName(owner)}}
	if nullDACL {
		e.NullDACL = true
		return e
	}
	ok := map[string]bool{SIDLocalSystem: true, SIDAdministrators: true}
	if owner != "" {
		if manyAccounts(owner) {
			e.OwnerRefused = true
		} else {
			ok[owner] = true
			ok[sidOwnerRights] = true
		}
	}
	for _, s := range allowed {
		if s = strings.ToUpper(s); s != "" && !manyAccounts(s) {
			ok[s] = true
		}
	}
	seen := map[string]int{}
	for _, a := range aces {
		if !isAllow(a.Type) || a.Flags&ACEInheritOnly != 0 || a.Mask&mask == 0 {
			continue
		}
		sid := strings.ToUpper(a.SID)
		if ok[sid] {
			continue
		}
		inherited := a.Flags&ACEInherited != 0
		if i, dup := seen[sid]; dup {
			e.Grants[i].Mask |= a.Mask
			e.Grants[i].Inherited = e.Grants[i].Inherited || inherited
			continue
		}
		seen[sid] = len(e.Grants)
		e.Grants = append(e.Grants, Grant{Trustee: Trustee{SID: sid, Name: wellKnownName(sid)}, Mask: a.Mask, Inherited: inherited})
	}
	if !e.OwnerRefused && len(e.Grants) == 0 {
		return nil
	}
	return e
}

// refusal is the whole message for a file CheckDACL refused: the path,
// what is wrong, who may have access (runAs names the account the agent
// runs as; "" when unknown) and the commands that fix it.
func refusal(path string, e *ACLError, runAs string) error {
	owner := "the file's owner"
	if e.Owner.SID != "" && !e.OwnerRefused {
		owner += " (" + e.Owner.String() + ")"
	}
	who := "the account the agent runs as"
	if runAs != "" {
		who += " (" + runAs + ")"
	}
	return fmt.Errorf(`%s %w; only SYSTEM, Administrators, %s, NT SERVICE\%s and %s may have access; to fix it, run from an elevated prompt: %s`,
		path, e, owner, ServiceName, who, e.Fix(path))
}

// PrivateSDDL is the security descriptor a new key file gets on Windows:
// owned by userSID (the account that runs keygen or enrol, even from an
// elevated prompt, where the default owner may be Administrators), with a
// protected DACL (nothing inherited from the directory) with full control
// for SYSTEM, the Administrators group and userSID, and nothing for anyone
// else. The owner matters: CheckDACL allows an entry for the owner, so the
// service (LocalSystem) accepts the key that an administrator made.
func PrivateSDDL(userSID string) string {
	return "O:" + userSID + "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;" + userSID + ")"
}

// PrivateDirSDDL is PrivateSDDL for a directory (MakePrivateDir, on
// Windows): the same owner and entries, also inherited by the files and
// folders created in it (OI, CI), so that they are private too.
func PrivateDirSDDL(userSID string) string {
	return "O:" + userSID + "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;" + userSID + ")"
}
