package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/config"
)

const serviceSupported = true

// isWindowsService reports whether the service control manager started
// this process.
func isWindowsService() bool {
	ok, err := svc.IsWindowsService()
	return err == nil && ok
}

// serviceMain runs the command line the service was registered with
// ("run --config FILE") under the service control manager. Everything the
// agent would print goes to the Application event log, source
// "orthanc-gcp-agent", one event per log line.
func serviceMain(args []string) int {
	elog, err := eventlog.Open(serviceName)
	if err != nil {
		return exitFailure
	}
	defer elog.Close()
	w := newEventWriter(elog)
	defer w.Close()
	h := &handler{args: args, out: w}
	if err := svc.Run(serviceName, h); err != nil {
		fmt.Fprintf(w, "agent: service: %v\n", err)
		return exitFailure
	}
	return h.code
}

type handler struct {
	args []string
	out  io.Writer
	code int
}

// Execute is svc.Handler: it maps the service manager's requests and
// statuses onto serveService.
func (h *handler) Execute(_ []string, r <-chan svc.ChangeRequest, s chan<- svc.Status) (bool, uint32) {
	cmds := make(chan svcCmd)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		for {
			var cr svc.ChangeRequest
			select {
			case <-quit:
				return
			case cr = <-r:
			}
			var cmd svcCmd
			switch cr.Cmd {
			case svc.Interrogate:
				cmd = svcInterrogate
			case svc.Stop:
				cmd = svcStop
			case svc.Shutdown:
				cmd = svcShutdown
			case svc.ParamChange:
				cmd = svcParamChange
			default:
				continue
			}
			select {
			case cmds <- cmd:
			case <-quit:
				return
			}
		}
	}()
	report := func(st svcState) { s <- winStatus(st) }
	body := func(ctx context.Context, reload <-chan struct{}, started func()) int {
		c := &cli{stdout: h.out, stderr: h.out, env: os.LookupEnv, reload: reload, onStarted: started}
		return c.main(ctx, h.args)
	}
	h.code = serveService(cmds, report, serviceStopTimeout, body)
	if h.code != exitOK {
		return true, uint32(h.code) // service-specific exit code
	}
	return false, 0
}

func winStatus(st svcState) svc.Status {
	switch st {
	case svcRunning:
		return svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown | svc.AcceptParamChange}
	case svcStopPending:
		return svc.Status{State: svc.StopPending, WaitHint: uint32(serviceStopTimeout / time.Millisecond)}
	}
	return svc.Status{State: svc.StartPending, WaitHint: 30_000}
}

// installService registers the service: automatic start, LocalSystem,
// "run --config ABS", restarted by the service manager 5 s after a
// failure (like the systemd unit's Restart=on-failure), and the event log
// source its logs go to.
func (c *cli) installService(path string) int {
	abs, err := filepath.Abs(path)
	if err != nil {
		fmt.Fprintf(c.stderr, "agent service install: %v\n", err)
		return exitFailure
	}
	// The service reads the file without the caller's AGENT_* variables.
	noEnv := func(string) (string, bool) { return "", false }
	if _, err := config.Load(abs, noEnv); err != nil {
		fmt.Fprintf(c.stderr, "agent service install: %v\n", err)
		return exitFailure
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(c.stderr, "agent service install: finding this program: %v\n", err)
		return exitFailure
	}
	m, err := mgr.Connect()
	if err != nil {
		fmt.Fprintf(c.stderr, "agent service install: connecting to the service manager (run it from an elevated prompt): %v\n", err)
		return exitFailure
	}
	defer m.Disconnect()
	if s, err := m.OpenService(serviceName); err == nil {
		s.Close()
		fmt.Fprintf(c.stderr, "agent service install: service %q already exists; run \"agent service uninstall\" first\n", serviceName)
		return exitFailure
	}
	s, err := m.CreateService(serviceName, exe, mgr.Config{
		DisplayName:  "Orthanc GCP agent",
		Description:  "Keeps Orthanc's DICOMweb servers supplied with short-lived Google tokens from the orthanc-gcp-broker.",
		StartType:    mgr.StartAutomatic,
		ErrorControl: mgr.ErrorNormal,
		SidType:      windows.SERVICE_SID_TYPE_UNRESTRICTED,
	}, "run", "--config", abs)
	if err != nil {
		fmt.Fprintf(c.stderr, "agent service install: %v\n", err)
		return exitFailure
	}
	defer s.Close()
	restart := mgr.RecoveryAction{Type: mgr.ServiceRestart, Delay: 5 * time.Second}
	if err := s.SetRecoveryActions([]mgr.RecoveryAction{restart, restart, restart}, 24*60*60); err != nil {
		fmt.Fprintf(c.stderr, "agent service install: warning: setting restart on failure: %v\n", err)
	} else if err := s.SetRecoveryActionsOnNonCrashFailures(true); err != nil {
		fmt.Fprintf(c.stderr, "agent service install: warning: setting restart on a non-zero exit: %v\n", err)
	}
	if err := eventlog.InstallAsEventCreate(serviceName, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil &&
		!strings.Contains(err.Error(), "already exists") {
		fmt.Fprintf(c.stderr, "agent service install: warning: registering the event log source: %v\n", err)
	}
	fmt.Fprintf(c.stdout, "installed service %q (automatic start, LocalSystem): %s run --config %s\n", serviceName, exe, abs)
	fmt.Fprintf(c.stdout, "start it with: sc.exe start %s\n", serviceName)
	return exitOK
}

// uninstallService stops the service if it runs, deletes it and removes
// its event log source.
func (c *cli) uninstallService() int {
	m, err := mgr.Connect()
	if err != nil {
		fmt.Fprintf(c.stderr, "agent service uninstall: connecting to the service manager (run it from an elevated prompt): %v\n", err)
		return exitFailure
	}
	defer m.Disconnect()
	s, err := m.OpenService(serviceName)
	if err != nil {
		fmt.Fprintf(c.stderr, "agent service uninstall: service %q is not installed\n", serviceName)
		return exitFailure
	}
	defer s.Close()
	if st, err := s.Query(); err == nil && st.State != svc.Stopped {
		if _, err := s.Control(svc.Stop); err != nil && !errors.Is(err, windows.ERROR_SERVICE_NOT_ACTIVE) {
			fmt.Fprintf(c.stderr, "agent service uninstall: warning: stopping: %v\n", err)
		}
		for deadline := time.Now().Add(serviceStopTimeout + 5*time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
			if st, err := s.Query(); err != nil || st.State == svc.Stopped {
				break
			}
		}
	}
	if err := s.Delete(); err != nil {
		fmt.Fprintf(c.stderr, "agent service uninstall: %v\n", err)
		return exitFailure
	}
	_ = eventlog.Remove(serviceName) // absent if it was never registered
	fmt.Fprintf(c.stdout, "removed service %q\n", serviceName)
	return exitOK
}
