package winacl

import (
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/windows"
)

// Set gives path a protected DACL written as SDDL ("D:P(A;;FA;;;SY)…"),
// failing t when Windows refuses it.
func Set(t testing.TB, path, sddl string) {
	t.Helper()
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		t.Fatal(err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		t.Fatal(err)
	}
	if err := windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil); err != nil {
		t.Fatal(err)
	}
}

// SetKept is Set, then reports whether path's DACL, read back, still holds
// an allow entry for sid. Windows keeps every entry. Wine keeps a file's
// DACL only as its Unix mode bits: read back, it is SYSTEM, the owner and
// Everyone (from the "other" bits), and an entry for any other account or
// group is gone; a test of such an entry skips there with Dropped.
func SetKept(t testing.TB, path, sddl, sid string) bool {
	t.Helper()
	Set(t, path, sddl)
	sd, err := windows.GetNamedSecurityInfo(path, windows.SE_FILE_OBJECT, windows.DACL_SECURITY_INFORMATION)
	if err != nil {
		t.Fatal(err)
	}
	sid = strings.ToUpper(sid)
	if s, err := windows.StringToSid(sid); err == nil {
		sid = s.String() // "WD" and the like as S-1-…
	}
	dacl, _, err := sd.DACL()
	if err != nil || dacl == nil {
		return false
	}
	for i := uint32(0); i < uint32(dacl.AceCount); i++ {
		var ace *windows.ACCESS_ALLOWED_ACE
		if err := windows.GetAce(dacl, i, &ace); err != nil {
			t.Fatal(err)
		}
		if ace.Header.AceType == windows.ACCESS_ALLOWED_ACE_TYPE &&
			(*windows.SID)(unsafe.Pointer(&ace.SidStart)).String() == sid {
			return true
		}
	}
	return false
}
