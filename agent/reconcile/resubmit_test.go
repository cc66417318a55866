package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/resubmit"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
)

// jobsOrthanc is the fake Orthanc's server API (through the real client)
// plus an in-memory jobs API, on the harness clock.
type jobsOrthanc struct {
	*orthanc.Client
	now func() time.Time

	mu       sync.Mutex
	version  string
	jobs     []orthanc.Job
	stows    []string // server of each new STOW job
	versions int      // GET /plugins/dicom-web calls
}

func (j *jobsOrthanc) PluginVersion(context.Context) (string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.versions++
	return j.version, nil
}

func (j *jobsOrthanc) ListJobs(context.Context) ([]orthanc.Job, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]orthanc.Job(nil), j.jobs...), nil
}

func (j *jobsOrthanc) Stow(_ context.Context, server string, res []string) (string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	id := fmt.Sprintf("resent-%d", len(j.stows)+1)
	j.stows = append(j.stows, server)
	j.jobs = append(j.jobs, orthanc.Job{ID: id, Type: orthanc.JobTypeStow, State: "Running", CreationTime: j.now(), Server: server, Instances: res})
	return id, nil
}

// fail adds a failed STOW job of server, refused by the store, created now.
func (j *jobsOrthanc) fail(id, server string, created time.Time) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.jobs = append(j.jobs, orthanc.Job{ID: id, Type: orthanc.JobTypeStow, State: orthanc.JobStateFailure,
		FunctionErrorCode: orthanc.FunctionErrorBadCredentials, CreationTime: created, Server: server, Instances: []string{"inst-" + id}})
}

func (j *jobsOrthanc) sent() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.stows...)
}

// withJobs rebuilds h.rec on an Orthanc that also has a jobs API.
func withJobs(h *harness, set Settings) *jobsOrthanc {
	jo := &jobsOrthanc{Client: h.oc, now: h.clock.Now, version: "1.20"}
	if set.AgentID == "" {
		set.AgentID = agentID
	}
	h.rec = New(Options{Broker: h.bc, Orthanc: jo, Settings: set, Now: h.clock.Now, Recorder: h.events,
		Jitter: func() float64 { return h.jitter },
		Log:    slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	return jo
}

// TestFailedUploadsSentAgainOnFreshToken: the loop tells the watcher which
// servers it manages and since when Orthanc holds their token, so a failed
// upload is sent again once a token newer than the failed job is pushed,
// and a re-push of the same token (Orthanc restarted) does not count.
func TestFailedUploadsSentAgainOnFreshToken(t *testing.T) {
	h := newHarness(t, Settings{})
	jo := withJobs(h, Settings{ResubmitFailedJobs: true, ResubmitStatePath: filepath.Join(t.TempDir(), resubmit.StateFileName)})
	ctx := context.Background()
	t0 := h.clock.Now()
	jo.fail("old-a", "store-a", t0.Add(-5*time.Minute)) // failed while the agent was down
	jo.fail("by-hand", "unmanaged", t0.Add(-5*time.Minute))

	steps := []struct {
		name string
		do   func() error
		want []string // servers sent to so far
		wait int
	}{
		{"first sync pushes tokens: the earlier failure is sent again", func() error { return h.rec.SyncBroker(ctx) },
			[]string{"store-a"}, 0},
		{"a failure with the current token waits", func() error {
			h.clock.Advance(time.Minute)
			jo.fail("new-b", "store-b", h.clock.Now())
			return h.rec.CheckOrthanc(ctx)
		}, []string{"store-a"}, 1},
		{"a re-push of the same token after an Orthanc restart is not fresh", func() error {
			h.orth.Restart()
			h.clock.Advance(10 * time.Second)
			return h.rec.CheckOrthanc(ctx)
		}, []string{"store-a"}, 1},
		{"the refreshed token is: it is sent then", func() error {
			h.clock.Advance(55 * time.Minute)
			return h.rec.SyncBroker(ctx)
		}, []string{"store-a", "store-b"}, 0},
		{"nothing more", func() error {
			h.clock.Advance(10 * time.Second)
			return h.rec.CheckOrthanc(ctx)
		}, []string{"store-a", "store-b"}, 0},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		s := h.rec.Status()
		if got := jo.sent(); strings.Join(got, ",") != strings.Join(st.want, ",") {
			t.Fatalf("%s: sent to %v, want %v", st.name, got, st.want)
		}
		if s.Resubmit != "enabled (DICOMweb 1.20)" || s.Resubmitted != len(st.want) || s.ResubmitWaiting != st.wait || h.events.resubmitted != len(st.want) {
			t.Errorf("%s: status resubmit %q resubmitted %d waiting %d, metric %d", st.name, s.Resubmit, s.Resubmitted, s.ResubmitWaiting, h.events.resubmitted)
		}
	}
}

// TestResubmitOnlyForManagedServers: a store in conflict with an entry the
// agent does not own, or not granted, is not "managed": its jobs are left.
func TestResubmitOnlyForManagedServers(t *testing.T) {
	h := newHarness(t, Settings{})
	h.broker.Set(func(b *agenttest.Broker) {
		b.Grants["store-c"] = "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/c/dicomWeb/"
	})
	h.orth.Set(func(o *agenttest.Orthanc) {
		o.Servers["store-c"] = map[string]any{"Url": "https://elsewhere.example/", "HttpHeaders": map[string]any{}}
	})
	jo := withJobs(h, Settings{Accounts: []string{"store-a", "store-c", "store-z"}, ResubmitFailedJobs: true,
		ResubmitStatePath: filepath.Join(t.TempDir(), resubmit.StateFileName)})
	before := h.clock.Now().Add(-time.Minute)
	for _, s := range []string{"store-a", "store-b", "store-c", "store-z"} {
		jo.fail("job-"+s, s, before)
	}
	_ = h.rec.SyncBroker(context.Background()) // store-c conflicts, store-z is not granted
	if got := jo.sent(); len(got) != 1 || got[0] != "store-a" {
		t.Errorf("sent to %v, want only store-a", got)
	}
}

// TestResubmitSettings: off, the watcher never calls Orthanc; a reload
// turns it on. (An Orthanc without the jobs API is not an Orthanc the loop
// takes: that is a compile error, see the harness.)
func TestResubmitSettings(t *testing.T) {
	t.Run("disabled", func(t *testing.T) {
		h := newHarness(t, Settings{})
		jo := withJobs(h, Settings{})
		jo.fail("old-a", "store-a", h.clock.Now().Add(-time.Minute))
		if err := h.rec.SyncBroker(context.Background()); err != nil {
			t.Fatal(err)
		}
		if s := h.rec.Status(); s.Resubmit != resubmit.StateDisabled || jo.versions != 0 || len(jo.sent()) != 0 {
			t.Errorf("status %q, %d version calls, sent %v", s.Resubmit, jo.versions, jo.sent())
		}
	})
	t.Run("reload turns it on", func(t *testing.T) {
		h := newHarness(t, Settings{})
		jo := withJobs(h, Settings{})
		jo.fail("old-a", "store-a", h.clock.Now().Add(-time.Minute))
		ctx := context.Background()
		_ = h.rec.SyncBroker(ctx)
		h.rec.apply(Update{Broker: h.bc, Orthanc: jo, Settings: Settings{AgentID: agentID, ResubmitFailedJobs: true,
			ResubmitStatePath: filepath.Join(t.TempDir(), resubmit.StateFileName)}})
		h.clock.Advance(time.Second)
		_ = h.rec.CheckOrthanc(ctx)
		if got := jo.sent(); len(got) != 1 {
			t.Errorf("after the reload sent to %v", got)
		}
	})
}
