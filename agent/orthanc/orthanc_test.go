//go:build !windows

package orthanc

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
)

func TestDefinitionJSON(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	d := Definition{URL: "https://h/dicomWeb/", Token: "tok", Marker: "clinic-a", Expiry: exp,
		Options: map[string]json.RawMessage{"HasDelete": json.RawMessage("true"), "Timeout": json.RawMessage("600")}}
	data, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	json.Unmarshal(data, &got)
	want := map[string]any{
		"Url": "https://h/dicomWeb/", "HttpHeaders": map[string]any{"Authorization": "Bearer tok"},
		"HasDelete": true, "Timeout": float64(600), "OrthancGcpAgent": "clinic-a", "TokenExpiry": "2030-01-02T02:04:05Z",
		"TokenSha256": wire.Fingerprint("tok"),
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if gj, wj := mustJSON(got[k]), mustJSON(v); gj != wj {
			t.Errorf("%s = %s, want %s", k, gj, wj)
		}
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestRealOrthanc runs the client against Orthanc 1.10 + DICOMweb 1.7 from
// the Debian packages.
func TestRealOrthanc(t *testing.T) {
	if err := orthancproc.Available(); err != nil {
		t.Fatal(err) // an integration test that silently skips proves nothing
	}
	inst, err := orthancproc.Start(orthancproc.Options{
		Name:  "agentclient",
		Users: map[string]string{"agent": "pw-agent"},
		DicomWebServers: map[string]any{
			"from-config": map[string]any{"Url": "https://config.example/dicomWeb/"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Stop()
	ctx := context.Background()
	c := mustNew(t, Options{URL: inst.URL, DicomWebRoot: "/dicom-web/", Username: "agent", Password: "pw-agent"}, "healthcare.googleapis.com")

	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	wrong := mustNew(t, Options{URL: inst.URL, Username: "agent", Password: "nope"})
	if err := wrong.Ping(ctx); err == nil || Unreachable(err) || !strings.Contains(err.Error(), "401") {
		t.Errorf("bad password: %v", err)
	}

	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	const token = "ya29.real-orthanc-test-token"
	def := Definition{URL: "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/s/dicomWeb/",
		Token: token, Marker: "clinic-a", Expiry: exp,
		Options: map[string]json.RawMessage{"HasDelete": json.RawMessage("true"), "ChunkedTransfers": json.RawMessage("false"), "Timeout": json.RawMessage("600")}}
	if err := c.PutServer(ctx, "my-google", def); err != nil {
		t.Fatalf("put: %v", err)
	}
	// A second agent's entry and a name that needs escaping.
	other := def
	other.Marker = "clinic-b"
	if err := c.PutServer(ctx, "their store", other); err != nil {
		t.Fatalf("put escaped name: %v", err)
	}

	servers, err := c.ListServers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mine := servers["my-google"]
	if !mine.ManagedBy("clinic-a") || mine.ManagedBy("clinic-b") || mine.ManagedBy("") {
		t.Errorf("marker detection: %+v", mine)
	}
	if mine.URL != def.URL || mine.Properties[ExpiryProperty] != FormatExpiry(exp) {
		t.Errorf("entry %+v", mine)
	}
	if mine.Properties["HasDelete"] != "1" || mine.Properties["ChunkedTransfers"] != "0" {
		t.Errorf("bool user properties: %+v", mine.Properties)
	}
	if len(mine.HeaderNames) != 1 || mine.HeaderNames[0] != "Authorization" {
		t.Errorf("header names %v", mine.HeaderNames)
	}
	cfgSrv := servers["from-config"]
	if cfgSrv.URL != "https://config.example/dicomWeb/" || cfgSrv.ManagedBy("clinic-a") {
		t.Errorf("config server %+v", cfgSrv)
	}
	if !servers["their store"].ManagedBy("clinic-b") {
		t.Errorf("escaped name entry: %+v", servers["their store"])
	}
	// Path escaping is not enough: this Orthanc decodes %2F and resolves
	// "..", so PUT servers/..%2F..%2Fpeers%2Fevil would create a peer. The
	// client refuses the name before sending anything.
	if err := c.PutServer(ctx, "../../peers/evil", def); !errors.Is(err, ErrBadServerName) {
		t.Errorf("traversal name: %v, want ErrBadServerName", err)
	}
	var peers map[string]any
	if err := inst.Do("GET", "/peers?expand", nil, &peers); err != nil || len(peers) != 0 {
		t.Errorf("peers after a traversal name: %v %v", peers, err)
	}
	raw, _ := json.Marshal(servers)
	if strings.Contains(string(raw), token) {
		t.Error("Orthanc listed the token value")
	}

	// A PUT replaces the whole entry: an option left out disappears.
	def2 := def
	def2.Options = nil
	def2.Expiry = exp.Add(time.Hour)
	if err := c.PutServer(ctx, "my-google", def2); err != nil {
		t.Fatal(err)
	}
	servers, _ = c.ListServers(ctx)
	if _, ok := servers["my-google"].Properties["HasDelete"]; ok {
		t.Error("PUT did not replace the entry")
	}
	if servers["my-google"].Properties[ExpiryProperty] != FormatExpiry(exp.Add(time.Hour)) {
		t.Error("expiry not updated")
	}

	// An entry without Url never leaves the client: its allow-list refuses
	// it (TestPutServerRefusedURLNeverSent counts the requests).
	bad := def
	bad.URL = ""
	err = c.PutServer(ctx, "broken", bad)
	var re *urlrule.RefusedError
	if !errors.As(err, &re) || strings.Contains(err.Error(), token) {
		t.Errorf("put without url: %v", err)
	}
	// Orthanc refuses an entry it cannot read; the error does not echo the body.
	bad = def
	bad.Options = map[string]json.RawMessage{"Timeout": json.RawMessage(`"soon"`)}
	err = c.PutServer(ctx, "broken", bad)
	var oe *Error
	if !errors.As(err, &oe) || oe.Status != 400 || strings.Contains(err.Error(), token) {
		t.Errorf("put of an unreadable entry: %v", err)
	}

	if err := c.DeleteServer(ctx, "my-google"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := c.DeleteServer(ctx, "my-google"); !errors.Is(err, ErrNoSuchServer) {
		t.Errorf("delete missing: %v, want ErrNoSuchServer", err)
	}
	servers, _ = c.ListServers(ctx)
	if _, ok := servers["my-google"]; ok {
		t.Error("entry still listed after delete")
	}
	if _, ok := servers["from-config"]; !ok {
		t.Error("config-file server vanished")
	}

	// Many calls spaced around Orthanc's ~1 s keep-alive timeout must not
	// fail with EOF on a reused connection.
	for i := 0; i < 3; i++ {
		time.Sleep(1100 * time.Millisecond)
		if err := c.PutServer(ctx, "my-google", def); err != nil {
			t.Fatalf("put after idle %d: %v", i, err)
		}
	}

	inst.Stop()
	if err := c.Ping(ctx); !Unreachable(err) {
		t.Errorf("stopped Orthanc: %v, want unreachable", err)
	}
}

// TestUnsafeServerNamesNeverSent: a name that cannot stay one path segment
// is refused before any request (Orthanc decodes %2F and resolves "..",
// so escaping alone would let "../../peers/evil" write a peer); any other
// name is path-escaped.
func TestUnsafeServerNamesNeverSent(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.EscapedPath())
		w.Write([]byte("{}"))
	}))
	defer srv.Close()
	c := mustNew(t, Options{URL: srv.URL}, "h")
	ctx := context.Background()
	def := Definition{URL: "https://h/dicomWeb/", Token: "tok", Marker: "m", Expiry: time.Now()}
	tests := []struct {
		name string
		path string // "": refused with ErrBadServerName
	}{
		{"", ""}, {".", ""}, {"..", ""}, {"../../peers/evil", ""}, {"a/b", ""}, {`a\b`, ""}, {"a\nb", ""}, {"a\x7f", ""},
		{"my-google", "/dicom-web/servers/my-google"},
		{"their store", "/dicom-web/servers/their%20store"},
		{"a%2Fb", "/dicom-web/servers/a%252Fb"},
		{"...", "/dicom-web/servers/..."},
	}
	for _, tc := range tests {
		for _, op := range []string{"PUT", "DELETE"} {
			got = nil
			var err error
			if op == "PUT" {
				err = c.PutServer(ctx, tc.name, def)
			} else {
				err = c.DeleteServer(ctx, tc.name)
			}
			if tc.path == "" {
				if !errors.Is(err, ErrBadServerName) || len(got) != 0 {
					t.Errorf("%s %q: err %v, requests %v; want ErrBadServerName and none", op, tc.name, err, got)
				}
				continue
			}
			if err != nil || len(got) != 1 || got[0] != op+" "+tc.path {
				t.Errorf("%s %q: err %v, requests %v; want %s %s", op, tc.name, err, got, op, tc.path)
			}
		}
	}
}
