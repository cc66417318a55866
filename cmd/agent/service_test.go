package main

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder collects the states serveService reports.
type recorder struct {
	mu     sync.Mutex
	states []svcState
	ch     chan svcState
}

func newRecorder() *recorder { return &recorder{ch: make(chan svcState, 16)} }

func (r *recorder) report(s svcState) {
	r.mu.Lock()
	r.states = append(r.states, s)
	r.mu.Unlock()
	r.ch <- s
}

func (r *recorder) wait(t *testing.T, want svcState) {
	t.Helper()
	select {
	case s := <-r.ch:
		if s != want {
			t.Fatalf("reported %v, want %v", s, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no %v reported", want)
	}
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprint(r.states)
}

// TestServeService: the service manager's view of the agent: StartPending
// at once, Running once the agent has started, StopPending on Stop or
// Shutdown, then the agent's exit code; ParamChange reloads.
func TestServeService(t *testing.T) {
	tests := []struct {
		name string
		// body is the agent; it gets a channel to report reloads on.
		body   func(ctx context.Context, reload <-chan struct{}, started func(), reloaded chan<- struct{}) int
		cmds   []svcCmd // sent after Running (or at once if the body never starts)
		code   int
		states string
	}{
		{name: "stop", body: untilCancelled(0), cmds: []svcCmd{svcStop},
			code: exitOK, states: "[StartPending Running StopPending]"},
		{name: "shutdown", body: untilCancelled(0), cmds: []svcCmd{svcShutdown},
			code: exitOK, states: "[StartPending Running StopPending]"},
		{name: "interrogate, unknown control, then stop", body: untilCancelled(0), cmds: []svcCmd{svcInterrogate, svcOther, svcStop},
			code: exitOK, states: "[StartPending Running Running StopPending]"},
		{name: "paramchange reloads", body: untilCancelled(0), cmds: []svcCmd{svcParamChange, svcStop},
			code: exitOK, states: "[StartPending Running StopPending]"},
		{name: "exit code after stop", body: untilCancelled(exitFailure), cmds: []svcCmd{svcStop},
			code: exitFailure, states: "[StartPending Running StopPending]"},
		{name: "refused configuration never runs", body: func(context.Context, <-chan struct{}, func(), chan<- struct{}) int { return exitFailure },
			code: exitFailure, states: "[StartPending]"},
		{name: "fails while running", body: func(ctx context.Context, _ <-chan struct{}, started func(), _ chan<- struct{}) int {
			started()
			return exitFailure
		}, code: exitFailure},
		{name: "stop timeout", body: func(ctx context.Context, _ <-chan struct{}, started func(), _ chan<- struct{}) int {
			started()
			time.Sleep(2 * time.Second) // ignores its context
			return exitOK
		}, cmds: []svcCmd{svcStop}, code: exitFailure, states: "[StartPending Running StopPending]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			cmds := make(chan svcCmd)
			reloaded := make(chan struct{}, 4)
			codec := make(chan int, 1)
			go func() {
				codec <- serveService(cmds, rec.report, 200*time.Millisecond,
					func(ctx context.Context, reload <-chan struct{}, started func()) int {
						return tc.body(ctx, reload, started, reloaded)
					})
			}()
			rec.wait(t, svcStartPending)
			if len(tc.cmds) > 0 {
				rec.wait(t, svcRunning)
			}
			for _, c := range tc.cmds {
				cmds <- c
				if c == svcParamChange {
					select {
					case <-reloaded:
					case <-time.After(5 * time.Second):
						t.Fatal("ParamChange did not reach the agent as a reload")
					}
				}
			}
			select {
			case code := <-codec:
				if code != tc.code {
					t.Errorf("exit %d, want %d", code, tc.code)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("serveService did not return")
			}
			if got := rec.all(); tc.states != "" && got != tc.states {
				t.Errorf("states %s, want %s", got, tc.states)
			}
		})
	}
}

// untilCancelled is an agent that starts, passes reloads on, and exits
// with code when its context ends.
func untilCancelled(code int) func(ctx context.Context, reload <-chan struct{}, started func(), reloaded chan<- struct{}) int {
	return func(ctx context.Context, reload <-chan struct{}, started func(), reloaded chan<- struct{}) int {
		started()
		started() // a second call is harmless
		for {
			select {
			case <-ctx.Done():
				return code
			case <-reload:
				reloaded <- struct{}{}
			}
		}
	}
}

// fakeEvents is an event log.
type fakeEvents struct {
	mu     sync.Mutex
	events []string // "LEVEL/ID text"
}

func (f *fakeEvents) add(level string, eid uint32, msg string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, fmt.Sprintf("%s/%d %s", level, eid, msg))
	return nil
}

// text is the log so far, one event per line.
func (f *fakeEvents) text() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.events, "\n")
}

func (f *fakeEvents) Info(eid uint32, msg string) error    { return f.add("I", eid, msg) }
func (f *fakeEvents) Warning(eid uint32, msg string) error { return f.add("W", eid, msg) }
func (f *fakeEvents) Error(eid uint32, msg string) error   { return f.add("E", eid, msg) }

func TestEventWriter(t *testing.T) {
	long := `{"level":"INFO","msg":"` + strings.Repeat("x", maxEventText) + `"}`
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{name: "levels", writes: []string{
			`{"time":"t","level":"INFO","msg":"agent started"}` + "\n",
			`{"level":"DEBUG","msg":"d"}` + "\n",
			`{"level":"WARN","msg":"w"}` + "\n",
			`{"level":"ERROR","msg":"e"}` + "\n",
			`{"level":"INFO+2","msg":"i2"}` + "\n",
			`{"level":"ERROR-1","msg":"e1"}` + "\n",
		}, want: []string{
			`I/1 {"time":"t","level":"INFO","msg":"agent started"}`,
			`I/1 {"level":"DEBUG","msg":"d"}`,
			`W/2 {"level":"WARN","msg":"w"}`,
			`E/3 {"level":"ERROR","msg":"e"}`,
			`I/1 {"level":"INFO+2","msg":"i2"}`,
			`E/3 {"level":"ERROR-1","msg":"e1"}`,
		}},
		{name: "plain text is an error", writes: []string{"agent: config: Broker.KeyFile: is required\n"},
			want: []string{"E/3 agent: config: Broker.KeyFile: is required"}},
		{name: "JSON without a level is an error", writes: []string{`{"msg":"x"}` + "\n"}, want: []string{`E/3 {"msg":"x"}`}},
		{name: "split writes, CRLF, blank lines", writes: []string{`{"level":"IN`, `FO","msg":"a"}` + "\r\n\n", "  \n", `{"level":"WARN"}` + "\n"},
			want: []string{`I/1 {"level":"INFO","msg":"a"}`, `W/2 {"level":"WARN"}`}},
		{name: "two lines in one write", writes: []string{"one\ntwo\n"}, want: []string{"E/3 one", "E/3 two"}},
		{name: "last line without newline on Close", writes: []string{"tail"}, want: []string{"E/3 tail"}},
		{name: "long line clipped", writes: []string{long + "\n"}, want: []string{"E/3 " + long[:maxEventText] + "…"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeEvents{}
			w := newEventWriter(f)
			for _, s := range tc.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			w.Close()
			if got, want := f.text(), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("events:\n%.300s\nwant:\n%.300s", got, want)
			}
		})
	}
}

// TestServiceCommand: "service" checks its arguments everywhere and, off
// Windows, says it is for Windows.
func TestServiceCommand(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("would talk to the real service manager")
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"service"}, exitUsage, "usage: agent service install"},
		{[]string{"service", "start"}, exitUsage, `unknown subcommand "start"`},
		{[]string{"service", "install", "extra"}, exitUsage, "unexpected argument"},
		{[]string{"service", "install", "--bogus"}, exitUsage, "flag provided but not defined"},
		{[]string{"service", "install", "--config", "agent.json"}, exitUsage, "only on Windows"},
		{[]string{"service", "uninstall"}, exitUsage, "only on Windows"},
	}
	for _, tc := range tests {
		code, out, errs := runEnrolCLI(t, nil, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) || out != "" {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errs, tc.code, tc.want)
		}
	}
	code, out, _ := runEnrolCLI(t, nil, "help")
	for _, w := range []string{"enrol   --config FILE", "service install --config FILE", "service uninstall"} {
		if code != exitOK || !strings.Contains(out, w) {
			t.Errorf("usage lacks %q", w)
		}
	}
}
