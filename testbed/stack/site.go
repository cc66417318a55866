package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
)

// The helpers below drive Orthanc's own DICOMweb client (the plugin's
// /dicom-web/servers/{name}/stow, /qido and /retrieve), which is how a site
// uses the Healthcare API once the agent has configured the server entry.

// Upload posts DICOM files to o (POST /instances) and returns the Orthanc
// ids of the instances and of their study.
func Upload(ctx context.Context, o *orthancproc.Instance, files [][]byte) (studyID string, instanceIDs []string, err error) {
	for k, f := range files {
		var ans struct {
			ID          string
			ParentStudy string
			Status      string
		}
		if err := o.DoContext(ctx, http.MethodPost, "/instances", f, &ans); err != nil {
			return "", nil, fmt.Errorf("upload file %d: %w", k, err)
		}
		if ans.ID == "" || ans.ParentStudy == "" {
			return "", nil, fmt.Errorf("upload file %d: Orthanc answered no instance id (status %q)", k, ans.Status)
		}
		if studyID != "" && studyID != ans.ParentStudy {
			return "", nil, fmt.Errorf("upload: files belong to more than one study")
		}
		studyID = ans.ParentStudy
		instanceIDs = append(instanceIDs, ans.ID)
	}
	if studyID == "" {
		return "", nil, errors.New("upload: no files")
	}
	return studyID, instanceIDs, nil
}

func serverPath(server, op string) string {
	return orthancproc.DICOMwebRoot + "servers/" + url.PathEscape(server) + "/" + op
}

// Stow sends Orthanc resources (instance, series or study ids) to the
// DICOMweb server entry named server, synchronously. A refused token makes
// Orthanc answer 500 (the job's FunctionErrorCode is 29). DICOMweb 1.7
// drops a synchronous request whose job is still Pending 100 ms after it
// was submitted (a loaded machine): StowWait does not.
func Stow(ctx context.Context, o *orthancproc.Instance, server string, resources []string) error {
	body := map[string]any{"Resources": resources, "Synchronous": true}
	if err := o.DoContext(ctx, http.MethodPost, serverPath(server, "stow"), body, nil); err != nil {
		return fmt.Errorf("stow to %s: %w", server, err)
	}
	return nil
}

// StowAsync starts an asynchronous STOW job of resources to server
// ("Synchronous": false) and returns the job id. Whether it worked shows
// in the job (Jobs): a refused token fails it with FunctionErrorCode 29.
func StowAsync(ctx context.Context, o *orthancproc.Instance, server string, resources []string) (string, error) {
	body := map[string]any{"Resources": resources, "Synchronous": false}
	var ans struct{ ID string }
	if err := o.DoContext(ctx, http.MethodPost, serverPath(server, "stow"), body, &ans); err != nil {
		return "", fmt.Errorf("stow to %s: %w", server, err)
	}
	if ans.ID == "" {
		return "", fmt.Errorf("stow to %s: Orthanc answered no job id", server)
	}
	return ans.ID, nil
}

// Jobs returns o's jobs (GET /jobs?expand) as the agent reads them.
func Jobs(ctx context.Context, o *orthancproc.Instance) ([]orthanc.Job, error) {
	user, pass := o.User()
	// Only reads: an empty allow-list, so this client can push nowhere.
	c, err := orthanc.New(orthanc.Options{URL: o.URL, DicomWebRoot: orthancproc.DICOMwebRoot, Username: user, Password: pass, Timeout: 10 * time.Second},
		&urlrule.AllowList{})
	if err != nil {
		return nil, err
	}
	return c.ListJobs(ctx)
}

// QIDOLocal asks o's own DICOMweb server (GET {root}studies, QIDO-RS) for
// the study with this StudyInstanceUID, e.g. on the cloud Orthanc that
// plays the Healthcare store, and reports whether it is there.
func QIDOLocal(ctx context.Context, o *orthancproc.Instance, studyUID string) (bool, error) {
	// Standard DICOM JSON: Value is an array (of objects for person names).
	var ans []map[string]struct{ Value json.RawMessage }
	path := orthancproc.DICOMwebRoot + "studies?StudyInstanceUID=" + url.QueryEscape(studyUID)
	if err := o.DoContext(ctx, http.MethodGet, path, nil, &ans); err != nil {
		return false, fmt.Errorf("qido at %s: %w", o.URL, err)
	}
	for _, study := range ans {
		var v []string
		if json.Unmarshal(study["0020000D"].Value, &v) == nil && len(v) == 1 && v[0] == studyUID {
			return true, nil
		}
	}
	return false, nil
}

// QIDOStudy asks server for the study with this StudyInstanceUID and reports
// whether it was found. A refused token is a 401 from Orthanc.
func QIDOStudy(ctx context.Context, o *orthancproc.Instance, server, studyUID string) (bool, error) {
	body := map[string]any{"Uri": "/studies", "Arguments": map[string]string{"StudyInstanceUID": studyUID}}
	// Orthanc answers in its own "expanded" DICOM JSON: Value is a string
	// for single-valued tags (standard DICOM JSON has an array).
	var ans []map[string]struct {
		Value json.RawMessage
	}
	if err := o.DoContext(ctx, http.MethodPost, serverPath(server, "qido"), body, &ans); err != nil {
		return false, fmt.Errorf("qido at %s: %w", server, err)
	}
	for _, study := range ans {
		raw := study["0020000D"].Value
		var one string
		var many []string
		if json.Unmarshal(raw, &one) == nil && one == studyUID {
			return true, nil
		}
		if json.Unmarshal(raw, &many) == nil && len(many) == 1 && many[0] == studyUID {
			return true, nil
		}
	}
	return false, nil
}

// Retrieve fetches the study from server into o with WADO-RS, synchronously
// (see Stow on DICOMweb 1.7's synchronous mode; RetrieveWait waits itself).
func Retrieve(ctx context.Context, o *orthancproc.Instance, server, studyUID string) error {
	body := map[string]any{"Resources": []map[string]string{{"Study": studyUID}}, "Synchronous": true}
	if err := o.DoContext(ctx, http.MethodPost, serverPath(server, "retrieve"), body, nil); err != nil {
		return fmt.Errorf("retrieve from %s: %w", server, err)
	}
	return nil
}

// FindStudy returns the Orthanc id of the study with this StudyInstanceUID
// in o ("" if absent) and its number of instances.
func FindStudy(ctx context.Context, o *orthancproc.Instance, studyUID string) (id string, instances int, err error) {
	var ids []string
	q := map[string]any{"Level": "Study", "Query": map[string]string{"StudyInstanceUID": studyUID}}
	if err := o.DoContext(ctx, http.MethodPost, "/tools/find", q, &ids); err != nil {
		return "", 0, err
	}
	if len(ids) == 0 {
		return "", 0, nil
	}
	var inst []json.RawMessage
	if err := o.DoContext(ctx, http.MethodGet, "/studies/"+ids[0]+"/instances", nil, &inst); err != nil {
		return "", 0, err
	}
	return ids[0], len(inst), nil
}

// DeleteStudy deletes a study from o by Orthanc id.
func DeleteStudy(ctx context.Context, o *orthancproc.Instance, id string) error {
	return o.DoContext(ctx, http.MethodDelete, "/studies/"+id, nil, nil)
}

// Servers returns GET /dicom-web/servers?expand as raw bytes and decoded.
// Orthanc shows header names only there, never their values.
func Servers(ctx context.Context, o *orthancproc.Instance) ([]byte, map[string]map[string]any, error) {
	var raw []byte
	if err := o.DoContext(ctx, http.MethodGet, orthancproc.DICOMwebRoot+"servers?expand", nil, &raw); err != nil {
		return nil, nil, err
	}
	var m map[string]map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return raw, nil, fmt.Errorf("servers?expand: %w", err)
	}
	return raw, m, nil
}
