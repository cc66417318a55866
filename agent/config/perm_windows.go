package config

import (
	"fmt"
	"os"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
)

// checkPasswordMode refuses an Orthanc.PasswordFile that is not a regular
// file or whose DACL lets anyone but SYSTEM, Administrators, the file's
// owner, the agent's service SID or the account the agent runs as read or
// change it (see agentkey.CheckDACL). Windows mode bits say nothing about
// who may read a file. The ACL is read by path, so
// unlike the Unix check the second call (on the opened file) re-reads the
// path's ACL rather than the opened handle's.
func checkPasswordMode(path string, fi os.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	return agentkey.CheckFileACL(path, agentkey.ReadAccess|agentkey.WriteAccess)
}
