package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// FuzzParse feeds arbitrary bytes through the configuration parser and,
// when they parse, through Resolve (with the file paths pointed at real
// fixtures, so no fuzzed path is ever opened). It must not panic, must be
// deterministic, must never echo the Orthanc password, and whatever it
// accepts must satisfy the rules the rest of the agent relies on.
func FuzzParse(f *testing.F) {
	dir := f.TempDir()
	key := filepath.Join(dir, "agent.key")
	if _, err := agentkey.WriteNew(key); err != nil {
		f.Fatal(err)
	}
	const password = "fuzz-orthanc-password-0123456789"
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o640); err != nil {
		f.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		f.Fatal(err)
	}
	seeds := []string{
		`{"Broker":{"Url":"https://broker-abc-ew.a.run.app","AgentId":"clinic-a","KeyFile":"k","HttpsCACertificates":"","Timeout":"30s"},
		  "Orthanc":{"Url":"http://127.0.0.1:8042","Username":"agent","PasswordFile":"p","DicomWebRoot":"/dicom-web/"},
		  "Accounts":[],"ServerOptions":{"HasDelete":true,"ChunkedTransfers":true,"Timeout":600},
		  "RefreshMargin":"10m","CheckInterval":"10s","Listen":"127.0.0.1:9750",
		  "AllowedDicomWebHosts":["healthcare.googleapis.com"]}`,
		`{"Broker":{"Url":"http://127.0.0.1:1","AgentId":"a","KeyFile":"k"},"AllowedDicomWebHosts":["[::1]:9000","LOCALHOST:1"]}`,
		`{"Broker":{"Url":"https://b","AgentId":"a","KeyFile":"k"},"Accounts":["../../peers/evil",".."]}`,
		`{"Broker":{"Url":"https://b","AgentId":"a","KeyFile":"k"},"AllowedDicomWebHosts":[]}`,
		`{"Listen":"a","Listen":"b"}`,
		`{"listen":""}`,
		`{"ServerOptions":{"a":{"b":[1,2,{"c":null}]}}}`,
		`{} {}`,
		`[`,
		`{"Orthanc":{"Url":"http://orthanc:8042"}}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		file2, err2 := Parse(data)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("Parse is not deterministic: %v / %v", err, err2)
		}
		if err != nil {
			if file != nil {
				t.Fatal("Parse returned a File with an error")
			}
			return
		}
		// encoding/json must read an accepted document the same way.
		var plain File
		if err := json.Unmarshal(data, &plain); err != nil {
			t.Fatalf("strict Parse accepted what encoding/json refuses: %v", err)
		}
		if a, b := mustMarshal(t, file), mustMarshal(t, file2); a != b {
			t.Fatalf("Parse gave two results:\n%s\n%s", a, b)
		}
		// Never open a fuzzed path: point the files at the fixtures.
		file.Broker.KeyFile = key
		if file.Broker.HttpsCACertificates != "" {
			file.Broker.HttpsCACertificates = ca
		}
		if file.Orthanc.PasswordFile != "" {
			file.Orthanc.PasswordFile = pw
		}
		c, err := file.Resolve()
		if err != nil {
			if strings.Contains(err.Error(), password) {
				t.Fatalf("error echoes the password: %v", err)
			}
			return
		}
		if len(c.AllowedDicomWebHosts) == 0 {
			t.Fatal("accepted a configuration that allows no DICOMweb host")
		}
		// The list is the gate's own: it builds again to the same hosts.
		if list, err := urlrule.NewAllowList(c.AllowedDicomWebHosts); err != nil || !slices.Equal(list.Hosts(), c.AllowedDicomWebHosts) {
			t.Fatalf("accepted hosts %q are not a normalized allow-list: %v", c.AllowedDicomWebHosts, err)
		}
		for _, h := range c.AllowedDicomWebHosts {
			if h != strings.ToLower(h) {
				t.Fatalf("accepted host entry %q is not lower case", h)
			}
		}
		for _, a := range c.Accounts {
			if !wire.ValidStoreName(a) {
				t.Fatalf("accepted account %q that breaks the name rule", a)
			}
		}
		if c.CheckInterval < 1e9 || c.RefreshMargin <= 0 || c.BrokerTimeout <= 0 {
			t.Fatalf("accepted durations %v %v %v", c.CheckInterval, c.RefreshMargin, c.BrokerTimeout)
		}
		for _, w := range c.Warnings {
			if strings.Contains(w, password) {
				t.Fatalf("warning echoes the password: %q", w)
			}
		}
	})
}

func mustMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
