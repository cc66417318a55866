package resubmit

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
)

// fakeOrthanc serves the part of Orthanc's REST API the Watcher uses, in
// the shapes measured on Orthanc 1.10.1/DICOMweb 1.7, 1.12.7/1.20 and
// 1.13.0/1.24: GET /plugins/dicom-web, GET /jobs?expand and POST
// /dicom-web/servers/{name}/stow. POST /jobs/{id}/resubmit is answered
// (as Orthanc does) but must never be called: the tests check.
type fakeOrthanc struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	version string
	// legacy: jobs are written as DICOMweb < 1.18 does (no Server, no Resources).
	legacy bool
	jobs   []*fakeJob
	next   int
	// now is Orthanc's clock for new jobs' CreationTime.
	now func() time.Time
	// stowStatus, when set, is the answer to POST .../stow (no job made).
	stowStatus int
	// stowDrop: make the job, then drop the connection without an answer.
	stowDrop bool
	// stowHangUp: drop the connection without making a job.
	stowHangUp bool
	// pluginStatus, when set, is the answer to GET /plugins/dicom-web.
	pluginStatus int
	// jobsListed counts GET /jobs?expand.
	jobsListed int
	stows      []stowCall
	resubmits  []string
	requests   int
}

type fakeJob struct {
	ID, Type, State string
	Created         time.Time
	Code            int // Content.FunctionErrorCode
	Server          string
	Instances       []string
	Levels          map[string][]string // Studies, Series, Patients
}

type stowCall struct {
	Server      string
	Resources   []string
	Synchronous *bool
}

func newFake(t *testing.T, version string, now func() time.Time) *fakeOrthanc {
	f := &fakeOrthanc{t: t, version: version, now: now}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// client reads the fake's jobs; the Watcher pushes no token, so its
// allow-list is empty.
func (f *fakeOrthanc) client() *orthanc.Client {
	c, err := orthanc.New(orthanc.Options{URL: f.srv.URL, DicomWebRoot: "/dicom-web/", Username: "agent", Password: "pw", Timeout: 5 * time.Second},
		&urlrule.AllowList{})
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// add appends a job and returns its id.
func (f *fakeOrthanc) add(j fakeJob) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if j.ID == "" {
		f.next++
		j.ID = fmt.Sprintf("job-%03d", f.next)
	}
	if j.Type == "" {
		j.Type = orthanc.JobTypeStow
	}
	f.jobs = append(f.jobs, &j)
	return j.ID
}

// set changes job id (state and error code).
func (f *fakeOrthanc) set(id, state string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, j := range f.jobs {
		if j.ID == id {
			j.State, j.Code = state, code
			return
		}
	}
	f.t.Fatalf("fake Orthanc has no job %s", id)
}

// forget drops jobs from the history (Orthanc's JobsHistorySize).
func (f *fakeOrthanc) forget(ids ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		for i, j := range f.jobs {
			if j.ID == id {
				f.jobs = append(f.jobs[:i], f.jobs[i+1:]...)
				break
			}
		}
	}
}

func (f *fakeOrthanc) job(id string) fakeJob {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, j := range f.jobs {
		if j.ID == id {
			return *j
		}
	}
	f.t.Fatalf("fake Orthanc has no job %s", id)
	return fakeJob{}
}

func (f *fakeOrthanc) snapshot() (stows []stowCall, resubmits []string, listed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]stowCall(nil), f.stows...), append([]string(nil), f.resubmits...), f.jobsListed
}

func (f *fakeOrthanc) update(fn func(f *fakeOrthanc)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// lastJob is the id of the job made last.
func (f *fakeOrthanc) lastJob() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jobs[len(f.jobs)-1].ID
}

func (f *fakeOrthanc) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if u, p, ok := r.BasicAuth(); !ok || u != "agent" || p != "pw" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/plugins/dicom-web":
		if f.pluginStatus != 0 {
			writeJSON(w, f.pluginStatus, map[string]any{"Message": "Internal error"})
			return
		}
		writeJSON(w, 200, map[string]any{"ID": "dicom-web", "Version": f.version,
			"Description": "Implementation of DICOMweb (QIDO-RS, STOW-RS and WADO-RS) and WADO-URI."})
	case r.Method == http.MethodGet && r.URL.Path == "/jobs" && r.URL.RawQuery == "expand":
		f.jobsListed++
		out := make([]any, 0, len(f.jobs))
		for _, j := range f.jobs {
			out = append(out, f.render(j))
		}
		writeJSON(w, 200, out)
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/jobs/") && strings.HasSuffix(r.URL.Path, "/resubmit"):
		f.resubmits = append(f.resubmits, r.URL.Path)
		writeJSON(w, 200, map[string]any{})
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/dicom-web/servers/") && strings.HasSuffix(r.URL.Path, "/stow"):
		server := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/dicom-web/servers/"), "/stow")
		var body struct {
			Resources   []string
			Synchronous *bool
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			writeJSON(w, 400, map[string]any{"Message": "Bad file format"})
			return
		}
		f.stows = append(f.stows, stowCall{Server: server, Resources: body.Resources, Synchronous: body.Synchronous})
		if f.stowStatus != 0 {
			writeJSON(w, f.stowStatus, map[string]any{"Message": "Unknown resource"})
			return
		}
		if f.stowHangUp {
			hangUp(w)
			return
		}
		f.next++
		j := &fakeJob{ID: fmt.Sprintf("job-%03d", f.next), Type: orthanc.JobTypeStow, State: "Running",
			Created: f.now(), Server: server, Instances: body.Resources}
		f.jobs = append(f.jobs, j)
		if f.stowDrop {
			hangUp(w)
			return
		}
		writeJSON(w, 200, map[string]any{"ID": j.ID, "Path": "/jobs/" + j.ID})
	default:
		writeJSON(w, 404, map[string]any{"Message": "Unknown resource"})
	}
}

// render writes a job as Orthanc's GET /jobs?expand does.
func (f *fakeOrthanc) render(j *fakeJob) map[string]any {
	content := map[string]any{"InstancesCount": fmt.Sprint(len(j.Instances)), "NetworkSizeMB": "0"}
	if j.Code != 0 {
		content["FunctionErrorCode"] = j.Code
		content["FunctionErrorDescription"] = map[int]string{9: "Error in the network protocol",
			29: "Bad credentials were provided to an HTTP request"}[j.Code]
	}
	if !f.legacy && j.Type == orthanc.JobTypeStow {
		if j.Server != "" {
			content["Server"] = j.Server
		}
		if len(j.Instances) > 0 || len(j.Levels) > 0 {
			res := map[string]any{}
			if len(j.Instances) > 0 {
				res["Instances"] = j.Instances
			}
			for k, v := range j.Levels {
				res[k] = v
			}
			content["Resources"] = res
		}
	}
	m := map[string]any{"ID": j.ID, "Type": j.Type, "State": j.State, "Content": content,
		"CreationTime": j.Created.UTC().Format("20060102T150405.000000"), "Priority": 0, "Progress": 100,
		"EffectiveRuntime": 0.5, "Timestamp": j.Created.UTC().Format("20060102T150405.000000")}
	if j.State == orthanc.JobStateFailure {
		m["ErrorCode"], m["ErrorDescription"], m["ErrorDetails"] = 1, "Error encountered within the plugin engine", ""
	} else {
		m["ErrorCode"], m["ErrorDescription"], m["ErrorDetails"] = 0, "Success", ""
	}
	return m
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func hangUp(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
		}
	}
}
