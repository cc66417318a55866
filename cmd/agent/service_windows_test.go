package main

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/windows/svc"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
)

// TestHandlerExecute drives the Windows service handler (svc.Handler, what
// svc.Run calls once the service manager has started the process) with
// fake request and status channels, running the real "run" command into a
// fake event log: StartPending, then Running with Stop, Shutdown and
// ParamChange accepted; Interrogate answers the current status;
// ParamChange reloads; a request the agent does not act on (Pause) is
// ignored; Stop or Shutdown report StopPending and end it with exit code
// 0; a refused configuration ends it with a service-specific exit code.
// (Under wine the service manager itself cannot start the agent: see
// docs/agent.md.)
func TestHandlerExecute(t *testing.T) {
	orth := agenttest.NewOrthanc(t, "", "")
	running := svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown | svc.AcceptParamChange}
	tests := []struct {
		name    string
		end     svc.Cmd // 0: the agent ends by itself
		badConf bool
	}{
		{name: "stop", end: svc.Stop},
		{name: "shutdown", end: svc.Shutdown},
		{name: "refused configuration", badConf: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t, orth.URL, "", "", nil)
			if tc.badConf {
				s = newSetup(t, orth.URL, "", "", map[string]any{"RefreshMargin": "soon"})
			}
			events := &fakeEvents{}
			w := newEventWriter(events)
			h := &handler{args: []string{"run", "--config", s.cfg}, out: w}
			reqs := make(chan svc.ChangeRequest)
			statuses := make(chan svc.Status, 16)
			type result struct {
				specific bool
				code     uint32
			}
			done := make(chan result, 1)
			go func() {
				specific, code := h.Execute(nil, reqs, statuses)
				done <- result{specific, code}
			}()
			next := func() svc.Status {
				t.Helper()
				select {
				case st := <-statuses:
					return st
				case <-time.After(10 * time.Second):
					t.Fatal("no status reported")
				}
				return svc.Status{}
			}
			if st := next(); st.State != svc.StartPending || st.WaitHint == 0 {
				t.Fatalf("first status %+v, want StartPending with a wait hint", st)
			}
			if !tc.badConf {
				if st := next(); st != running {
					t.Fatalf("status %+v, want %+v", st, running)
				}
				reqs <- svc.ChangeRequest{Cmd: svc.Interrogate}
				if st := next(); st != running {
					t.Fatalf("Interrogate answered %+v, want %+v", st, running)
				}
				waitFor(t, 10*time.Second, func() bool { return orth.Bearer("my-google") != "" })
				reqs <- svc.ChangeRequest{Cmd: svc.Pause}
				reqs <- svc.ChangeRequest{Cmd: svc.ParamChange}
				waitFor(t, 10*time.Second, func() bool { return strings.Contains(events.text(), `"msg":"configuration reloaded"`) })
				reqs <- svc.ChangeRequest{Cmd: tc.end}
				if st := next(); st.State != svc.StopPending || st.WaitHint != uint32(serviceStopTimeout/time.Millisecond) {
					t.Fatalf("after %v: status %+v, want StopPending with a %v wait hint", tc.end, st, serviceStopTimeout)
				}
			}
			var got result
			select {
			case got = <-done:
			case <-time.After(serviceStopTimeout + 5*time.Second):
				t.Fatal("Execute did not return")
			}
			want := result{}
			if tc.badConf {
				want = result{true, exitFailure}
			}
			if got != want || h.code != int(want.code) {
				t.Errorf("Execute = %+v (code %d), want %+v", got, h.code, want)
			}
			select {
			case st := <-statuses:
				t.Errorf("status %+v after the end", st)
			default:
			}
			w.Close()
			all := events.text()
			for _, want := range map[bool][]string{
				false: {`"msg":"agent started"`, `"msg":"configuration reloaded"`, `"msg":"agent stopped"`},
				true:  {"E/3 agent: config: RefreshMargin"},
			}[tc.badConf] {
				if !strings.Contains(all, want) {
					t.Errorf("events lack %q:\n%s", want, all)
				}
			}
		})
	}
}
