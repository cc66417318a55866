package agentkey

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/windows"
)

// createPrivate creates path for writing, owned by the current user, with a
// protected DACL granting only SYSTEM, Administrators and that user
// (PrivateSDDL). The DACL
// is given to CreateFile itself, so there is no moment at which the file
// exists with the directory's inherited permissions; CREATE_NEW fails if
// anything already has the name.
func createPrivate(path string) (*os.File, error) {
	sid, err := currentUserSID()
	if err != nil {
		return nil, fmt.Errorf("%s: finding the current user: %w", path, err)
	}
	sd, err := windows.SecurityDescriptorFromString(PrivateSDDL(sid))
	if err != nil {
		return nil, fmt.Errorf("%s: building the key's ACL: %w", path, err)
	}
	sa := &windows.SecurityAttributes{Length: uint32(unsafe.Sizeof(windows.SecurityAttributes{})), SecurityDescriptor: sd}
	name, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	h, err := windows.CreateFile(name, windows.GENERIC_WRITE, 0, sa, windows.CREATE_NEW, windows.FILE_ATTRIBUTE_NORMAL, 0)
	runtime.KeepAlive(sd)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(h), path), nil
}

// MkdirPrivate creates the directory path, failing if anything already
// has the name, with the owner and protected DACL of PrivateDirSDDL (in
// place of mode 0700): the current user owns it; SYSTEM, Administrators and
// the user have full control of it and of what is created in it; nothing
// is inherited from its parent. The DACL is given to CreateDirectory
// itself, so the directory never has its parent's permissions.
func MkdirPrivate(path string) error {
	sid, err := currentUserSID()
	if err != nil {
		return fmt.Errorf("%s: finding the current user: %w", path, err)
	}
	sd, err := windows.SecurityDescriptorFromString(PrivateDirSDDL(sid))
	if err != nil {
		return fmt.Errorf("%s: building its ACL: %w", path, err)
	}
	sa := &windows.SecurityAttributes{Length: uint32(unsafe.Sizeof(windows.SecurityAttributes{})), SecurityDescriptor: sd}
	name, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return &fs.PathError{Op: "mkdir", Path: path, Err: err}
	}
	err = windows.CreateDirectory(name, sa)
	runtime.KeepAlive(sd)
	if err != nil {
		return &fs.PathError{Op: "mkdir", Path: path, Err: err}
	}
	return nil
}

func currentUserSID() (string, error) {
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return "", err
	}
	return tu.User.Sid.String(), nil
}

// checkPrivate refuses a key file whose DACL lets anyone but SYSTEM,
// Administrators, its owner, the agent's service SID or the account the
// agent runs as read or change it (see CheckDACL). Mode bits mean nothing
// on Windows.
func checkPrivate(path string, _ fs.FileInfo) error {
	return CheckFileACL(path, ReadAccess|WriteAccess)
}

// CheckFileACL reads path's owner and DACL and refuses them (see
// CheckDACL) with a message naming each trustee outside the allow-list,
// with its account name when Windows knows it, and the commands that fix
// the file. Besides SYSTEM, Administrators and the owner, it allows the
// agent's service SID (NT SERVICE\orthanc-gcp-agent) and the account this
// process runs as.
func CheckFileACL(path string, mask uint32) error {
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.OWNER_SECURITY_INFORMATION|windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return fmt.Errorf("%s: reading its ACL: %w", path, err)
	}
	return checkDescriptor(path, sd, mask)
}

// checkDescriptor is CheckFileACL on a security descriptor already read:
// the part the tests drive with descriptors made from SDDL, because wine
// keeps a file's DACL only as Unix mode bits (SYSTEM, the owner and
// Everyone), so most entries cannot be set on a file there.
func checkDescriptor(path string, sd *windows.SECURITY_DESCRIPTOR, mask uint32) error {
	owner, aces, null, err := descriptorEntries(sd)
	if err != nil {
		return fmt.Errorf("%s: reading its ACL: %w", path, err)
	}
	runAs, _ := currentUserSID() // "" if unknown: then only the rest is allowed
	err = CheckDACL(owner, []string{ServiceSID(ServiceName), runAs}, aces, null, mask)
	var e *ACLError
	if !errors.As(err, &e) {
		return err
	}
	e.Owner.Name = accountName(e.Owner)
	for i := range e.Grants {
		e.Grants[i].Name = accountName(e.Grants[i].Trustee)
	}
	if runAs != "" {
		runAs = Trustee{SID: runAs, Name: accountName(Trustee{SID: runAs})}.String()
	}
	return refusal(path, e, runAs)
}

// accountName is t's name as Windows gives it (DOMAIN\account, in the
// system's language), else t.Name (from CheckDACL's table, "" if none).
func accountName(t Trustee) string {
	if t.SID == "" {
		return ""
	}
	sid, err := windows.StringToSid(t.SID)
	if err == nil {
		if account, domain, _, err := sid.LookupAccount(""); err == nil && account != "" {
			if domain == "" {
				return account
			}
			return domain + `\` + account
		}
	}
	return t.Name
}

// descriptorEntries returns sd's owner SID ("" if it has none) and DACL
// entries; null reports a missing or NULL DACL (full access for everyone).
func descriptorEntries(sd *windows.SECURITY_DESCRIPTOR) (owner string, aces []ACE, null bool, err error) {
	defer runtime.KeepAlive(sd)
	if o, _, err := sd.Owner(); err == nil && o != nil {
		owner = o.String()
	}
	dacl, _, err := sd.DACL()
	if err == windows.ERROR_OBJECT_NOT_FOUND {
		return owner, nil, true, nil
	}
	if err != nil {
		return "", nil, false, err
	}
	if dacl == nil {
		return owner, nil, true, nil
	}
	for i := uint32(0); i < uint32(dacl.AceCount); i++ {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			return "", nil, false, err
		}
		e := ACE{Type: ace.Header.AceType, Flags: ace.Header.AceFlags, Mask: uint32(ace.Mask)}
		sid := unsafe.Pointer(&ace.SidStart)
		switch e.Type {
		case ACEAllowedObject, 0x6 /* denied object */, ACEAllowedCallbackObject, 0xC /* denied callback object */ :
			// Object ACEs: Flags, then up to two GUIDs, then the SID.
			flags := *(*uint32)(sid)
			off := uintptr(4)
			if flags&0x1 != 0 { // ACE_OBJECT_TYPE_PRESENT
				off += 16
			}
			if flags&0x2 != 0 { // ACE_INHERITED_OBJECT_TYPE_PRESENT
				off += 16
			}
			sid = unsafe.Add(sid, off)
		}
		e.SID = (*windows.SID)(sid).String()
		aces = append(aces, e)
	}
	return owner, aces, false, nil
}
