//go:build !windows

package orthanc

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
)

// Job listings as Orthanc writes them (trimmed copies of measured answers).
const (
	jobs17 = `[{"CompletionTime":"20261201T225918.340125","Content":{"FunctionErrorCode":29,"FunctionErrorDescription":"Bad credentials were provided to an HTTP request","InstancesCount":"1","NetworkSizeMB":"0"},
"CreationTime":"20261201T225917.839322","EffectiveRuntime":0.5,"ErrorCode":1,"ErrorDescription":"Error encountered within the plugin engine","ErrorDetails":"","ID":"cfea438e","Priority":0,"Progress":0,"State":"Failure","Timestamp":"20261201T225921.073440","Type":"DicomWebStowClient"}]`
	jobs120 = `[{"Content":{"FunctionErrorCode":29,"InstancesCount":"2","NetworkSizeMB":"0","Resources":{"Instances":["i-a","i-b"],"Series":["s-1"]},"Server":"r401"},
"CreationTime":"20261201T230051.048067","ErrorCode":1,"ID":"7a111ac3","State":"Failure","Type":"DicomWebStowClient"},
{"Content":{"FunctionErrorCode":9,"FunctionErrorDescription":"Error in the network protocol","FunctionErrorDetails":"Plugin error code 9 triggered from OrthancPluginCppWrapper.cpp:3391","InstancesCount":"1","Resources":{"Instances":["i-a"]},"Server":"closed"},
"CreationTime":"20261201T225935.803557","ErrorCode":1,"ID":"d9c44794","State":"Failure","Type":"DicomWebStowClient"},
{"Content":{"NetworkSizeMB":"0","Resources":[{"Study":"1.2.3"}]},"CreationTime":"20261201T225935","ID":"r1","State":"Failure","Type":"DicomWebWadoRetrieveClient"},
{"Content":{"FunctionErrorCode":"odd","Server":7},"CreationTime":"","ID":"odd","State":"Success","Type":"DicomWebStowClient"}]`
)

func TestListJobsShapes(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []Job
	}{
		{"DICOMweb 1.7: no Server, no Resources", jobs17, []Job{{ID: "cfea438e", Type: JobTypeStow, State: JobStateFailure,
			CreationTime: time.Date(2026, 12, 1, 22, 59, 17, 839322000, time.UTC), FunctionErrorCode: 29}}},
		{"DICOMweb 1.20/1.24", jobs120, []Job{
			{ID: "7a111ac3", Type: JobTypeStow, State: JobStateFailure, CreationTime: time.Date(2026, 12, 1, 23, 0, 51, 48067000, time.UTC),
				FunctionErrorCode: 29, Server: "r401", Instances: []string{"i-a", "i-b"}, Resources: map[string][]string{"Series": {"s-1"}}},
			{ID: "d9c44794", Type: JobTypeStow, State: JobStateFailure, CreationTime: time.Date(2026, 12, 1, 22, 59, 35, 803557000, time.UTC),
				FunctionErrorCode: 9, Server: "closed", Instances: []string{"i-a"}},
			{ID: "r1", Type: JobTypeRetrieve, State: JobStateFailure, CreationTime: time.Date(2026, 12, 1, 22, 59, 35, 0, time.UTC)},
			{ID: "odd", Type: JobTypeStow, State: JobStateSuccess},
		}},
		{"empty", `[]`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/jobs" || r.URL.RawQuery != "expand" {
					http.NotFound(w, r)
					return
				}
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			got, err := mustNew(t, Options{URL: srv.URL}).ListJobs(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d jobs: %+v", len(got), got)
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if g.ID != w.ID || g.Type != w.Type || g.State != w.State || !g.CreationTime.Equal(w.CreationTime) ||
					g.FunctionErrorCode != w.FunctionErrorCode || g.Server != w.Server || !slices.Equal(g.Instances, w.Instances) ||
					len(g.Resources) != len(w.Resources) || !slices.Equal(g.Resources["Series"], w.Resources["Series"]) {
					t.Errorf("job %d:\n got %+v\nwant %+v", i, g, w)
				}
			}
		})
	}
	for _, bad := range []string{`{}`, `[{"ID":1}]`, `[{"ID":"a"}`, `not json`} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(bad)) }))
		_, err := mustNew(t, Options{URL: srv.URL}).ListJobs(context.Background())
		srv.Close()
		var e *Error
		if !errors.As(err, &e) || e.Status != 200 {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// TestRealOrthancJobs: the jobs calls against the Orthanc build in use
// (ORTHANC_BIN / ORTHANC_DICOMWEB_PLUGIN, default the Debian packages):
// an asynchronous STOW refused with 401 fails with FunctionErrorCode 29,
// one answered 500 with 9; Server and Resources are there from DICOMweb
// 1.18 on.
func TestRealOrthancJobs(t *testing.T) {
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/refuse/") {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer store.Close()
	inst := orthancproc.StartForTest(t, orthancproc.Options{
		Name:  "agentjobs",
		Users: map[string]string{"agent": "pw-agent"},
		DicomWebServers: map[string]any{
			"refuse": map[string]any{"Url": store.URL + "/refuse/"},
			"broken": map[string]any{"Url": store.URL + "/broken/"},
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := mustNew(t, Options{URL: inst.URL, DicomWebRoot: "/dicom-web/", Username: "agent", Password: "pw-agent"})

	v, err := c.PluginVersion(ctx)
	if err != nil || v != inst.DICOMwebVersion {
		t.Fatalf("plugin version %q (%v), want %q", v, err, inst.DICOMwebVersion)
	}
	var created struct{ ID string }
	if err := inst.DoContext(ctx, http.MethodPost, "/tools/create-dicom", map[string]any{"Tags": map[string]string{"PatientName": "JOBS^TEST"}}, &created); err != nil {
		t.Fatal(err)
	}
	start := time.Now().Add(-time.Second)
	ids := map[string]string{}
	for _, server := range []string{"refuse", "broken"} {
		id, err := c.Stow(ctx, server, []string{created.ID})
		if err != nil || id == "" {
			t.Fatalf("stow to %s: %q %v", server, id, err)
		}
		ids[server] = id
	}
	if _, err := c.Stow(ctx, "refuse", []string{"00000000-00000000-00000000-00000000-00000000"}); !isStatus(err, 404) {
		t.Errorf("stow of an unknown instance: %v, want HTTP 404", err)
	}
	if _, err := c.Stow(ctx, "../jobs", []string{created.ID}); !errors.Is(err, ErrBadServerName) {
		t.Errorf("stow to a bad name: %v", err)
	}

	byID := map[string]Job{}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		jobs, err := c.ListJobs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			byID[j.ID] = j
		}
		if byID[ids["refuse"]].State == JobStateFailure && byID[ids["broken"]].State == JobStateFailure {
			break
		}
	}
	withFields := atLeast118(inst.DICOMwebVersion)
	for server, want := range map[string]int{"refuse": 29, "broken": 9} {
		j := byID[ids[server]]
		if j.Type != JobTypeStow || j.State != JobStateFailure || j.FunctionErrorCode != want {
			t.Errorf("%s job: %+v, want Failure with FunctionErrorCode %d", server, j, want)
		}
		if j.CreationTime.Before(start) || j.CreationTime.After(time.Now().Add(time.Second)) {
			t.Errorf("%s job CreationTime %v is not now in UTC", server, j.CreationTime)
		}
		if withFields && (j.Server != server || !slices.Equal(j.Instances, []string{created.ID})) {
			t.Errorf("DICOMweb %s: %s job Server %q Instances %v", inst.DICOMwebVersion, server, j.Server, j.Instances)
		}
		if !withFields && (j.Server != "" || j.Instances != nil) {
			t.Errorf("DICOMweb %s: %s job has Server %q Instances %v, not expected before 1.18", inst.DICOMwebVersion, server, j.Server, j.Instances)
		}
	}
	t.Logf("%s: STOW jobs carry Server/Resources: %v", inst.Versions(), withFields)
}

func isStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// atLeast118 reports whether a DICOMweb version is 1.18 or later (the
// agent's own rule is resubmit.Supported; this package cannot import it).
func atLeast118(v string) bool {
	parts := strings.Split(v, ".")
	if len(parts) < 2 {
		return v == "mainline"
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(parts[1])
	return err1 == nil && err2 == nil && (major > 1 || major == 1 && minor >= 18)
}
