// Package orthancproc starts and stops a real Orthanc server with its
// DICOMweb plugin on free loopback-reachable ports, for integration tests,
// end-to-end tests and the demo. The build is the system's Debian packages
// (orthanc, orthanc-dicomweb: 1.10.1 / DICOMweb 1.7 on bookworm) unless
// ORTHANC_BIN and ORTHANC_DICOMWEB_PLUGIN name another one, such as a newer
// generation from scripts/orthanc-root.sh; every instance reports the
// Orthanc and DICOMweb versions it started.
//
// Orthanc has no bind-address option and always listens on 0.0.0.0, so
// every instance gets its own HTTP and DICOM ports, its own storage and index
// directories, and "RemoteAccessAllowed": false so that only loopback clients
// are served.
package orthancproc

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/proc"
)

// Paths of the Debian packages' files.
const (
	// Binary is the Orthanc server installed by the Debian package "orthanc".
	Binary = "/usr/sbin/Orthanc"
	// DICOMwebPlugin is the plugin installed by the Debian package "orthanc-dicomweb".
	DICOMwebPlugin = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
	// DICOMwebRoot is the REST root of the DICOMweb plugin in every instance.
	DICOMwebRoot = "/dicom-web/"
)

// Timeouts; variables so a slow CI machine can raise them.
var (
	// ReadyTimeout bounds the wait for GET /system to answer 200 after a start.
	ReadyTimeout = 20 * time.Second
	// StopTimeout bounds the wait after SIGTERM before SIGKILL.
	StopTimeout = 10 * time.Second
)

// Environment variables that select the Orthanc build.
const (
	EnvBinary = "ORTHANC_BIN"
	EnvPlugin = "ORTHANC_DICOMWEB_PLUGIN"
)

// binaryPath and pluginPath are what Available checks and Start runs;
// variables so a test can simulate a machine without Orthanc.
var binaryPath, pluginPath = fromEnv(EnvBinary, Binary), fromEnv(EnvPlugin, DICOMwebPlugin)

// envBuild is true when the environment chose the build (the install hint
// then names scripts/orthanc-root.sh, not apt-get).
var envBuild = os.Getenv(EnvBinary) != "" || os.Getenv(EnvPlugin) != ""

func fromEnv(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// BinaryPath and PluginPath are the Orthanc build this process starts.
func BinaryPath() string { return binaryPath }

// PluginPath is the DICOMweb plugin this process loads into Orthanc.
func PluginPath() string { return pluginPath }

// startAttempts is how many port pairs Start tries before giving up: a port
// picked as free can be taken by another process before Orthanc binds it.
const startAttempts = 5

// pickPorts returns two distinct free TCP ports; a variable so tests can
// force a collision.
var pickPorts = freePorts

// Available reports whether the Orthanc binary and the DICOMweb plugin are
// installed; the error says exactly what to install.
func Available() error {
	var missing []string
	if _, err := os.Stat(binaryPath); err != nil {
		missing = append(missing, binaryPath+" (package orthanc)")
	}
	if _, err := os.Stat(pluginPath); err != nil {
		missing = append(missing, pluginPath+" (package orthanc-dicomweb)")
	}
	if len(missing) == 0 {
		return nil
	}
	if envBuild {
		return fmt.Errorf("orthancproc: the Orthanc build named by %s/%s is missing %s; make it with scripts/orthanc-root.sh SUITE",
			EnvBinary, EnvPlugin, strings.Join(missing, ", "))
	}
	return fmt.Errorf("orthancproc: Orthanc is not installed: missing %s; run: apt-get install -y orthanc orthanc-dicomweb dcmtk",
		strings.Join(missing, ", "))
}

// Options describe one Orthanc instance.
type Options struct {
	// Name ("site", "cloud", ...) is used in the config and log file names
	// and in the Orthanc "Name" and DICOM AET.
	Name string
	// Dir is the working directory for storage, index, config and log; it is
	// created if missing. Empty: a fresh os.MkdirTemp directory that Stop removes.
	Dir string
	// Users, when non-empty, turns on AuthenticationEnabled with these
	// RegisteredUsers (user -> password). Do uses the alphabetically first user.
	Users map[string]string
	// DicomWebServers is the config file's DicomWeb.Servers.
	DicomWebServers map[string]any
	// ServersInDatabase sets DicomWeb.ServersInDatabase: REST-created servers
	// then survive a restart (stored in clear text in the index database).
	ServersInDatabase bool
	// Extra is merged into the top-level config last; a map value merges
	// one level deep into a map already there (e.g. "DicomWeb").
	Extra map[string]any
}

// Instance is a running (or stopped) Orthanc process.
type Instance struct {
	// URL is http://127.0.0.1:HTTPPort, without a trailing slash.
	URL string
	// HTTPPort and DicomPort are the ports Orthanc listens on (all interfaces).
	HTTPPort, DicomPort int
	// OrthancVersion and DICOMwebVersion are what the running build reports
	// (GET /system, GET /plugins/dicom-web), e.g. "1.12.7" and "1.20".
	OrthancVersion, DICOMwebVersion string
	// LogPath is the file that receives Orthanc's stdout and stderr; each
	// start appends to it.
	LogPath string
	// Dir is the working directory; ConfigPath the generated configuration.
	Dir, ConfigPath string

	opts       Options
	marker     string // unique "Name" so /system proves it is our process
	user, pass string
	ownDir     bool
	client     *http.Client

	mu      sync.Mutex
	proc    *proc.Process
	stopped bool
	starts  int
}

// Start writes a configuration, starts Orthanc on free ports and waits until
// GET /system answers 200 from this very process. If the ports turn out to be
// taken it retries with new ones.
func Start(opts Options) (*Instance, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = "orthanc"
	}
	if !validName.MatchString(opts.Name) {
		return nil, fmt.Errorf("orthancproc: Name %q must match %s", opts.Name, validName)
	}
	inst := &Instance{opts: opts, Dir: opts.Dir}
	if inst.Dir == "" {
		d, err := os.MkdirTemp("", "orthanc-"+opts.Name+"-")
		if err != nil {
			return nil, fmt.Errorf("orthancproc: %w", err)
		}
		inst.Dir, inst.ownDir = d, true
	}
	abs, err := filepath.Abs(inst.Dir)
	if err != nil {
		return nil, fmt.Errorf("orthancproc: %w", err)
	}
	inst.Dir = abs
	for _, sub := range []string{"storage", "index"} {
		if err := os.MkdirAll(filepath.Join(inst.Dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("orthancproc: %w", err)
		}
	}
	inst.ConfigPath = filepath.Join(inst.Dir, opts.Name+".json")
	inst.LogPath = filepath.Join(inst.Dir, opts.Name+".log")
	inst.marker = opts.Name + "-" + randomHex(6)
	inst.user, inst.pass = firstUser(opts.Users)
	inst.client = newClient()

	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		httpPort, dicomPort, err := pickPorts()
		if err != nil {
			lastErr = err
			continue
		}
		inst.setPorts(httpPort, dicomPort)
		if err := inst.writeConfig(); err != nil {
			return nil, err
		}
		if lastErr = inst.launch(); lastErr == nil {
			if err := inst.readVersions(); err != nil {
				_ = inst.Stop()
				return nil, err
			}
			return inst, nil
		}
	}
	if inst.ownDir {
		// Keep the log for the caller to read when something went wrong.
		lastErr = fmt.Errorf("%w (log kept in %s)", lastErr, inst.LogPath)
	}
	return nil, fmt.Errorf("orthancproc: start %s failed after %d attempts: %w", opts.Name, startAttempts, lastErr)
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$`)

// readVersions fills OrthancVersion and DICOMwebVersion from the process.
func (i *Instance) readVersions() error {
	var sys struct{ Version string }
	var plugin struct{ Version string }
	if err := i.Do(http.MethodGet, "/system", nil, &sys); err != nil {
		return fmt.Errorf("orthancproc: GET /system: %w", err)
	}
	if err := i.Do(http.MethodGet, "/plugins/dicom-web", nil, &plugin); err != nil {
		return fmt.Errorf("orthancproc: the DICOMweb plugin is not loaded (GET /plugins/dicom-web: %w)", err)
	}
	if sys.Version == "" || plugin.Version == "" {
		return fmt.Errorf("orthancproc: no version in /system (%q) or /plugins/dicom-web (%q)", sys.Version, plugin.Version)
	}
	i.OrthancVersion, i.DICOMwebVersion = sys.Version, plugin.Version
	return nil
}

// Versions is "Orthanc 1.12.7, DICOMweb 1.20", for test logs.
func (i *Instance) Versions() string {
	return "Orthanc " + i.OrthancVersion + ", DICOMweb " + i.DICOMwebVersion
}

func (i *Instance) setPorts(httpPort, dicomPort int) {
	i.HTTPPort, i.DicomPort = httpPort, dicomPort
	i.URL = fmt.Sprintf("http://127.0.0.1:%d", httpPort)
}

// Config returns the configuration document that Start writes; exported so
// callers can see exactly what Orthanc runs with.
func (i *Instance) Config() map[string]any {
	return buildConfig(i.opts, i.marker, i.Dir, i.HTTPPort, i.DicomPort)
}

func buildConfig(opts Options, marker, dir string, httpPort, dicomPort int) map[string]any {
	dicomWeb := map[string]any{
		"Enable":            true,
		"Root":              DICOMwebRoot,
		"EnableWado":        true,
		"WadoRoot":          "/wado",
		"Ssl":               false,
		"StudiesMetadata":   "Full",
		"SeriesMetadata":    "Full",
		"ServersInDatabase": opts.ServersInDatabase,
	}
	if opts.DicomWebServers != nil {
		dicomWeb["Servers"] = opts.DicomWebServers
	}
	users := map[string]any{}
	for u, p := range opts.Users {
		users[u] = p
	}
	cfg := map[string]any{
		"Name":                  marker,
		"StorageDirectory":      filepath.Join(dir, "storage"),
		"IndexDirectory":        filepath.Join(dir, "index"),
		"HttpPort":              httpPort,
		"DicomPort":             dicomPort,
		"DicomAet":              aet(opts.Name),
		"HttpServerEnabled":     true,
		"DicomServerEnabled":    true,
		"RemoteAccessAllowed":   false, // only loopback clients: Orthanc binds 0.0.0.0
		"HttpVerbose":           false, // verbose HTTP logs print Authorization headers
		"AuthenticationEnabled": len(opts.Users) > 0,
		"RegisteredUsers":       users,
		"Plugins":               []any{pluginPath},
		"DicomWeb":              dicomWeb,
		"ConcurrentJobs":        2,
		"StorageCompression":    false,
		"HttpsVerifyPeers":      true,
		"HttpTimeout":           60,
	}
	for k, v := range opts.Extra {
		if add, ok := v.(map[string]any); ok {
			if base, ok := cfg[k].(map[string]any); ok {
				merged := make(map[string]any, len(base)+len(add))
				for bk, bv := range base {
					merged[bk] = bv
				}
				for ak, av := range add {
					merged[ak] = av
				}
				cfg[k] = merged
				continue
			}
		}
		cfg[k] = v
	}
	return cfg
}

// aet turns a name into a valid DICOM AE title (max 16 chars, upper case).
func aet(name string) string {
	s := strings.ToUpper(strings.NewReplacer("-", "_").Replace(name))
	if len(s) > 16 {
		s = s[:16]
	}
	return s
}

func (i *Instance) writeConfig() error {
	data, err := json.MarshalIndent(i.Config(), "", "  ")
	if err != nil {
		return fmt.Errorf("orthancproc: config: %w", err)
	}
	// 0600: the file may hold passwords and bearer headers.
	if err := os.WriteFile(i.ConfigPath, data, 0o600); err != nil {
		return fmt.Errorf("orthancproc: %w", err)
	}
	return nil
}

// launch starts the process and waits until it answers; on failure the
// process is gone when launch returns.
func (i *Instance) launch() error {
	logf, err := os.OpenFile(i.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("orthancproc: %w", err)
	}
	defer logf.Close() // the child has its own copy of the descriptor

	i.mu.Lock()
	i.starts++
	n := i.starts
	i.mu.Unlock()
	fmt.Fprintf(logf, "=== orthancproc: start #%d of %s, http %d, dicom %d, %s ===\n",
		n, i.opts.Name, i.HTTPPort, i.DicomPort, time.Now().UTC().Format(time.RFC3339))

	cmd := exec.Command(binaryPath, i.ConfigPath)
	cmd.Dir = i.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := proc.Start(cmd)
	if err != nil {
		return fmt.Errorf("orthancproc: exec %s: %w", binaryPath, err)
	}
	i.mu.Lock()
	i.proc, i.stopped = p, false
	i.mu.Unlock()

	if err := i.waitReady(p); err != nil {
		_ = i.terminate()
		return fmt.Errorf("%w; last log lines:\n%s", err, i.logTail(15))
	}
	return nil
}

// waitReady polls GET /system until it answers 200 with our marker name, the
// process exits, or ReadyTimeout passes.
func (i *Instance) waitReady(p *proc.Process) error {
	deadline := time.Now().Add(ReadyTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.Done():
			return fmt.Errorf("Orthanc exited before it was ready (%v); a port may be taken", p.Err())
		default:
		}
		var sys struct{ Name string }
		// Bound each probe so a process that accepts but never answers
		// cannot stretch the wait past ReadyTimeout.
		ctx, cancel := context.WithDeadline(context.Background(), minTime(deadline, time.Now().Add(2*time.Second)))
		err := i.DoContext(ctx, http.MethodGet, "/system", nil, &sys)
		cancel()
		if err == nil {
			if sys.Name == i.marker {
				return nil
			}
			// Someone else answers on our port; ours will fail to bind and exit.
			last = fmt.Errorf("port %d is served by another process (Name %q)", i.HTTPPort, sys.Name)
		} else {
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("Orthanc not ready after %s: %v", ReadyTimeout, last)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// PID returns the process id of the running Orthanc, or 0.
func (i *Instance) PID() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.proc == nil || i.stopped {
		return 0
	}
	return i.proc.Pid()
}

// Restart stops Orthanc (SIGTERM, then SIGKILL after StopTimeout) and starts
// it again with the same ports, directory and configuration. Entries created
// over REST under /dicom-web/servers are lost unless ServersInDatabase is set.
func (i *Instance) Restart() error {
	if err := i.terminate(); err != nil {
		return err
	}
	// The old sockets are closed; a port can still be briefly unavailable,
	// so retry a few times on the same ports.
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = i.launch(); err == nil {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("orthancproc: restart %s: %w", i.opts.Name, err)
}

// Stop terminates Orthanc: SIGTERM to its process group, then SIGKILL if it
// has not exited after StopTimeout. It removes Dir if Start created it.
// Stop is safe to call more than once.
func (i *Instance) Stop() error {
	err := i.terminate()
	if i.ownDir {
		if rmErr := os.RemoveAll(i.Dir); rmErr != nil && err == nil {
			err = fmt.Errorf("orthancproc: %w", rmErr)
		}
	}
	if i.client != nil {
		i.client.CloseIdleConnections()
	}
	return err
}

func (i *Instance) terminate() error {
	i.mu.Lock()
	p, stopped := i.proc, i.stopped
	i.stopped = true
	i.mu.Unlock()
	if p == nil || stopped {
		return nil
	}
	// Signal Orthanc's whole process group so nothing it spawns survives; a
	// kill after StopTimeout still counts as stopped.
	if err := p.Stop(syscall.SIGTERM, StopTimeout); err != nil && !errors.Is(err, proc.ErrKilled) {
		return fmt.Errorf("orthancproc: %w", err)
	}
	return nil
}

// Logs returns everything Orthanc wrote to LogPath so far.
func (i *Instance) Logs() ([]byte, error) {
	b, err := os.ReadFile(i.LogPath)
	if err != nil {
		return nil, fmt.Errorf("orthancproc: %w", err)
	}
	return b, nil
}

// secretLine matches log lines that could carry a credential; they are left
// out of error messages.
var secretLine = regexp.MustCompile(`(?i)authorization|bearer|password|token`)

// logTail returns the last n lines of the log, without lines that could
// carry a credential.
func (i *Instance) logTail(n int) string {
	b, err := os.ReadFile(i.LogPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for k, l := range lines {
		if secretLine.MatchString(l) {
			lines[k] = "(line withheld: may contain a credential)"
		}
	}
	return strings.Join(lines, "\n")
}

// User returns the user name and password Do authenticates with ("" when
// authentication is off).
func (i *Instance) User() (user, password string) { return i.user, i.pass }

// Client returns the HTTP client Do uses. Its idle connections are dropped
// well before Orthanc's ~1 s keep-alive timeout, so a POST never meets a
// connection Orthanc already closed.
func (i *Instance) Client() *http.Client { return i.client }

// HTTPError is a non-2xx answer from Orthanc.
type HTTPError struct {
	Method, Path string
	Status       int
	// Body is the start of the answer body (Orthanc's JSON error).
	Body string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("orthancproc: %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Body)
}

// Do sends one request to Orthanc with the Basic auth of the first user.
//
// body: nil sends none; []byte or io.Reader is sent as is with Content-Type
// application/dicom (for POST /instances); anything else is JSON-encoded.
// out: nil discards the answer; *[]byte receives the raw body; anything else
// is JSON-decoded into. A non-2xx status returns *HTTPError.
func (i *Instance) Do(method, path string, body any, out any) error {
	return i.DoContext(context.Background(), method, path, body, out)
}

// DoContext is Do with a context.
func (i *Instance) DoContext(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ctype = bytes.NewReader(b), "application/dicom"
	case io.Reader:
		rd, ctype = b, "application/dicom"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return fmt.Errorf("orthancproc: %s %s: encode body: %w", method, path, err)
		}
		rd, ctype = bytes.NewReader(data), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, i.URL+path, rd)
	if err != nil {
		return fmt.Errorf("orthancproc: %w", err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if i.user != "" {
		req.SetBasicAuth(i.user, i.pass)
	}
	resp, err := i.client.Do(req)
	if err != nil {
		return fmt.Errorf("orthancproc: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("orthancproc: %s %s: read: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		msg := string(data)
		if len(msg) > 512 {
			msg = msg[:512] + "…"
		}
		return &HTTPError{Method: method, Path: path, Status: resp.StatusCode, Body: msg}
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = data
		return nil
	default:
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("orthancproc: %s %s: decode answer: %w", method, path, err)
		}
		return nil
	}
}

func newClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.IdleConnTimeout = 250 * time.Millisecond // Orthanc drops idle connections after ~1 s
	tr.Proxy = nil                              // loopback only, never via a proxy
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

func firstUser(users map[string]string) (string, string) {
	if len(users) == 0 {
		return "", ""
	}
	name := slices.Min(slices.Collect(maps.Keys(users)))
	return name, users[name]
}

// freePorts returns two distinct ports that are free on all interfaces (as
// Orthanc binds 0.0.0.0). Both listeners stay open until both are picked.
func freePorts() (int, int, error) {
	var ports [2]int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for k := range ports {
		l, err := net.Listen("tcp4", "0.0.0.0:0")
		if err != nil {
			return 0, 0, fmt.Errorf("orthancproc: pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports[k] = l.Addr().(*net.TCPAddr).Port
	}
	return ports[0], ports[1], nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("orthancproc: crypto/rand failed"))
	}
	return hex.EncodeToString(b)
}
