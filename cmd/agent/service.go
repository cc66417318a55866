package main

// The Windows service, in two halves: the logic here is plain Go, built and
// tested on every platform; service_windows.go only maps it onto
// golang.org/x/sys/windows/svc (control requests, status reports, the
// event log, the service manager) and service_other.go says "Windows only".

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
)

// serviceName is the Windows service's name and its event log source; the
// key and password file checks allow its service SID (agentkey.ServiceSID).
const serviceName = agentkey.ServiceName

// serviceStopTimeout bounds how long a Stop waits for the agent to finish
// (it needs at most about 5 s to close the health server); it is also the
// wait hint reported to the service manager.
const serviceStopTimeout = 20 * time.Second

// svcCmd is a control request from the service manager, reduced to what
// the agent acts on.
type svcCmd int

const (
	svcInterrogate svcCmd = iota
	svcStop
	svcShutdown
	svcParamChange // "sc.exe control orthanc-gcp-agent paramchange": reload, as SIGHUP
	svcOther
)

// svcState is a status the agent reports to the service manager.
type svcState int

const (
	svcStartPending svcState = iota + 1
	svcRunning
	svcStopPending
)

func (s svcState) String() string {
	switch s {
	case svcStartPending:
		return "StartPending"
	case svcRunning:
		return "Running"
	case svcStopPending:
		return "StopPending"
	}
	return fmt.Sprintf("svcState(%d)", int(s))
}

// serveService runs body (the agent's command line, normally "run") the
// way the service manager expects: StartPending at once; Running when body
// calls started (its configuration loaded and its address bound); on Stop
// or Shutdown, StopPending, then body's context is cancelled and its exit
// code returned once it has finished (or exitFailure after stopTimeout).
// ParamChange makes the agent re-read its configuration. If body ends by
// itself (a bad configuration, a failed health server) its code is
// returned at once; the caller then reports Stopped with that code, which
// the service manager's recovery actions act on.
func serveService(cmds <-chan svcCmd, report func(svcState), stopTimeout time.Duration,
	body func(ctx context.Context, reload <-chan struct{}, started func()) int) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reload := make(chan struct{}, 1)
	startedc := make(chan struct{})
	var once sync.Once
	started := func() { once.Do(func() { close(startedc) }) }
	done := make(chan int, 1)

	state := svcStartPending
	report(state)
	go func() { done <- body(ctx, reload, started) }()
	for {
		select {
		case <-startedc:
			startedc = nil
			state = svcRunning
			report(state)
		case code := <-done:
			return code
		case cmd := <-cmds:
			switch cmd {
			case svcInterrogate:
				report(state)
			case svcStop, svcShutdown:
				report(svcStopPending)
				cancel()
				t := time.NewTimer(stopTimeout)
				defer t.Stop()
				select {
				case code := <-done:
					return code
				case <-t.C:
					return exitFailure
				}
			case svcParamChange:
				select {
				case reload <- struct{}{}:
				default:
				}
			}
		}
	}
}

// Event log IDs, one per level, so events can be filtered by ID too. The
// source is registered with EventCreate.exe as its message file, which
// shows IDs 1-1000 with the text as given.
const (
	eventInfo    = 1
	eventWarning = 2
	eventError   = 3
)

// maxEventText bounds one event's text (the event log's limit is 31,839
// characters per string).
const maxEventText = 30000

// eventSink is what the agent needs of an event log (*eventlog.Log has it).
type eventSink interface {
	Info(eid uint32, msg string) error
	Warning(eid uint32, msg string) error
	Error(eid uint32, msg string) error
}

// eventWriter turns the agent's output (JSON log lines, and the plain
// "agent: …" lines of a refused start) into one event per line, at the
// level of the line's "level" field; a line that is not a JSON log record
// is an error. It is safe for concurrent use.
type eventWriter struct {
	mu   sync.Mutex
	sink eventSink
	buf  []byte
}

func newEventWriter(sink eventSink) *eventWriter { return &eventWriter{sink: sink} }

func (w *eventWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > maxEventText {
		w.emit(string(w.buf))
		w.buf = nil
	}
	return len(p), nil
}

// Close writes out a last line that had no newline.
func (w *eventWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(string(w.buf))
		w.buf = nil
	}
	return nil
}

func (w *eventWriter) emit(line string) {
	line = strings.TrimRight(line, "\r")
	if strings.TrimSpace(line) == "" {
		return
	}
	if len(line) > maxEventText {
		line = strings.ToValidUTF8(line[:maxEventText], "") + "…"
	}
	switch eventLevel(line) {
	case eventInfo:
		_ = w.sink.Info(eventInfo, line)
	case eventWarning:
		_ = w.sink.Warning(eventWarning, line)
	default:
		_ = w.sink.Error(eventError, line)
	}
}

// eventLevel maps a line to an event level: log/slog's JSON "level"
// ("DEBUG", "INFO", "WARN", "ERROR", or e.g. "INFO+2") decides; anything
// else is an error.
func eventLevel(line string) int {
	var rec struct {
		Level string `json:"level"`
	}
	if json.Unmarshal([]byte(line), &rec) != nil {
		return eventError
	}
	switch l := strings.ToUpper(rec.Level); {
	case strings.HasPrefix(l, "ERROR"):
		return eventError
	case strings.HasPrefix(l, "WARN"):
		return eventWarning
	case strings.HasPrefix(l, "INFO"), strings.HasPrefix(l, "DEBUG"):
		return eventInfo
	}
	return eventError
}

// service is "agent service install|uninstall". The flags are checked on
// every platform; the work is done by installService/uninstallService,
// which exist only on Windows.
func (c *cli) service(args []string) int {
	const usageLine = "usage: agent service install --config FILE | agent service uninstall"
	if len(args) == 0 {
		fmt.Fprintln(c.stderr, usageLine)
		return exitUsage
	}
	sub, rest := args[0], args[1:]
	if sub != "install" && sub != "uninstall" {
		fmt.Fprintf(c.stderr, "agent service: unknown subcommand %q\n%s\n", sub, usageLine)
		return exitUsage
	}
	fs := c.flags("service " + sub)
	cfgFlag := fs.String("config", "", "agent configuration file the service runs with (install; ignored by uninstall)")
	if !c.parse(fs, rest) {
		return exitUsage
	}
	if !serviceSupported {
		fmt.Fprintf(c.stderr, "agent service %s: Windows services exist only on Windows; "+
			"on Linux install packaging/systemd/orthanc-gcp-agent.service (see docs/agent.md)\n", sub)
		return exitUsage
	}
	if sub == "uninstall" {
		return c.uninstallService()
	}
	path := c.configPath(*cfgFlag)
	if path == "" {
		fmt.Fprintln(c.stderr, "agent service install: --config FILE is required (the service has no $AGENT_CONFIG)")
		return exitUsage
	}
	return c.installService(path)
}
