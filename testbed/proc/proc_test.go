package proc

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStop(t *testing.T) {
	for _, tc := range []struct {
		name    string
		script  string
		wantErr error
	}{
		{"exits on SIGTERM", "sleep 60", nil},
		{"ignores SIGTERM", "trap '' TERM; sleep 60 & wait", ErrKilled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Start(exec.Command("/bin/sh", "-c", tc.script))
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // let the shell install its trap
			if err := p.Stop(syscall.SIGTERM, 300*time.Millisecond); !errors.Is(err, tc.wantErr) {
				t.Fatalf("Stop = %v, want %v", err, tc.wantErr)
			}
			if !p.Exited() {
				t.Fatal("process still running after Stop")
			}
			// The whole group goes, not just its leader: signal 0 to it
			// fails once the orphaned members have been reaped.
			deadline := time.Now().Add(3 * time.Second)
			for syscall.Kill(-p.Pid(), 0) == nil {
				if time.Now().After(deadline) {
					t.Fatal("process group still exists 3 s after Stop")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := p.Stop(syscall.SIGTERM, time.Second); err != nil {
				t.Fatalf("second Stop = %v, want nil", err)
			}
		})
	}
}

func TestExitStatus(t *testing.T) {
	p, err := Start(exec.Command("/bin/sh", "-c", "exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	var ee *exec.ExitError
	if !errors.As(p.Err(), &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Err = %v, want exit status 3", p.Err())
	}
}

// The child is the leader of its own group, not in the test's group.
func TestOwnProcessGroup(t *testing.T) {
	p, err := Start(exec.Command("/bin/sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(syscall.SIGKILL, 0)
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid()) + "/stat")
	if err != nil {
		t.Skip("no /proc here")
	}
	// Fields after the "(comm)" part: state ppid pgrp ...
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if f[2] != strconv.Itoa(p.Pid()) {
		t.Fatalf("pgrp %s, want %d", f[2], p.Pid())
	}
}
