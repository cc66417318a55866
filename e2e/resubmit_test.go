package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/resubmit"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/dicomgen"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/stack"
)

// TestFailedUploadsSentAgain (scenario 9): an asynchronous STOW started
// while the agent is down and its token has expired fails (the store
// answers 401: FunctionErrorCode 29); once the agent is back and has
// pushed a fresh token it sends the study again as a new STOW job, and the
// study arrives in the cloud store. Failed jobs of a server the agent does
// not manage and a job that failed on a 500 stay as they are, and a
// restarted agent sends nothing twice. With DICOMweb < 1.18 (bookworm's
// 1.7) the feature is unavailable: the test checks that the agent says so,
// then skips the rest.
func TestFailedUploadsSentAgain(t *testing.T) {
	t.Parallel()
	const lifetime = 20 * time.Second
	s := newStack(t, stack.Options{Stores: 1, TokenLifetime: lifetime, RefreshMargin: 5 * time.Second, CheckInterval: checkInterval})
	store := s.Stores()[0]
	supported, why := resubmit.Supported(s.Site.DICOMwebVersion)
	t.Logf("site Orthanc: %s; re-sending failed uploads supported: %v %s", s.Site.Versions(), supported, why)

	t.Run("status says whether failed uploads are sent again", func(t *testing.T) {
		ctx := ctxFor(t, time.Minute)
		want := "enabled (DICOMweb " + s.Site.DICOMwebVersion + ")"
		if !supported {
			want = "unavailable: " + why // e.g. "unavailable: DICOMweb 1.7 < 1.18"
		}
		if _, err := s.WaitFor(ctx, 30*time.Second, "agent status resubmit "+want, func() (bool, error) {
			st, err := s.AgentStatus(ctx)
			if err != nil {
				return false, err
			}
			return st.Resubmit == want, fmt.Errorf("resubmit %q", st.Resubmit)
		}); err != nil {
			t.Fatal(err)
		}
		// What an operator sees: "agent status" prints it.
		out, err := exec.CommandContext(ctx, s.Bin.Agent, "status", "--addr", s.AgentListen).Output()
		if err != nil {
			t.Fatalf("agent status: %v\n%s", err, out)
		}
		if !bytes.Contains(out, []byte("failed uploads: resubmit "+want)) {
			t.Errorf("agent status does not show %q:\n%s", want, out)
		}
		time.Sleep(2 * checkInterval) // a few more checks: still logged once
		logs, _ := s.AgentLogs()
		n := bytes.Count(logs, []byte(`"msg":"re-sending failed uploads is unavailable`))
		if supported && n != 0 || !supported && n != 1 {
			t.Errorf("the agent logged %d time(s) that re-sending is unavailable", n)
		}
		metrics, err := httpGet(ctx, "http://"+s.AgentListen+"/metrics")
		if err != nil || !bytes.Contains(metrics, []byte("orthanc_gcp_agent_jobs_resubmitted_total 0")) {
			t.Errorf("/metrics lacks orthanc_gcp_agent_jobs_resubmitted_total 0 (err %v)", err)
		}
	})
	if !supported {
		t.Skipf("re-sending failed uploads is unavailable with %s (%s): its STOW jobs do not say which server they were for",
			s.Site.Versions(), why)
	}

	ctx := ctxFor(t, 5*time.Minute)
	// A server entry the agent does not manage, pointing at the store with
	// a token the store refuses, and one at an endpoint that answers 500.
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "internal error", http.StatusInternalServerError)
	}))
	t.Cleanup(broken.Close)
	for name, def := range map[string]any{
		"by-hand": map[string]any{"Url": store.DICOMwebURL, "HttpHeaders": map[string]string{"Authorization": "Bearer not-a-valid-token"}},
		"broken":  map[string]any{"Url": broken.URL + "/dicomWeb/"},
	} {
		if err := s.Site.DoContext(ctx, http.MethodPut, "/dicom-web/servers/"+name, def, nil); err != nil {
			t.Fatal(err)
		}
	}
	info, err := dicomgen.Study(2)
	if err != nil {
		t.Fatal(err)
	}
	studyID, _, err := stack.Upload(ctx, s.Site, info.Files)
	if err != nil {
		t.Fatal(err)
	}

	var failed map[string]orthanc.Job // by server
	t.Run("uploads started while the agent is down fail", func(t *testing.T) {
		exp, ok, err := managedExpiry(ctx, s, store.Name)
		if err != nil || !ok {
			t.Fatalf("no managed entry (%v)", err)
		}
		if err := s.StopAgent(); err != nil {
			t.Fatal(err)
		}
		// The pushed token expires with nobody to refresh it.
		if _, err := s.WaitFor(ctx, lifetime+10*time.Second, "the pushed token expired", func() (bool, error) {
			return time.Now().After(exp.Add(time.Second)), nil
		}); err != nil {
			t.Fatal(err)
		}
		ids := map[string]string{}
		for _, server := range []string{store.Name, "by-hand", "broken"} {
			id, err := stack.StowAsync(ctx, s.Site, server, []string{studyID})
			if err != nil {
				t.Fatal(err)
			}
			ids[server] = id
		}
		failed = map[string]orthanc.Job{}
		if _, err := s.WaitFor(ctx, 30*time.Second, "the three STOW jobs failed", func() (bool, error) {
			jobs, err := stack.Jobs(ctx, s.Site)
			if err != nil {
				return false, err
			}
			for _, j := range jobs {
				for server, id := range ids {
					if j.ID == id && j.State == orthanc.JobStateFailure {
						failed[server] = j
					}
				}
			}
			return len(failed) == len(ids), fmt.Errorf("failed so far: %d", len(failed))
		}); err != nil {
			t.Fatal(err)
		}
		for server, want := range map[string]int{store.Name: 29, "by-hand": 29, "broken": 9} {
			if j := failed[server]; j.FunctionErrorCode != want || j.Server != server || len(j.Instances) != len(info.Files) {
				t.Errorf("%s job: FunctionErrorCode %d (want %d), Server %q, %d instances", server, j.FunctionErrorCode, want, j.Server, len(j.Instances))
			}
		}
		if found, err := stack.QIDOLocal(ctx, s.CloudOrthanc, info.StudyUID); err != nil || found {
			t.Fatalf("the cloud store already has the study (found %v, err %v)", found, err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	var resent orthanc.Job
	t.Run("the agent back sends the refused upload again as a new job", func(t *testing.T) {
		startedAt := time.Now()
		if err := s.StartAgent(); err != nil {
			t.Fatal(err)
		}
		wait, err := s.WaitFor(ctx, 60*time.Second, "a new STOW job of the study succeeded", func() (bool, error) {
			jobs, err := stack.Jobs(ctx, s.Site)
			if err != nil {
				return false, err
			}
			for _, j := range jobs {
				if j.IsStow() && j.Server == store.Name && j.ID != failed[store.Name].ID && slices.Equal(j.Instances, failed[store.Name].Instances) {
					resent = j
					return j.State == orthanc.JobStateSuccess, fmt.Errorf("new job %s is %s", j.ID, j.State)
				}
			}
			return false, fmt.Errorf("no new job yet")
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("new job %s succeeded %s after the agent started", resent.ID, wait.Round(time.Millisecond))
		if !resent.CreationTime.After(startedAt.Add(-time.Second)) {
			t.Errorf("the new job was created at %v, before the agent started", resent.CreationTime)
		}
		found, err := stack.QIDOLocal(ctx, s.CloudOrthanc, info.StudyUID)
		if err != nil || !found {
			t.Fatalf("QIDO on the cloud Orthanc: found %v, err %v", found, err)
		}
		if _, n, err := stack.FindStudy(ctx, s.CloudOrthanc, info.StudyUID); err != nil || n != len(info.Files) {
			t.Errorf("the cloud store holds %d instances of the study (err %v), want %d", n, err, len(info.Files))
		}
		st, err := s.AgentStatus(ctx)
		if err != nil || st.Resubmitted != 1 {
			t.Errorf("agent status resubmitted %v (err %v), want 1", st.Resubmitted, err)
		}
		metrics, err := httpGet(ctx, "http://"+s.AgentListen+"/metrics")
		if err != nil || !bytes.Contains(metrics, []byte("orthanc_gcp_agent_jobs_resubmitted_total 1")) {
			t.Errorf("/metrics lacks orthanc_gcp_agent_jobs_resubmitted_total 1 (err %v)", err)
		}
	})

	t.Run("other failures untouched, nothing sent twice across a restart", func(t *testing.T) {
		check := func(when string) {
			t.Helper()
			jobs, err := stack.Jobs(ctx, s.Site)
			if err != nil {
				t.Fatal(err)
			}
			perServer := map[string]int{}
			for _, j := range jobs {
				if j.IsStow() {
					perServer[j.Server]++
				}
				for server, f := range failed {
					// Still failed: not resubmitted in place (POST /jobs/{id}/resubmit).
					if j.ID == f.ID && (j.State != orthanc.JobStateFailure || j.FunctionErrorCode != f.FunctionErrorCode) {
						t.Errorf("%s: the failed %s job is now %s (code %d)", when, server, j.State, j.FunctionErrorCode)
					}
				}
			}
			if perServer["by-hand"] != 1 || perServer["broken"] != 1 || perServer[store.Name] != 2 {
				t.Errorf("%s: STOW jobs per server %v, want by-hand 1, broken 1, %s 2", when, perServer, store.Name)
			}
		}
		time.Sleep(2 * checkInterval) // let the agent look at the jobs again
		check("after the re-send")

		if err := s.StopAgent(); err != nil {
			t.Fatal(err)
		}
		if err := s.StartAgent(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.WaitAgentHealthy(ctx, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * checkInterval)
		check("after an agent restart")
		if st, err := s.AgentStatus(ctx); err != nil || st.Resubmitted != 0 || !strings.HasPrefix(st.Resubmit, "enabled") {
			t.Errorf("restarted agent: resubmit %q resubmitted %d (err %v)", st.Resubmit, st.Resubmitted, err)
		}
	})

	t.Run("state file: 0600, job ids, no token", func(t *testing.T) {
		fi, err := os.Stat(s.AgentStatePath)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("state file %s: %v, mode %v", s.AgentStatePath, err, fi.Mode())
		}
		data, _ := os.ReadFile(s.AgentStatePath)
		if !bytes.Contains(data, []byte(failed[store.Name].ID)) || !bytes.Contains(data, []byte(resent.ID)) {
			t.Errorf("state file does not name the original and the new job:\n%s", data)
		}
		tokens, err := s.DistinctTokens()
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range tokens {
			if bytes.Contains(data, []byte(tok)) {
				t.Error("a token is in the state file")
			}
		}
	})

	t.Run("7 no token in logs, server listing, health or metrics", func(t *testing.T) {
		assertNoTokenLeaks(t, s)
	})
}
