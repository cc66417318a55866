package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
)

// TestServiceRunsAgent: the real "run" command under serveService, as the
// Windows service runs it (output into an event log): Running is reported
// only once the configuration is loaded, ParamChange reloads, Stop ends
// it cleanly; a refused configuration never reports Running and leaves
// an error event naming the field.
func TestServiceRunsAgent(t *testing.T) {
	orth := agenttest.NewOrthanc(t, "", "")
	tests := []struct {
		name    string
		env     map[string]string
		running bool
		code    int
		want    []string // events, as "LEVEL/ID" prefix + substring
	}{
		{name: "runs and stops", running: true, code: exitOK,
			want: []string{`I/1 {`, `"msg":"agent started"`, `"msg":"configuration reloaded"`, `"msg":"agent stopped"`}},
		{name: "refused configuration", env: map[string]string{"AGENT_REFRESH_MARGIN": "soon"}, code: exitFailure,
			want: []string{"E/3 agent: config: RefreshMargin"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t, orth.URL, "", "", nil)
			events := &fakeEvents{}
			w := newEventWriter(events)
			rec := newRecorder()
			cmds := make(chan svcCmd)
			codec := make(chan int, 1)
			go func() {
				codec <- serveService(cmds, rec.report, 10*time.Second, func(ctx context.Context, reload <-chan struct{}, started func()) int {
					c := &cli{stdout: w, stderr: w, env: func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok },
						reload: reload, onStarted: started}
					return c.main(ctx, []string{"run", "--config", s.cfg})
				})
			}()
			rec.wait(t, svcStartPending)
			if tc.running {
				rec.wait(t, svcRunning)
				waitFor(t, 10*time.Second, func() bool { return orth.Bearer("my-google") != "" })
				cmds <- svcParamChange
				waitFor(t, 10*time.Second, func() bool { return strings.Contains(events.text(), `"msg":"configuration reloaded"`) })
				cmds <- svcStop
				rec.wait(t, svcStopPending)
			}
			select {
			case code := <-codec:
				if code != tc.code {
					t.Errorf("exit %d, want %d", code, tc.code)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("the service did not end")
			}
			w.Close()
			all := events.text()
			for _, want := range tc.want {
				if !strings.Contains(all, want) {
					t.Errorf("events lack %q:\n%s", want, all)
				}
			}
			// Nothing may be logged once the run has ended: the service
			// closes its event log then.
			if tc.running && !strings.HasSuffix(all, `"msg":"agent stopped"}`) {
				t.Errorf("the last event is not \"agent stopped\":\n%s", all)
			}
			_, _, issued := s.broker.Snapshot()
			for _, tok := range issued {
				if strings.Contains(all, tok) {
					t.Fatal("a token is in the event log")
				}
			}
			key, _ := os.ReadFile(s.key)
			if strings.Contains(all, strings.Split(string(key), "\n")[1]) {
				t.Fatal("the key is in the event log")
			}
		})
	}
}
