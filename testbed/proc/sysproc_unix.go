//go:build unix && !linux

package proc

import "syscall"

// sysProcAttr: only Linux offers Pdeathsig; elsewhere rely on Stop.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
