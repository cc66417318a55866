package orthancproc

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The Orthanc tests fail (never skip) when Orthanc is missing: the message
// says what to apt-get install.
func TestAvailable(t *testing.T) {
	if err := Available(); err != nil {
		t.Fatal(err)
	}
}

// fakeTB records Fatalf instead of stopping the goroutine.
type fakeTB struct {
	fatal    string
	cleanups []func()
	dir      string
}

func (f *fakeTB) Helper()                        {}
func (f *fakeTB) Logf(string, ...any)            {}
func (f *fakeTB) Cleanup(fn func())              { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) TempDir() string                { return f.dir }
func (f *fakeTB) Failed() bool                   { return f.fatal != "" }
func (f *fakeTB) Fatalf(format string, a ...any) { f.fatal = fmt.Sprintf(format, a...); panic(f) }

func TestMissingOrthancFailsWithInstallHint(t *testing.T) {
	defer func(b, p string, e bool) { binaryPath, pluginPath, envBuild = b, p, e }(binaryPath, pluginPath, envBuild)
	binaryPath, pluginPath = "/nonexistent/Orthanc", "/nonexistent/libOrthancDicomWeb.so"

	for _, tc := range []struct {
		name     string
		envBuild bool
		want     []string
	}{
		{"Debian packages", false, []string{"/nonexistent/Orthanc (package orthanc)", "(package orthanc-dicomweb)", "apt-get install -y orthanc orthanc-dicomweb dcmtk"}},
		{"build from the environment", true, []string{"/nonexistent/Orthanc", "/nonexistent/libOrthancDicomWeb.so", EnvBinary, "scripts/orthanc-root.sh"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			envBuild = tc.envBuild
			err := Available()
			if err == nil {
				t.Fatal("Available() = nil with both files missing")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Available() = %q, want it to mention %q", err, want)
				}
			}
			hint := tc.want[len(tc.want)-1]
			if _, err := Start(Options{Name: "x", Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), hint) {
				t.Errorf("Start without Orthanc: %v, want the hint %q", err, hint)
			}
			// StartForTest fails the test (Fatalf), it does not skip.
			ftb := &fakeTB{dir: t.TempDir()}
			func() {
				defer func() {
					if r := recover(); r != nil && r != any(ftb) {
						panic(r)
					}
				}()
				StartForTest(ftb, Options{Name: "x"})
			}()
			if !strings.Contains(ftb.fatal, hint) {
				t.Errorf("StartForTest Fatalf = %q, want the hint %q", ftb.fatal, hint)
			}
		})
	}
}

func TestBuildConfig(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		check func(t *testing.T, cfg map[string]any)
	}{
		{
			name: "defaults",
			opts: Options{Name: "site"},
			check: func(t *testing.T, cfg map[string]any) {
				want := map[string]any{
					"Name": "m", "HttpPort": 1001, "DicomPort": 1002, "DicomAet": "SITE",
					"RemoteAccessAllowed": false, "HttpVerbose": false, "AuthenticationEnabled": false,
					"StorageDirectory": "/d/storage", "IndexDirectory": "/d/index",
				}
				for k, v := range want {
					if fmt.Sprint(cfg[k]) != fmt.Sprint(v) {
						t.Errorf("%s = %v, want %v", k, cfg[k], v)
					}
				}
				dw := cfg["DicomWeb"].(map[string]any)
				if dw["Enable"] != true || dw["Root"] != "/dicom-web/" || dw["ServersInDatabase"] != false {
					t.Errorf("DicomWeb = %v", dw)
				}
				if _, ok := dw["Servers"]; ok {
					t.Errorf("DicomWeb.Servers set without DicomWebServers: %v", dw)
				}
				if fmt.Sprint(cfg["Plugins"]) != "["+pluginPath+"]" {
					t.Errorf("Plugins = %v", cfg["Plugins"])
				}
			},
		},
		{
			name: "users servers and database",
			opts: Options{
				Name:              "cloud-proxy-with-a-long-name",
				Users:             map[string]string{"b": "pb", "a": "pa"},
				DicomWebServers:   map[string]any{"g": map[string]any{"Url": "http://x/"}},
				ServersInDatabase: true,
			},
			check: func(t *testing.T, cfg map[string]any) {
				if cfg["AuthenticationEnabled"] != true {
					t.Errorf("AuthenticationEnabled = %v", cfg["AuthenticationEnabled"])
				}
				if got := fmt.Sprint(cfg["RegisteredUsers"]); got != "map[a:pa b:pb]" {
					t.Errorf("RegisteredUsers = %s", got)
				}
				if got := cfg["DicomAet"]; got != "CLOUD_PROXY_WITH" {
					t.Errorf("DicomAet = %v, want 16 upper-case chars", got)
				}
				dw := cfg["DicomWeb"].(map[string]any)
				if dw["ServersInDatabase"] != true || fmt.Sprint(dw["Servers"]) != "map[g:map[Url:http://x/]]" {
					t.Errorf("DicomWeb = %v", dw)
				}
			},
		},
		{
			name: "extra merges maps one level and overrides scalars",
			opts: Options{
				Name:  "site",
				Extra: map[string]any{"DicomWeb": map[string]any{"StudiesMetadata": "MainDicomTags"}, "HttpVerbose": true, "StableAge": 1},
			},
			check: func(t *testing.T, cfg map[string]any) {
				dw := cfg["DicomWeb"].(map[string]any)
				if dw["StudiesMetadata"] != "MainDicomTags" || dw["Enable"] != true || dw["Root"] != "/dicom-web/" {
					t.Errorf("DicomWeb = %v", dw)
				}
				if cfg["HttpVerbose"] != true || cfg["StableAge"] != 1 {
					t.Errorf("HttpVerbose = %v, StableAge = %v", cfg["HttpVerbose"], cfg["StableAge"])
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, buildConfig(tc.opts, "m", "/d", 1001, 1002))
		})
	}
}

func TestFirstUser(t *testing.T) {
	tests := []struct {
		users      map[string]string
		user, pass string
	}{
		{nil, "", ""},
		{map[string]string{"zed": "1", "alice": "2", "bob": "3"}, "alice", "2"},
	}
	for _, tc := range tests {
		if u, p := firstUser(tc.users); u != tc.user || p != tc.pass {
			t.Errorf("firstUser(%v) = %q, %q; want %q, %q", tc.users, u, p, tc.user, tc.pass)
		}
	}
}

func TestStartNameValidation(t *testing.T) {
	for _, name := range []string{"../x", "a b", "x/y", strings.Repeat("a", 40)} {
		if _, err := Start(Options{Name: name, Dir: t.TempDir()}); err == nil {
			t.Errorf("Start(Name %q) succeeded, want an error", name)
		}
	}
}

func TestStartServesSystemAndDICOMweb(t *testing.T) {
	t.Parallel()
	a := StartForTest(t, Options{Name: "site", Users: map[string]string{"agent": "pw-a", "other": "pw-o"}})
	b := StartForTest(t, Options{Name: "cloud"})

	if a.HTTPPort == b.HTTPPort || a.DicomPort == b.DicomPort || a.HTTPPort == a.DicomPort {
		t.Fatalf("ports collide: a %d/%d b %d/%d", a.HTTPPort, a.DicomPort, b.HTTPPort, b.DicomPort)
	}
	if a.URL != "http://127.0.0.1:"+strconv.Itoa(a.HTTPPort) {
		t.Errorf("URL = %q", a.URL)
	}
	if u, _ := a.User(); u != "agent" {
		t.Errorf("User() = %q, want the alphabetically first user", u)
	}
	for _, inst := range []*Instance{a, b} {
		var sys struct {
			Name, Version, DicomAet string
			DicomPort, HttpPort     int
		}
		if err := inst.Do(http.MethodGet, "/system", nil, &sys); err != nil {
			t.Fatal(err)
		}
		if sys.Name != inst.marker || sys.Version == "" || sys.Version != inst.OrthancVersion ||
			sys.HttpPort != inst.HTTPPort || sys.DicomPort != inst.DicomPort ||
			sys.DicomAet != aet(inst.opts.Name) {
			t.Errorf("/system = %+v, want marker %s on ports %d/%d", sys, inst.marker, inst.HTTPPort, inst.DicomPort)
		}
		var plugins []string
		if err := inst.Do(http.MethodGet, "/plugins", nil, &plugins); err != nil {
			t.Fatal(err)
		}
		if !contains(plugins, "dicom-web") {
			t.Errorf("/plugins = %v, want dicom-web", plugins)
		}
		var studies []any
		if err := inst.Do(http.MethodGet, "/dicom-web/studies", nil, &studies); err != nil {
			t.Fatalf("QIDO on an empty Orthanc: %v", err)
		}
		if len(studies) != 0 {
			t.Errorf("fresh instance has studies: %v", studies)
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", inst.DicomPort), 2*time.Second)
		if err != nil {
			t.Errorf("DICOM port: %v", err)
		} else {
			c.Close()
		}
		fi, err := os.Stat(inst.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("config mode = %v, want 0600", fi.Mode().Perm())
		}
		var cfg map[string]any
		data, _ := os.ReadFile(inst.ConfigPath)
		if err := json.Unmarshal(data, &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg["RemoteAccessAllowed"] != false || cfg["HttpVerbose"] != false {
			t.Errorf("config RemoteAccessAllowed=%v HttpVerbose=%v", cfg["RemoteAccessAllowed"], cfg["HttpVerbose"])
		}
	}
	logs, err := a.Logs()
	if err != nil || !strings.Contains(string(logs), "=== orthancproc: start #1") {
		t.Errorf("Logs() = %d bytes, %v; want the start banner", len(logs), err)
	}
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	inst := StartForTest(t, Options{Name: "auth", Users: map[string]string{"agent": "right-password"}})
	tests := []struct {
		name       string
		user, pass string
		noAuth     bool
		want       int
	}{
		{name: "right password", user: "agent", pass: "right-password", want: 200},
		{name: "wrong password", user: "agent", pass: "wrong-password", want: 401},
		{name: "unknown user", user: "nobody", pass: "right-password", want: 401},
		{name: "no credentials", noAuth: true, want: 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, inst.URL+"/system", nil)
			if !tc.noAuth {
				req.SetBasicAuth(tc.user, tc.pass)
			}
			resp, err := inst.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tc.want)
			}
			if tc.want == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}
	// Do returns a typed error for a non-2xx answer.
	err := inst.Do(http.MethodDelete, "/dicom-web/servers/missing", nil, nil)
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != 400 {
		t.Errorf("DELETE of a missing server: %v, want HTTPError 400", err)
	}
}

type serverEntry struct {
	Url         string
	HttpHeaders []string
	Managed     string
}

func listServers(t *testing.T, inst *Instance) map[string]serverEntry {
	t.Helper()
	var got map[string]serverEntry
	if err := inst.Do(http.MethodGet, "/dicom-web/servers?expand", nil, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestRestart(t *testing.T) {
	t.Parallel()
	const secret = "Bearer config-token-must-not-be-logged"
	tests := []struct {
		name              string
		serversInDatabase bool
		wantRESTAfter     bool
		wantConfigAfter   bool
	}{
		// FACTS: REST-created entries vanish on restart, config ones come back.
		{name: "servers in memory", wantRESTAfter: false, wantConfigAfter: true},
		// FACTS: with ServersInDatabase they persist and the config file's are ignored.
		{name: "servers in database", serversInDatabase: true, wantRESTAfter: true, wantConfigAfter: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inst := StartForTest(t, Options{
				Name:  "restart",
				Users: map[string]string{"agent": "pw"},
				DicomWebServers: map[string]any{
					"from-config": map[string]any{"Url": "http://127.0.0.1:9/dicom-web/", "HttpHeaders": map[string]string{"Authorization": secret}},
				},
				ServersInDatabase: tc.serversInDatabase,
			})
			put := map[string]any{"Url": "http://127.0.0.1:9/other/", "HttpHeaders": map[string]string{"Authorization": secret}, "Managed": "yes"}
			if err := inst.Do(http.MethodPut, "/dicom-web/servers/rest-made", put, nil); err != nil {
				t.Fatal(err)
			}
			var created struct{ ID string }
			if err := inst.Do(http.MethodPost, "/tools/create-dicom", map[string]any{"Tags": map[string]string{"PatientName": "RESTART^TEST"}}, &created); err != nil {
				t.Fatal(err)
			}
			before := listServers(t, inst)
			if _, ok := before["rest-made"]; !ok {
				t.Fatalf("PUT server not listed: %v", before)
			}
			if got := before["rest-made"].Managed; got != "yes" {
				t.Errorf("user property = %q", got)
			}
			url, httpPort, dicomPort, pid := inst.URL, inst.HTTPPort, inst.DicomPort, inst.PID()

			if err := inst.Restart(); err != nil {
				t.Fatal(err)
			}
			if inst.URL != url || inst.HTTPPort != httpPort || inst.DicomPort != dicomPort {
				t.Errorf("restart moved ports: %s %d/%d -> %s %d/%d", url, httpPort, dicomPort, inst.URL, inst.HTTPPort, inst.DicomPort)
			}
			if inst.PID() == pid || inst.PID() == 0 {
				t.Errorf("PID %d -> %d, want a new process", pid, inst.PID())
			}
			if processAlive(pid) {
				t.Errorf("old process %d still alive after restart", pid)
			}
			after := listServers(t, inst)
			if _, ok := after["rest-made"]; ok != tc.wantRESTAfter {
				t.Errorf("rest-made present after restart = %v, want %v (%v)", ok, tc.wantRESTAfter, after)
			}
			if _, ok := after["from-config"]; ok != tc.wantConfigAfter {
				t.Errorf("from-config present after restart = %v, want %v (%v)", ok, tc.wantConfigAfter, after)
			}
			// Same storage and index: the instance survives the restart.
			var ids []string
			if err := inst.Do(http.MethodGet, "/instances", nil, &ids); err != nil {
				t.Fatal(err)
			}
			if !contains(ids, created.ID) {
				t.Errorf("instances after restart = %v, want %s", ids, created.ID)
			}
			logs, err := inst.Logs()
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(logs), "=== orthancproc: start #"); n != 2 {
				t.Errorf("log has %d start banners, want 2", n)
			}
			if strings.Contains(string(logs), "config-token-must-not-be-logged") {
				t.Errorf("Orthanc log contains the Authorization header value")
			}
		})
	}
}

func TestDoBodies(t *testing.T) {
	t.Parallel()
	inst := StartForTest(t, Options{Name: "bodies", Users: map[string]string{"u": "p"}})
	var created struct{ ID string }
	if err := inst.Do(http.MethodPost, "/tools/create-dicom", map[string]any{"Tags": map[string]string{"PatientName": "DO^TEST"}}, &created); err != nil {
		t.Fatal(err)
	}
	var file []byte
	if err := inst.Do(http.MethodGet, "/instances/"+created.ID+"/file", nil, &file); err != nil {
		t.Fatal(err)
	}
	if len(file) < 132 || string(file[128:132]) != "DICM" {
		t.Fatalf("raw body is not a DICOM file (%d bytes)", len(file))
	}
	var stored struct{ ID, Status string }
	if err := inst.Do(http.MethodPost, "/instances", file, &stored); err != nil {
		t.Fatal(err)
	}
	if stored.ID != created.ID || stored.Status != "AlreadyStored" {
		t.Errorf("re-upload = %+v, want AlreadyStored %s", stored, created.ID)
	}
}

// Two instances wired as the project uses them: the site's DICOMweb client
// STOWs to the cloud instance through a loopback proxy, with chunked
// transfer encoding (the plugin's default ChunkedTransfers).
func TestChunkedStowBetweenInstances(t *testing.T) {
	t.Parallel()
	cloud := StartForTest(t, Options{Name: "cloud", Users: map[string]string{"store": "store-pw"}})
	target, _ := neturl.Parse(cloud.URL)
	var mu sync.Mutex
	var seen []string // "METHOD path transfer-encoding"
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+strings.Join(r.TransferEncoding, ","))
		mu.Unlock()
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer proxy.Close()

	site := StartForTest(t, Options{Name: "site", Users: map[string]string{"agent": "pw"},
		DicomWebServers: map[string]any{"cloud": map[string]any{
			"Url": proxy.URL + "/dicom-web/", "Username": "store", "Password": "store-pw",
		}}})
	var created struct{ ID string }
	if err := site.Do(http.MethodPost, "/tools/create-dicom", map[string]any{"Tags": map[string]string{"PatientName": "STOW^TEST", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}}, &created); err != nil {
		t.Fatal(err)
	}
	if err := site.Do(http.MethodPost, "/dicom-web/servers/cloud/stow", map[string]any{"Resources": []string{created.ID}}, nil); err != nil {
		t.Fatal(err)
	}
	var ids []string
	if err := cloud.Do(http.MethodGet, "/instances", nil, &ids); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 1 || ids[0] != created.ID {
		t.Errorf("cloud instances = %v, want [%s]", ids, created.ID)
	}
	mu.Lock()
	defer mu.Unlock()
	if !contains(seen, "POST /dicom-web/studies chunked") {
		t.Errorf("proxy saw %v, want a chunked POST /dicom-web/studies", seen)
	}
}

func TestStopFreesPorts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	inst, err := Start(Options{Name: "stop", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	pid := inst.PID()
	if !processAlive(pid) {
		t.Fatalf("pid %d not running", pid)
	}
	start := time.Now()
	if err := inst.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop took %s", time.Since(start))
	if processAlive(pid) {
		t.Errorf("pid %d alive after Stop", pid)
	}
	if inst.PID() != 0 {
		t.Errorf("PID() = %d after Stop", inst.PID())
	}
	for _, port := range []int{inst.HTTPPort, inst.DicomPort} {
		l, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		if err != nil {
			t.Errorf("port %d still taken after Stop: %v", port, err)
			continue
		}
		l.Close()
	}
	if err := inst.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := inst.Do(http.MethodGet, "/system", nil, nil); err == nil {
		t.Errorf("Do after Stop succeeded")
	}
	// A caller-provided Dir is kept (with its log).
	if _, err := os.Stat(filepath.Join(dir, "stop.log")); err != nil {
		t.Errorf("log removed from caller's Dir: %v", err)
	}
}

func TestStopRemovesOwnTempDir(t *testing.T) {
	t.Parallel()
	inst, err := Start(Options{Name: "tmp"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(inst.Dir), "orthanc-tmp-") {
		t.Errorf("Dir = %s", inst.Dir)
	}
	if err := inst.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(inst.Dir); !os.IsNotExist(err) {
		t.Errorf("own temp dir still there: %v", err)
	}
}

// A port picked as free may be taken before Orthanc binds it (here by an
// impostor answering /system on loopback): Start must notice and retry on
// new ports.
func TestStartRetriesWhenPortTaken(t *testing.T) {
	impostor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"Name":"impostor"}`)
	}))
	defer impostor.Close()
	taken := impostor.Listener.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name  string
		first func(free int) (int, int)
	}{
		{name: "http port taken", first: func(free int) (int, int) { return taken, free }},
		{name: "dicom port taken", first: func(free int) (int, int) { return free, taken }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			pickPorts = func() (int, int, error) {
				calls++
				a, b, err := freePorts()
				if calls == 1 {
					a, b = tc.first(a)
				}
				return a, b, err
			}
			defer func() { pickPorts = freePorts }()

			inst := StartForTest(t, Options{Name: "retry"})
			if calls < 2 {
				t.Fatalf("pickPorts called %d times, want a retry", calls)
			}
			if inst.HTTPPort == taken || inst.DicomPort == taken {
				t.Fatalf("instance uses the taken port %d", taken)
			}
			var sys struct{ Name string }
			if err := inst.Do(http.MethodGet, "/system", nil, &sys); err != nil || sys.Name != inst.marker {
				t.Fatalf("/system = %+v, %v", sys, err)
			}
			logs, _ := inst.Logs()
			if n := strings.Count(string(logs), "=== orthancproc: start #"); n != calls {
				t.Errorf("log has %d start banners, want %d", n, calls)
			}
			if !strings.Contains(string(logs), "already in use") {
				t.Errorf("log does not show the first attempt's bind failure")
			}
		})
	}
}

// If the process that started Orthanc dies without calling Stop, Orthanc
// dies too (Pdeathsig) and frees its ports.
func TestNoOrphanWhenParentDies(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperStartAndHang$", "-test.v")
	cmd.Env = append(os.Environ(), "ORTHANCPROC_HELPER_DIR="+t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	var pid, port int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "ORTHANC pid=%d port=%d", &pid, &port); err == nil {
			break
		}
	}
	if pid == 0 {
		t.Fatalf("helper did not report an Orthanc pid")
	}
	go func() { // keep the pipe drained
		for sc.Scan() {
		}
	}()
	if !processAlive(pid) {
		t.Fatalf("Orthanc pid %d not running", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	deadline := time.Now().Add(10 * time.Second)
	for processAlive(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if processAlive(pid) {
		syscall.Kill(pid, syscall.SIGKILL) // do not leave it behind
		t.Fatalf("Orthanc pid %d survived its parent", pid)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		l, err := net.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		if err == nil {
			l.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d still taken after the orphan died: %v", port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHelperStartAndHang is the child process of TestNoOrphanWhenParentDies.
func TestHelperStartAndHang(t *testing.T) {
	dir := os.Getenv("ORTHANCPROC_HELPER_DIR")
	if dir == "" {
		return // only meaningful as a helper process
	}
	inst, err := Start(Options{Name: "orphan", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("ORTHANC pid=%d port=%d\n", inst.PID(), inst.HTTPPort)
	time.Sleep(time.Minute) // killed by the parent test long before this
	_ = inst.Stop()
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Field 3, after "pid (comm)", is the state.
	s := string(data)
	if k := strings.LastIndexByte(s, ')'); k >= 0 && k+2 < len(s) {
		return s[k+2] != 'Z' && s[k+2] != 'X'
	}
	return true
}

func contains(list []string, s string) bool {
	sorted := append([]string(nil), list...)
	sort.Strings(sorted)
	k := sort.SearchStrings(sorted, s)
	return k < len(sorted) && sorted[k] == s
}
