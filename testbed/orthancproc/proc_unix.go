//go:build unix && !linux

package orthancproc

import "syscall"

// sysProcAttr puts Orthanc in its own process group so Stop can signal the
// whole group. Only Linux offers Pdeathsig; elsewhere rely on Stop.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
