package agentkey

import (
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/windows"
)

// createPrivate creates path for writing with a protected DACL granting
// only SYSTEM, Administrators and the current user (PrivateSDDL). The DACL
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

func currentUserSID() (string, error) {
	tu, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return "", err
	}
	return tu.User.Sid.String(), nil
}

// checkPrivate refuses a key file whose DACL lets "others" (Everyone,
// Authenticated Users, BUILTIN\Users, …) read or change it. Mode bits mean
// nothing on Windows.
func checkPrivate(path string, _ fs.FileInfo) error {
	return CheckFileACL(path, ReadAccess|WriteAccess)
}

// CheckFileACL reads path's DACL and refuses it, with a message naming the
// group and the icacls command that fixes it, if it grants any right in
// mask to a group that stands for "others" (see CheckDACL).
func CheckFileACL(path string, mask uint32) error {
	aces, null, err := fileACEs(path)
	if err != nil {
		return fmt.Errorf("%s: reading its ACL: %w", path, err)
	}
	if err := CheckDACL(aces, null, mask); err != nil {
		return fmt.Errorf("%s %v; allow only SYSTEM, Administrators and the agent's account (%s)", path, err, ACLFixHint(path))
	}
	return nil
}

// fileACEs returns path's DACL entries; null reports a missing or NULL
// DACL (full access for everyone).
func fileACEs(path string) (aces []ACE, null bool, err error) {
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		return nil, false, err
	}
	defer runtime.KeepAlive(sd)
	dacl, _, err := sd.DACL()
	if err == windows.ERROR_OBJECT_NOT_FOUND {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	if dacl == nil {
		return nil, true, nil
	}
	for i := uint32(0); i < uint32(dacl.AceCount); i++ {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			return nil, false, err
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
	return aces, false, nil
}
