package stack

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/proc"
)

// process is one restartable child (broker or agent) whose stdout and
// stderr are appended to a log file; testbed/proc supervises each run.
type process struct {
	name    string
	path    string
	args    []string
	env     []string
	logPath string

	mu     sync.Mutex
	run    *proc.Process // the current or last run
	starts int
}

// start launches the process; it does not wait for readiness.
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.run != nil && !p.run.Exited() {
		return fmt.Errorf("stack: %s is already running (pid %d)", p.name, p.run.Pid())
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("stack: %s log: %w", p.name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	p.starts++
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = logf, logf
	run, err := proc.Start(cmd)
	if err != nil {
		return fmt.Errorf("stack: start %s: %w", p.name, err)
	}
	p.run = run
	return nil
}

func (p *process) current() *proc.Process {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.run
}

// exited returns a channel closed when the current run ends (nil if never started).
func (p *process) exited() <-chan struct{} {
	if r := p.current(); r != nil {
		return r.Done()
	}
	return nil
}

// running reports whether the process is alive.
func (p *process) running() bool {
	r := p.current()
	return r != nil && !r.Exited()
}

// pid is the current process id, 0 when not running.
func (p *process) pid() int {
	if r := p.current(); r != nil && !r.Exited() {
		return r.Pid()
	}
	return 0
}

// exitErr is the last run's exit status (nil while running or after a clean exit).
func (p *process) exitErr() error {
	if r := p.current(); r != nil {
		return r.Err()
	}
	return nil
}

// stop sends sig to the process group and waits up to grace for the exit,
// then sends SIGKILL. Stopping a process that is not running is a no-op.
func (p *process) stop(sig syscall.Signal, grace time.Duration) error {
	r := p.current()
	if r == nil {
		return nil
	}
	if err := r.Stop(sig, grace); err != nil && !errors.Is(err, proc.ErrKilled) {
		return fmt.Errorf("stack: %s: %w", p.name, err)
	}
	return nil
}

var errNotRunning = errors.New("process exited")
