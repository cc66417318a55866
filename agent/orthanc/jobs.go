package orthanc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Orthanc job types and states the agent looks at (GET /jobs?expand).
const (
	JobTypeStow     = "DicomWebStowClient"
	JobTypeRetrieve = "DicomWebWadoRetrieveClient"

	JobStateFailure = "Failure"
	JobStateSuccess = "Success"
)

// FunctionErrorBadCredentials is a DICOMweb job's Content.FunctionErrorCode
// when the remote store answered 401 or 403 (Orthanc's "Bad credentials
// were provided to an HTTP request"). A 5xx or a closed port shows 9.
const FunctionErrorBadCredentials = 29

// maxJobsBytes caps GET /jobs?expand: a STOW job lists every instance it
// sends, so a long job history is much larger than a server list. The
// answer is decoded one job at a time, never held whole.
const maxJobsBytes = 64 << 20

// jobTimeLayout is how Orthanc writes a job's CreationTime (UTC, e.g.
// "20261201T225928.401431"), in every version the agent supports.
const jobTimeLayout = "20060102T150405.999999"

// Job is what the agent reads of one entry of GET /jobs?expand. Content
// fields are read for STOW jobs only.
type Job struct {
	ID    string
	Type  string
	State string
	// CreationTime is when Orthanc created the job (zero if it did not say).
	CreationTime time.Time
	// FunctionErrorCode is Content.FunctionErrorCode (0: none).
	FunctionErrorCode int
	// Server is Content.Server, the DICOMweb server the job sends to.
	// DICOMweb plugins before 1.18 do not write it: then it is "".
	Server string
	// Instances is Content.Resources.Instances: every instance the job
	// sends, expanded from the studies, series or patients it was given
	// (they are listed under "Studies", "Series", "Patients" besides).
	Instances []string
	// Resources holds Content.Resources' other levels ("Studies", ...).
	Resources map[string][]string
}

// IsStow reports whether j is a DICOMweb STOW-RS client job.
func (j Job) IsStow() bool { return j.Type == JobTypeStow }

// errNotJobs: the answer broke off or is not an array of job objects.
var errNotJobs = errors.New("answer could not be read as a JSON array of jobs")

// rawJob is one element of GET /jobs?expand as Orthanc writes it.
type rawJob struct {
	ID           string          `json:"ID"`
	Type         string          `json:"Type"`
	State        string          `json:"State"`
	CreationTime string          `json:"CreationTime"`
	Content      json.RawMessage `json:"Content"`
}

// stowContent is the Content of a DicomWebStowClient job.
type stowContent struct {
	FunctionErrorCode int                        `json:"FunctionErrorCode"`
	Server            string                     `json:"Server"`
	Resources         map[string]json.RawMessage `json:"Resources"`
}

// ListJobs returns Orthanc's jobs (GET /jobs?expand): those pending or
// running and the completed ones Orthanc still keeps (its JobsHistorySize).
func (c *Client) ListJobs(ctx context.Context) ([]Job, error) {
	const op = "GET /jobs?expand"
	var out []Job
	err := c.stream(ctx, http.MethodGet, c.base+"/jobs?expand", op, func(r io.Reader) error {
		dec := json.NewDecoder(r)
		if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
			return errNotJobs
		}
		for dec.More() {
			var rj rawJob
			if err := dec.Decode(&rj); err != nil {
				return errNotJobs
			}
			out = append(out, rj.job())
		}
		if _, err := dec.Token(); err != nil {
			return errNotJobs
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (rj rawJob) job() Job {
	j := Job{ID: rj.ID, Type: rj.Type, State: rj.State}
	if t, err := time.ParseInLocation(jobTimeLayout, rj.CreationTime, time.UTC); err == nil {
		j.CreationTime = t
	}
	if rj.Type != JobTypeStow || len(rj.Content) == 0 {
		return j
	}
	var c stowContent
	if json.Unmarshal(rj.Content, &c) != nil {
		return j // unreadable content: no error code, so never acted on
	}
	j.FunctionErrorCode, j.Server = c.FunctionErrorCode, c.Server
	for level, raw := range c.Resources {
		var ids []string
		if json.Unmarshal(raw, &ids) != nil {
			continue
		}
		if level == "Instances" {
			j.Instances = ids
			continue
		}
		if j.Resources == nil {
			j.Resources = map[string][]string{}
		}
		j.Resources[level] = ids
	}
	return j
}

// PluginVersion returns the DICOMweb plugin's version as Orthanc reports
// it (GET /plugins/dicom-web), e.g. "1.7", "1.20" or "mainline".
func (c *Client) PluginVersion(ctx context.Context) (string, error) {
	const op = "GET /plugins/dicom-web"
	data, err := c.do(ctx, http.MethodGet, c.base+"/plugins/dicom-web", nil, op)
	if err != nil {
		return "", err
	}
	var p struct{ Version string }
	if json.Unmarshal(data, &p) != nil || p.Version == "" {
		return "", &Error{Op: op, Status: http.StatusOK, Msg: "answer has no Version"}
	}
	return p.Version, nil
}

// Stow starts an asynchronous STOW-RS job that sends resources (Orthanc
// ids) to the DICOMweb server name (POST {root}servers/{name}/stow with
// "Synchronous": false) and returns the new job's id.
func (c *Client) Stow(ctx context.Context, name string, resources []string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	op := "POST " + c.root + "servers/" + name + "/stow"
	if len(resources) == 0 {
		return "", &Error{Op: op, Msg: "no resources to send"}
	}
	body, err := json.Marshal(map[string]any{"Resources": resources, "Synchronous": false})
	if err != nil {
		return "", &Error{Op: op, Msg: "cannot encode request"}
	}
	data, err := c.do(ctx, http.MethodPost, c.serverURL(name)+"/stow", body, op)
	if err != nil {
		return "", err
	}
	var ans struct{ ID string }
	if json.Unmarshal(data, &ans) != nil || ans.ID == "" {
		return "", &Error{Op: op, Status: http.StatusOK, Msg: "answer has no job ID"}
	}
	return ans.ID, nil
}

// stream sends a body-less request and hands the answer (at most
// maxJobsBytes) to read, mapping failures as do does.
func (c *Client) stream(ctx context.Context, method, u, op string, read func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return &Error{Op: op, Msg: "bad request URL"}
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return transportError(op, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
		return statusError(op, resp.StatusCode, data)
	}
	lr := &io.LimitedReader{R: resp.Body, N: maxJobsBytes + 1}
	if err := read(lr); err != nil {
		if lr.N <= 0 {
			return &Error{Op: op, Status: resp.StatusCode, Msg: fmt.Sprintf("answer larger than %d MiB", maxJobsBytes>>20)}
		}
		if ctx.Err() != nil {
			return &Error{Op: op, Msg: "timeout"}
		}
		return &Error{Op: op, Status: resp.StatusCode, Msg: err.Error()}
	}
	return nil
}
