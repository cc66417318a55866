package orthancproc

import "syscall"

// sysProcAttr puts Orthanc in its own process group (so Stop can signal the
// whole group) and asks the kernel to SIGKILL it if the process that started
// it dies, so a crashed test never leaves Orthanc running.
//
// Pdeathsig fires when the starting OS thread exits; the Go runtime keeps its
// threads alive unless a goroutine exits while locked to one, which this
// package never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
