package config

import (
	"os"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/winacl"
)

// loosen gives path, on Windows, the access list that stands for mode
// (mode bits mean nothing there): read for Everyone when others may read
// (0o004), else read for Users (BUILTIN\Users, S-1-5-32-545) when the group
// may, on top of SYSTEM, Administrators and the owner. It reports whether
// the file system kept that entry (wine keeps Everyone's, not Users').
func loosen(t *testing.T, path string, mode os.FileMode) bool {
	t.Helper()
	base := "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;OW)"
	switch {
	case mode&0o004 != 0:
		return winacl.SetKept(t, path, base+"(A;;FR;;;WD)", "S-1-1-0")
	case mode&0o040 != 0:
		return winacl.SetKept(t, path, base+"(A;;FR;;;BU)", "S-1-5-32-545")
	}
	winacl.Set(t, path, base)
	return true
}
