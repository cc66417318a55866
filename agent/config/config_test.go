package config

import (
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/winacl"
)

// fixture writes a key, a password file and a config file in a temp dir.
type fixture struct {
	dir, key, pw string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	dir := t.TempDir()
	f := fixture{dir: dir, key: filepath.Join(dir, "agent.key"), pw: filepath.Join(dir, "pw")}
	if _, err := agentkey.WriteNew(f.key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f fixture) base() map[string]any {
	return map[string]any{
		"Broker":        map[string]any{"Url": "https://broker.example.com", "AgentId": "clinic-a", "KeyFile": f.key, "HttpsCACertificates": "", "Timeout": "30s"},
		"Orthanc":       map[string]any{"Url": "http://127.0.0.1:8042", "Username": "agent", "PasswordFile": f.pw, "DicomWebRoot": "/dicom-web/"},
		"Accounts":      []string{},
		"ServerOptions": map[string]any{"HasDelete": true, "ChunkedTransfers": true, "Timeout": 600},
		"RefreshMargin": "10m", "CheckInterval": "10s", "Listen": "127.0.0.1:9750",
	}
}

func (f fixture) write(t *testing.T, doc any) string {
	t.Helper()
	var data []byte
	switch d := doc.(type) {
	case string:
		data = []byte(d)
	default:
		var err error
		if data, err = json.Marshal(d); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(f.dir, "agent.json")
	if err := os.WriteFile(p, data, 0o640); err != nil {
		t.Fatal(err)
	}
	return p
}

func noEnv(string) (string, bool) { return "", false }

func envMap(m map[string]string) LookupEnv {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoadDesignExample(t *testing.T) {
	f := newFixture(t)
	c, err := Load(f.write(t, f.base()), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.BrokerURL != "https://broker.example.com" || c.AgentID != "clinic-a" || c.BrokerTimeout != 30*time.Second {
		t.Errorf("broker fields: %+v", c)
	}
	if c.OrthancPassword != "s3cret" {
		t.Errorf("password = %q, want trailing newline trimmed", c.OrthancPassword)
	}
	if c.RefreshMargin != 10*time.Minute || c.CheckInterval != 10*time.Second || c.Listen != "127.0.0.1:9750" {
		t.Errorf("durations/listen: %+v", c)
	}
	if k, ok := c.Key.(ed25519.PrivateKey); !ok || len(k) != ed25519.PrivateKeySize || c.KeyKind != "file" ||
		c.KeyPublic != agentkey.FormatPublicKey(k.Public().(ed25519.PublicKey)) {
		t.Errorf("key not loaded: %T, kind %q, public %q", c.Key, c.KeyKind, c.KeyPublic)
	}
	if string(c.ServerOptions["Timeout"]) != "600" || string(c.ServerOptions["HasDelete"]) != "true" {
		t.Errorf("ServerOptions not kept as-is: %s", c.ServerOptions)
	}
}

func TestDefaults(t *testing.T) {
	f := newFixture(t)
	c, err := Load(f.write(t, map[string]any{
		"Broker": map[string]any{"Url": "https://b.example", "AgentId": "a", "KeyFile": f.key},
	}), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{BrokerTimeout: DefaultBrokerTimeout, OrthancURL: DefaultOrthancURL, DicomWebRoot: DefaultDicomWebRoot,
		RefreshMargin: DefaultRefreshMargin, CheckInterval: DefaultCheckInterval, StoresInterval: DefaultStoresInterval, Listen: DefaultListen}
	if c.BrokerTimeout != want.BrokerTimeout || c.OrthancURL != want.OrthancURL || c.DicomWebRoot != want.DicomWebRoot ||
		c.RefreshMargin != want.RefreshMargin || c.CheckInterval != want.CheckInterval || c.StoresInterval != want.StoresInterval ||
		c.Listen != want.Listen {
		t.Errorf("defaults: got %+v", c)
	}
	if c.OrthancUsername != "" || c.OrthancPassword != "" {
		t.Error("no credentials expected")
	}
	if c.ResubmitFailedJobs != DefaultResubmitFailedJobs || !c.ResubmitFailedJobs || c.StateDirectory != f.dir {
		t.Errorf("ResubmitFailedJobs %v (want true), StateDirectory %q (want the key's directory %q)", c.ResubmitFailedJobs, c.StateDirectory, f.dir)
	}
}

func TestValidation(t *testing.T) {
	f := newFixture(t)
	loose := filepath.Join(f.dir, "loose.key")
	if _, err := agentkey.WriteNew(loose); err != nil {
		t.Fatal(err)
	}
	if !loosen(t, loose, 0o644) {
		t.Fatal("the world-readable key's permissions were not kept")
	}
	groupKey := filepath.Join(f.dir, "group.key")
	agentkey.WriteNew(groupKey)
	skips := map[string]string{} // case name → why it cannot run here
	if !loosen(t, groupKey, 0o640) {
		skips["group-readable key"] = winacl.Dropped
	}
	emptyPw := filepath.Join(f.dir, "empty")
	os.WriteFile(emptyPw, nil, 0o600)
	notPEM := filepath.Join(f.dir, "ca.txt")
	os.WriteFile(notPEM, []byte("hello"), 0o644)

	set := func(path string, v any) func(map[string]any) {
		return func(m map[string]any) {
			parts := strings.Split(path, ".")
			cur := m
			for _, p := range parts[:len(parts)-1] {
				cur = cur[p].(map[string]any)
			}
			cur[parts[len(parts)-1]] = v
		}
	}
	tests := []struct {
		name   string
		mutate func(map[string]any)
		raw    string // used instead of the mutated base when set
		want   string // substring of the error (names the field)
	}{
		// The strict decoder names the whole key path.
		{"unknown top field", set("RefreshMargn", "5m"), "", `RefreshMargn: unknown field`},
		{"unknown nested field", set("Broker.Audience", "x"), "", `Broker.Audience: unknown field`},
		{"wrong type", set("Broker.Timeout", 30), "", "Broker.Timeout"},
		{"trailing data", nil, `{"Broker":{}} {}`, "unexpected data after the JSON value"},
		{"missing url", set("Broker.Url", ""), "", "Broker.Url: is required"},
		{"http broker not loopback", set("Broker.Url", "http://broker.example.com"), "", "Broker.Url: must use https"},
		{"ftp broker", set("Broker.Url", "ftp://b"), "", "Broker.Url"},
		{"relative broker", set("Broker.Url", "broker.example.com"), "", "Broker.Url"},
		{"broker userinfo", set("Broker.Url", "https://u:s3cret-pw@b.example"), "", "Broker.Url"},
		{"orthanc typo with password", set("Orthanc.Url", "htp://agent:s3cret-pw@127.0.0.1:8042"), "", "Orthanc.Url"},
		{"broker query", set("Broker.Url", "https://b.example/?x=1"), "", "Broker.Url"},
		{"missing agent", set("Broker.AgentId", ""), "", "Broker.AgentId"},
		{"agent spaces", set("Broker.AgentId", " a"), "", "Broker.AgentId"},
		{"bad timeout", set("Broker.Timeout", "30"), "", "Broker.Timeout"},
		{"negative timeout", set("Broker.Timeout", "-1s"), "", "Broker.Timeout"},
		{"missing key", set("Broker.KeyFile", ""), "", "Broker.KeyFile"},
		{"unreadable key", set("Broker.KeyFile", filepath.Join(f.dir, "nope")), "", "Broker.KeyFile"},
		{"world-readable key", set("Broker.KeyFile", loose), "", "Broker.KeyFile"},
		{"group-readable key", set("Broker.KeyFile", groupKey), "", "Broker.KeyFile"},
		{"key is not a key", set("Broker.KeyFile", f.pw), "", "Broker.KeyFile"},
		{"missing CA", set("Broker.HttpsCACertificates", filepath.Join(f.dir, "nope.pem")), "", "Broker.HttpsCACertificates"},
		{"CA not PEM", set("Broker.HttpsCACertificates", notPEM), "", "Broker.HttpsCACertificates"},
		{"orthanc url", set("Orthanc.Url", "127.0.0.1:8042"), "", "Orthanc.Url"},
		{"orthanc userinfo", set("Orthanc.Url", "http://agent:pw@127.0.0.1:8042"), "", "Orthanc.Url"},
		{"root with query", set("Orthanc.DicomWebRoot", "/dicom-web/?x"), "", "Orthanc.DicomWebRoot"},
		{"username without password", set("Orthanc.PasswordFile", ""), "", "Orthanc.PasswordFile"},
		{"password without username", set("Orthanc.Username", ""), "", "Orthanc.Username"},
		{"missing password file", set("Orthanc.PasswordFile", filepath.Join(f.dir, "nope")), "", "Orthanc.PasswordFile"},
		{"empty password file", set("Orthanc.PasswordFile", emptyPw), "", "Orthanc.PasswordFile"},
		{"empty account", set("Accounts", []string{"a", ""}), "", "Accounts[1]"},
		{"slash account", set("Accounts", []string{"a/b"}), "", "Accounts[0]"},
		{"duplicate account", set("Accounts", []string{"a", "a"}), "", "Accounts[1]"},
		{"reserved option Url", set("ServerOptions", map[string]any{"Url": "x"}), "", "ServerOptions.Url"},
		{"reserved option headers", set("ServerOptions", map[string]any{"httpheaders": map[string]string{}}), "", "ServerOptions.httpheaders"},
		{"reserved option marker", set("ServerOptions", map[string]any{"OrthancGcpAgent": "x"}), "", "ServerOptions.OrthancGcpAgent"},
		{"object option", set("ServerOptions", map[string]any{"Foo": map[string]any{}}), "", "ServerOptions.Foo"},
		{"null option", set("ServerOptions", map[string]any{"Foo": nil}), "", "ServerOptions.Foo"},
		{"bad margin", set("RefreshMargin", "ten minutes"), "", "RefreshMargin"},
		{"zero margin", set("RefreshMargin", "0s"), "", "RefreshMargin"},
		{"bad interval", set("CheckInterval", "10"), "", "CheckInterval"},
		{"tiny interval", set("CheckInterval", "100ms"), "", "CheckInterval"},
		{"bad listen", set("Listen", "9750"), "", "Listen"},
		{"bad stores interval", set("StoresInterval", "1"), "", "StoresInterval"},
		{"zero stores interval", set("StoresInterval", "0s"), "", "StoresInterval: must be positive"},
		{"negative stores interval", set("StoresInterval", "-1m"), "", "StoresInterval: must be positive"},
		{"tiny stores interval", set("StoresInterval", "10ms"), "", "StoresInterval: must be at least 1s"},
		{"resubmit not a bool", set("ResubmitFailedJobs", "yes"), "", "ResubmitFailedJobs"},
		{"missing state directory", set("StateDirectory", filepath.Join(f.dir, "nope")), "", "StateDirectory"},
		{"state directory is a file", set("StateDirectory", f.pw), "", "StateDirectory: " + f.pw + " is not a directory"},
		{"state directory control char", set("StateDirectory", "/var/lib/x\n"), "", "StateDirectory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if why := skips[tc.name]; why != "" {
				t.Skip(why)
			}
			var doc any = tc.raw
			if tc.raw == "" {
				m := f.base()
				tc.mutate(m)
				doc = m
			}
			_, err := Load(f.write(t, doc), noEnv)
			if err == nil {
				t.Fatalf("accepted; want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error leaks the password: %q", err)
			}
		})
	}
}

func TestAccepted(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name  string
		key   string
		value any
		check func(*testing.T, *Config)
	}{
		{"http loopback broker", "Broker.Url", "http://127.0.0.1:8080", func(t *testing.T, c *Config) {}},
		{"http localhost broker", "Broker.Url", "http://localhost:8080/", func(t *testing.T, c *Config) {
			if c.BrokerURL != "http://localhost:8080/" {
				t.Errorf("BrokerURL must stay as configured (it is the aud), got %q", c.BrokerURL)
			}
		}},
		{"http ipv6 loopback", "Broker.Url", "http://[::1]:8080", func(t *testing.T, c *Config) {}},
		{"root without slashes", "Orthanc.DicomWebRoot", "dicom-web", func(t *testing.T, c *Config) {
			if c.DicomWebRoot != "/dicom-web/" {
				t.Errorf("root %q", c.DicomWebRoot)
			}
		}},
		{"orthanc url trailing slash", "Orthanc.Url", "http://127.0.0.1:8042/", func(t *testing.T, c *Config) {
			if c.OrthancURL != "http://127.0.0.1:8042" {
				t.Errorf("url %q", c.OrthancURL)
			}
		}},
		{"empty listen disables", "Listen", "", func(t *testing.T, c *Config) {
			if c.Listen != "" {
				t.Errorf("listen %q", c.Listen)
			}
		}},
		{"accounts sorted", "Accounts", []string{"b", "a"}, func(t *testing.T, c *Config) {
			if strings.Join(c.Accounts, ",") != "a,b" {
				t.Errorf("accounts %v", c.Accounts)
			}
		}},
		{"stores interval", "StoresInterval", "90s", func(t *testing.T, c *Config) {
			if c.StoresInterval != 90*time.Second {
				t.Errorf("StoresInterval %v", c.StoresInterval)
			}
		}},
		{"stores interval default", "StoresInterval", "", func(t *testing.T, c *Config) {
			if c.StoresInterval != DefaultStoresInterval || DefaultStoresInterval != time.Minute {
				t.Errorf("StoresInterval %v, want 1m", c.StoresInterval)
			}
		}},
		{"resubmit off", "ResubmitFailedJobs", false, func(t *testing.T, c *Config) {
			if c.ResubmitFailedJobs {
				t.Error("ResubmitFailedJobs still on")
			}
		}},
		{"resubmit off: state directory not checked", "StateDirectory", "/nonexistent/state", func(t *testing.T, c *Config) {}},
		{"state directory set", "StateDirectory", os.TempDir(), func(t *testing.T, c *Config) {
			if c.StateDirectory != filepath.Clean(os.TempDir()) {
				t.Errorf("StateDirectory %q", c.StateDirectory)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := f.base()
			if strings.HasPrefix(tc.name, "resubmit off") {
				m["ResubmitFailedJobs"] = false
			}
			parts := strings.Split(tc.key, ".")
			if len(parts) == 2 {
				m[parts[0]].(map[string]any)[parts[1]] = tc.value
			} else {
				m[tc.key] = tc.value
			}
			c, err := Load(f.write(t, m), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestEnvOverridesEveryField(t *testing.T) {
	f := newFixture(t)
	key2 := filepath.Join(f.dir, "other.key")
	agentkey.WriteNew(key2)
	pw2 := filepath.Join(f.dir, "pw2")
	os.WriteFile(pw2, []byte("other"), 0o600)
	ca := filepath.Join(f.dir, "ca.pem")
	os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644)
	stateDir := t.TempDir()
	env := map[string]string{
		"AGENT_BROKER_URL":                   "https://other.example/",
		"AGENT_BROKER_AGENT_ID":              "clinic-b",
		"AGENT_BROKER_KEY_FILE":              key2,
		"AGENT_BROKER_HTTPS_CA_CERTIFICATES": ca,
		"AGENT_BROKER_TIMEOUT":               "5s",
		"AGENT_ORTHANC_URL":                  "https://orthanc.local:8043",
		"AGENT_ORTHANC_USERNAME":             "bob",
		"AGENT_ORTHANC_PASSWORD_FILE":        pw2,
		"AGENT_ORTHANC_DICOMWEB_ROOT":        "/dw/",
		"AGENT_ACCOUNTS":                     "x, y",
		"AGENT_SERVER_OPTIONS":               `{"HasDelete":false}`,
		"AGENT_REFRESH_MARGIN":               "20m",
		"AGENT_CHECK_INTERVAL":               "30s",
		"AGENT_LISTEN":                       "127.0.0.1:0",
		"AGENT_ALLOWED_DICOMWEB_HOSTS":       " Healthcare.googleapis.com, 127.0.0.1:8080 ,",
		"AGENT_STORES_INTERVAL":              "5m",
		"AGENT_RESUBMIT_FAILED_JOBS":         "false",
		"AGENT_STATE_DIRECTORY":              stateDir,
		"AGENT_TPM_DEVICE":                   "/dev/tpm-other",
	}
	if len(env) != len(EnvVars) {
		t.Fatalf("test covers %d variables, EnvVars has %d", len(env), len(EnvVars))
	}
	c, err := Load(f.write(t, f.base()), envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.BrokerURL, c.AgentID, c.KeyFile, c.CAFile, c.BrokerTimeout, c.OrthancURL, c.OrthancUsername,
		c.OrthancPassword, c.DicomWebRoot, strings.Join(c.Accounts, ","), string(c.ServerOptions["HasDelete"]),
		len(c.ServerOptions), c.RefreshMargin, c.CheckInterval, c.Listen, strings.Join(c.AllowedDicomWebHosts, ",")}
	want := []any{"https://other.example/", "clinic-b", key2, ca, 5 * time.Second, "https://orthanc.local:8043", "bob",
		"other", "/dw/", "x,y", "false", 1, 20 * time.Minute, 30 * time.Second, "127.0.0.1:0",
		"healthcare.googleapis.com,127.0.0.1:8080"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("field %d: got %v, want %v", i, got[i], want[i])
		}
	}
	if c.TpmDevice != "/dev/tpm-other" || c.KeyKind != "file" {
		t.Errorf("TpmDevice %q, KeyKind %q", c.TpmDevice, c.KeyKind)
	}
	if c.StoresInterval != 5*time.Minute || c.ResubmitFailedJobs || c.StateDirectory != stateDir {
		t.Errorf("StoresInterval %v, ResubmitFailedJobs %v, StateDirectory %q", c.StoresInterval, c.ResubmitFailedJobs, c.StateDirectory)
	}
}

func TestEnvOnlyAndEnvErrors(t *testing.T) {
	f := newFixture(t)
	c, err := Load("", envMap(map[string]string{
		"AGENT_BROKER_URL": "https://b.example", "AGENT_BROKER_AGENT_ID": "a", "AGENT_BROKER_KEY_FILE": f.key,
	}))
	if err != nil || c.AgentID != "a" {
		t.Fatalf("env-only config: %v %+v", err, c)
	}
	tests := map[string]string{
		"AGENT_REFRESH_MARGIN":       "soon",
		"AGENT_SERVER_OPTIONS":       `[1]`,
		"AGENT_BROKER_URL":           "http://10.0.0.1",
		"AGENT_STORES_INTERVAL":      "0s",
		"AGENT_RESUBMIT_FAILED_JOBS": "maybe",
		"AGENT_STATE_DIRECTORY":      "/nonexistent/state",
	}
	for k, v := range tests {
		_, err := Load(f.write(t, f.base()), envMap(map[string]string{k: v}))
		if err == nil {
			t.Errorf("%s=%s accepted", k, v)
		}
	}
}

func TestListenAddress(t *testing.T) {
	f := newFixture(t)
	// ListenAddress must not need the key: point KeyFile at nothing.
	m := f.base()
	m["Broker"].(map[string]any)["KeyFile"] = "/nonexistent"
	m["Listen"] = "127.0.0.1:9999"
	p := f.write(t, m)
	tests := []struct {
		path string
		env  map[string]string
		want string
		err  bool
	}{
		{p, nil, "127.0.0.1:9999", false},
		{p, map[string]string{"AGENT_LISTEN": "127.0.0.1:1"}, "127.0.0.1:1", false},
		{"", nil, DefaultListen, false},
		{p, map[string]string{"AGENT_LISTEN": ""}, "", true},
		{filepath.Join(f.dir, "missing.json"), nil, "", true},
	}
	for i, tc := range tests {
		got, err := ListenAddress(tc.path, envMap(tc.env))
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("%d: got %q, %v", i, got, err)
		}
	}
}

// TestBrokerURLBearerRule: Broker.Url follows urlrule's bearer rule (https,
// or http to loopback only) and names the field when it does not.
func TestBrokerURLBearerRule(t *testing.T) {
	tests := map[string]bool{
		"https://healthcare.googleapis.com/v1/x/dicomWeb/": true,
		"http://127.0.0.1:9000/dicomWeb/":                  true,
		"http://localhost/x":                               true,
		"http://healthcare.googleapis.com/v1/":             false,
		"ftp://x/":                                         false,
		"/relative":                                        false,
		"https://u:p@host/":                                false,
	}
	for u, ok := range tests {
		err := checkBrokerURL(u)
		if (err == nil) != ok {
			t.Errorf("%s: err=%v want ok=%v", u, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "Broker.Url") {
			t.Errorf("%s: error %q does not name the field", u, err)
		}
	}
}
