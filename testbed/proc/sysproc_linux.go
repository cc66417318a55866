package proc

import "syscall"

// sysProcAttr: Setpgid so Stop can signal the whole group; Pdeathsig so the
// kernel kills the child when the test process dies and nothing is left
// behind. Pdeathsig fires when the forking OS thread exits; the Go runtime
// keeps its threads unless a goroutine exits while locked to one, which the
// test bed never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
