package stack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
)

// Orthanc's DICOMweb plugin (1.7, as Debian ships it with Orthanc 1.10)
// waits for a "Synchronous": true STOW or retrieve job by polling it every
// 100 ms and takes any state but Running or Success for a failure: a job
// still Pending at the first poll (the jobs engine had not started it yet,
// as happens on a loaded machine) makes the plugin throw an error whose
// code is Success. Orthanc then never answers the request (the client
// reads EOF when Orthanc drops the connection at its keep-alive timeout)
// while the job goes on and succeeds. StowWait and RetrieveWait therefore
// start the job asynchronously and wait for it here, where Pending is not
// an answer.

// JobPoll is how often StowWait and RetrieveWait read their job's state.
var JobPoll = 50 * time.Millisecond

// JobError is a DICOMweb job of the site Orthanc that ended in Failure.
type JobError struct {
	Op, Server, ID   string
	ErrorCode        int
	ErrorDescription string
	// FunctionErrorCode and FunctionErrorDetails say what the plugin met:
	// 7 "Inexistent server: NAME" (no such entry), 29 (the store answered
	// 401/403), 9 (a network error or a 5xx).
	FunctionErrorCode    int
	FunctionErrorDetails string
	// Content is the job's content as Orthanc reported it (compact JSON).
	Content string
}

func (e *JobError) Error() string {
	return fmt.Sprintf("%s job %s to %s failed: ErrorCode %d %q, FunctionErrorCode %d %q", e.Op, e.ID, e.Server,
		e.ErrorCode, e.ErrorDescription, e.FunctionErrorCode, e.FunctionErrorDetails)
}

// StowWait sends Orthanc resources to the DICOMweb server entry named
// server as an asynchronous job and waits until the job has ended: nil on
// Success, a *JobError on Failure.
func StowWait(ctx context.Context, o *orthancproc.Instance, server string, resources []string) error {
	id, err := StowAsync(ctx, o, server, resources)
	if err != nil {
		return err
	}
	return waitJob(ctx, o, "stow", server, id)
}

// RetrieveWait fetches the study from server into o with WADO-RS as an
// asynchronous job and waits until the job has ended: nil on Success, a
// *JobError on Failure.
func RetrieveWait(ctx context.Context, o *orthancproc.Instance, server, studyUID string) error {
	body := map[string]any{"Resources": []map[string]string{{"Study": studyUID}}, "Synchronous": false}
	var ans struct{ ID string }
	if err := o.DoContext(ctx, http.MethodPost, serverPath(server, "retrieve"), body, &ans); err != nil {
		return fmt.Errorf("retrieve from %s: %w", server, err)
	}
	if ans.ID == "" {
		return fmt.Errorf("retrieve from %s: Orthanc answered no job id", server)
	}
	return waitJob(ctx, o, "retrieve", server, ans.ID)
}

// waitJob polls GET /jobs/ID until the job is in Success or Failure; any
// other state (Pending, Running, Retry, Paused) is not an end.
func waitJob(ctx context.Context, o *orthancproc.Instance, op, server, id string) error {
	for {
		var j struct {
			State            string
			ErrorCode        int
			ErrorDescription string
			Content          json.RawMessage
		}
		if err := o.DoContext(ctx, http.MethodGet, "/jobs/"+url.PathEscape(id), nil, &j); err != nil {
			return fmt.Errorf("%s to %s: job %s: %w", op, server, id, err)
		}
		switch j.State {
		case "Success":
			return nil
		case "Failure":
			je := &JobError{Op: op, Server: server, ID: id, ErrorCode: j.ErrorCode, ErrorDescription: j.ErrorDescription}
			var c struct {
				FunctionErrorCode    int
				FunctionErrorDetails string
			}
			_ = json.Unmarshal(j.Content, &c)
			je.FunctionErrorCode, je.FunctionErrorDetails = c.FunctionErrorCode, c.FunctionErrorDetails
			var compact bytes.Buffer
			if json.Compact(&compact, j.Content) == nil {
				je.Content = compact.String()
			}
			return je
		}
		t := time.NewTimer(JobPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s to %s: job %s still %s: %w", op, server, id, j.State, ctx.Err())
		case <-t.C:
		}
	}
}
