//go:build !windows

package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/strictjson"
)

// TestAllowedDicomWebHostsConfig: the field's default, how a configured
// list (file or AGENT_ALLOWED_DICOMWEB_HOSTS) replaces it, its
// normalization, and the errors that name the field.
func TestAllowedDicomWebHostsConfig(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name    string
		file    any               // the field's value in the file; nil: left out
		env     map[string]string // environment overrides
		want    string            // the resolved list, comma-joined, when no error
		wantErr string            // substring of the error
	}{
		{name: "default", want: "healthcare.googleapis.com"},
		{name: "null is the default", file: "null", want: "healthcare.googleapis.com"},
		{name: "list replaces the default", file: []string{"healthcare.europe-west4.rep.googleapis.com"},
			want: "healthcare.europe-west4.rep.googleapis.com"},
		{name: "normalized", file: []string{"HealthCare.GoogleAPIs.com", "127.0.0.1:08080", "[::1]:9000", "[0:0::1]"},
			want: "healthcare.googleapis.com,127.0.0.1:8080,[::1]:9000,[::1]"},
		{name: "env replaces the file", file: []string{"a.example"}, env: map[string]string{"AGENT_ALLOWED_DICOMWEB_HOSTS": "b.example, localhost:1"},
			want: "b.example,localhost:1"},
		{name: "empty list", file: []string{}, wantErr: "AllowedDicomWebHosts: is empty"},
		{name: "empty env", env: map[string]string{"AGENT_ALLOWED_DICOMWEB_HOSTS": " , "}, wantErr: "AllowedDicomWebHosts: is empty"},
		{name: "empty entry", file: []string{"a.example", ""}, wantErr: "AllowedDicomWebHosts[1]"},
		{name: "url", file: []string{"https://healthcare.googleapis.com/"}, wantErr: "AllowedDicomWebHosts[0]"},
		{name: "user info", file: []string{"u@healthcare.googleapis.com"}, wantErr: "AllowedDicomWebHosts[0]"},
		{name: "wildcard", file: []string{"*.googleapis.com"}, wantErr: "AllowedDicomWebHosts[0]: \"*.googleapis.com\" has a wildcard"},
		{name: "port zero", file: []string{"h.example:0"}, wantErr: "AllowedDicomWebHosts[0]"},
		{name: "port too big", file: []string{"h.example:65536"}, wantErr: "AllowedDicomWebHosts[0]"},
		{name: "empty port", file: []string{"h.example:"}, wantErr: "AllowedDicomWebHosts[0]"},
		{name: "ipv6 without brackets", file: []string{"::1"}, wantErr: "brackets"},
		{name: "brackets around ipv4", file: []string{"[127.0.0.1]:80"}, wantErr: "AllowedDicomWebHosts[0]"},
		{name: "trailing dot", file: []string{"healthcare.googleapis.com."}, wantErr: "AllowedDicomWebHosts[0]"},
		{name: "bad label", file: []string{"-x.example"}, wantErr: "AllowedDicomWebHosts[0]"},
		{name: "space", file: []string{"a .example"}, wantErr: "AllowedDicomWebHosts[0]"},
		{name: "duplicate after normalizing", file: []string{"A.example", "a.example"}, wantErr: "AllowedDicomWebHosts[1]: \"a.example\" is listed twice"},
		{name: "wrong type", file: "\"healthcare.googleapis.com\"", wantErr: "AllowedDicomWebHosts"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := f.base()
			switch v := tc.file.(type) {
			case nil:
			case string:
				m["AllowedDicomWebHosts"] = rawJSON(v)
			default:
				m["AllowedDicomWebHosts"] = v
			}
			c, err := Load(f.write(t, m), envMap(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(c.AllowedDicomWebHosts, ","); got != tc.want {
				t.Errorf("AllowedDicomWebHosts = %q, want %q", got, tc.want)
			}
		})
	}
	// The default is not shared: changing one Config's list leaves it alone.
	c, err := Load(f.write(t, f.base()), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	c.AllowedDicomWebHosts[0] = "changed.example"
	if DefaultAllowedDicomWebHosts[0] != "healthcare.googleapis.com" {
		t.Error("a Config aliases DefaultAllowedDicomWebHosts")
	}
}

// rawJSON is a value that json.Marshal writes as it is.
type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }

// TestStrictDecoding: the file and AGENT_SERVER_OPTIONS go through the
// one strict decoder. encoding/json alone accepted every case here.
func TestStrictDecoding(t *testing.T) {
	f := newFixture(t)
	base := `"Broker":{"Url":"https://b.example","AgentId":"a","KeyFile":` + quote(f.key) + `}`
	tests := []struct {
		name string
		doc  string
		env  map[string]string
		want string // substring of the error
	}{
		{"duplicate top key", `{` + base + `,"CheckInterval":"10s","CheckInterval":"1h"}`, nil, "CheckInterval: duplicate key"},
		{"duplicate nested key", `{"Broker":{"Url":"https://b.example","Url":"https://evil.example","AgentId":"a","KeyFile":` + quote(f.key) + `}}`, nil,
			"Broker.Url: duplicate key"},
		{"duplicate option key", `{` + base + `,"ServerOptions":{"HasDelete":true,"HasDelete":false}}`, nil, "ServerOptions.HasDelete: duplicate key"},
		{"case-only top key", `{` + base + `,"checkinterval":"1h"}`, nil, `write "CheckInterval"`},
		{"case-only nested key", `{"Broker":{"url":"https://b.example","AgentId":"a","KeyFile":` + quote(f.key) + `}}`, nil, "Broker.url"},
		{"case-only allowed hosts", `{` + base + `,"allowedDicomWebHosts":["evil.example"]}`, nil, `write "AllowedDicomWebHosts"`},
		{"trailing object", `{` + base + `}{"Listen":""}`, nil, "after the JSON value"},
		{"trailing garbage", `{` + base + `} x`, nil, "after the JSON value"},
		{"not an object", `[]`, nil, "wrong type"},
		{"env options duplicate", `{` + base + `}`, map[string]string{"AGENT_SERVER_OPTIONS": `{"Timeout":1,"Timeout":2}`}, "AGENT_SERVER_OPTIONS"},
		{"env options trailing", `{` + base + `}`, map[string]string{"AGENT_SERVER_OPTIONS": `{"Timeout":1} {}`}, "AGENT_SERVER_OPTIONS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(f.write(t, tc.doc), envMap(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one containing %q", err, tc.want)
			}
		})
	}
	// Parse itself returns strictjson's error, with the key path.
	_, err := Parse([]byte(`{"Listen":"a","Listen":"b"}`))
	var se *strictjson.Error
	if !errors.As(err, &se) || se.Path != "Listen" {
		t.Errorf("Parse error %v, want a *strictjson.Error at Listen", err)
	}
	// ListenAddress reads with the same decoder.
	if _, err := ListenAddress(f.write(t, `{"Listen":"127.0.0.1:1","Listen":"127.0.0.1:2"}`), noEnv); err == nil {
		t.Error("ListenAddress accepted a duplicate key")
	}
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `\`, `\\`) + `"` }

// TestPasswordFileMode: Orthanc.PasswordFile with any permission bit for
// others is refused naming the field; group-readable (0640) is fine.
func TestPasswordFileMode(t *testing.T) {
	f := newFixture(t)
	fifo := filepath.Join(f.dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mode os.FileMode
		path string // instead of a fresh file of that mode
		ok   bool
	}{
		{name: "0600", mode: 0o600, ok: true},
		{name: "0640 group-readable", mode: 0o640, ok: true},
		{name: "0440", mode: 0o440, ok: true},
		{name: "0400", mode: 0o400, ok: true},
		{name: "0644 world-readable", mode: 0o644},
		{name: "0604", mode: 0o604},
		{name: "0444", mode: 0o444},
		{name: "0602 world-writable", mode: 0o602},
		{name: "0601", mode: 0o601},
		{name: "0666", mode: 0o666},
		{name: "directory", path: f.dir},
		{name: "fifo", path: fifo},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if path == "" {
				path = filepath.Join(t.TempDir(), "pw")
				if err := os.WriteFile(path, []byte("s3cret\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tc.mode); err != nil {
					t.Fatal(err)
				}
			}
			m := f.base()
			m["Orthanc"].(map[string]any)["PasswordFile"] = path
			c, err := Load(f.write(t, m), noEnv)
			if tc.ok {
				if err != nil || c.OrthancPassword != "s3cret" {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), "Orthanc.PasswordFile") || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q must name Orthanc.PasswordFile and not echo the password", err)
			}
		})
	}
}

// TestOrthancURLWarning: plain http to a host that is not loopback is
// allowed with one warning; loopback and https give none.
func TestOrthancURLWarning(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		url  string
		warn bool
	}{
		{"http://127.0.0.1:8042", false},
		{"http://localhost:8042", false},
		{"http://[::1]:8042", false},
		{"https://orthanc.lan:8043", false},
		{"http://orthanc:8042", true},
		{"http://10.1.2.3:8042/", true},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			m := f.base()
			m["Orthanc"].(map[string]any)["Url"] = tc.url
			c, err := Load(f.write(t, m), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(c.Warnings); (got == 1) != tc.warn || got > 1 {
				t.Fatalf("warnings %q, want warn=%v", c.Warnings, tc.warn)
			}
			if tc.warn && (!strings.Contains(c.Warnings[0], "Orthanc.Url") || !strings.Contains(c.Warnings[0], "clear")) {
				t.Errorf("warning %q should name Orthanc.Url and say the tokens go in clear", c.Warnings[0])
			}
		})
	}
}

// TestAccountsNameRule: Accounts entries follow the broker's store name
// rule; "." and ".." never pass its first character.
func TestAccountsNameRule(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		ok   bool
	}{
		{"my-google", true},
		{"a", true},
		{"A.b_c-9", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{".", false},
		{"..", false},
		{".hidden", false},
		{"-x", false},
		{"_x", false},
		{"a b", false},
		{"a/b", false},
		{"../../peers/evil", false},
		{"a%2Fb", false},
		{"é", false},
	}
	for _, tc := range tests {
		m := f.base()
		m["Accounts"] = []string{tc.name}
		_, err := Load(f.write(t, m), noEnv)
		if (err == nil) != tc.ok {
			t.Errorf("Accounts [%q]: err %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "Accounts[0]") {
			t.Errorf("Accounts [%q]: error %q does not name the field", tc.name, err)
		}
	}
}
