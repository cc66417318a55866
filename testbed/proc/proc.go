// Package proc supervises the test bed's child processes (Orthanc, the
// broker, the agent): each runs in its own process group, the kernel kills
// it if the test process dies (Linux), and Stop signals the whole group,
// then SIGKILLs it after a grace period. Written once for every harness.
package proc

import (
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// ErrKilled is returned by Stop when the group had to be SIGKILLed because
// it outlived the grace period.
var ErrKilled = errors.New("proc: killed after the grace period")

// killWait bounds the wait for an exit after SIGKILL.
const killWait = 5 * time.Second

// Process is one started child.
type Process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done is closed
}

// Start starts cmd in a process group of its own and reaps it in the
// background. cmd.SysProcAttr is overwritten.
func Start(cmd *exec.Cmd) (*Process, error) {
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id (also its process group id).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the exit status once Done is closed (nil for a clean exit, and
// nil while still running).
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Stop sends sig to the process group and waits up to grace for the exit,
// then SIGKILLs the group (returning ErrKilled). Stopping a process that has
// exited is a no-op.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	pid := p.Pid()
	_ = syscall.Kill(-pid, sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	select {
	case <-p.done:
		return ErrKilled
	case <-time.After(killWait):
		return fmt.Errorf("proc: pid %d did not exit after SIGKILL", pid)
	}
}
