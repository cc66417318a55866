package resubmit

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/clocktest"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/logcapture"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// harness is one Watcher against one fake Orthanc, on one clock shared by
// the agent and Orthanc.
type harness struct {
	t       *testing.T
	clock   *clocktest.Clock
	fake    *fakeOrthanc
	w       *Watcher
	logs    *logcapture.Buffer
	path    string
	counted int
}

func newHarness(t *testing.T, version string) *harness {
	t.Helper()
	h := &harness{t: t, clock: clocktest.New(t0), logs: &logcapture.Buffer{}}
	h.fake = newFake(t, version, h.clock.Now)
	h.path = filepath.Join(t.TempDir(), StateFileName)
	h.w = h.newWatcher()
	return h
}

// newWatcher is a Watcher as a (re)started agent builds it.
func (h *harness) newWatcher() *Watcher {
	return New(Options{Now: h.clock.Now, Resubmitted: func() { h.counted++ },
		Log: slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
}

func (h *harness) check(servers map[string]time.Time) error {
	h.t.Helper()
	return h.w.Check(context.Background(), h.fake.client(), Config{Enabled: true, StatePath: h.path}, servers)
}

func (h *harness) countLog(msg string) int { return strings.Count(h.logs.String(), `"msg":"`+msg) }

// failed is a STOW job that the store refused (29), created at created.
func failed(server string, created time.Time, instances ...string) fakeJob {
	return fakeJob{Type: orthanc.JobTypeStow, State: orthanc.JobStateFailure, Code: orthanc.FunctionErrorBadCredentials,
		Server: server, Created: created, Instances: instances}
}

// noResubmit: the one call that silently loses the study is never made.
func (h *harness) noResubmit() {
	h.t.Helper()
	if _, res, _ := h.fake.snapshot(); len(res) > 0 {
		h.t.Fatalf("POST /jobs/{id}/resubmit was called: %v", res)
	}
}

// TestRules: which failed jobs are sent again, and how. The token of
// "store-a" was pushed at t0; the failed jobs are listed by the fake.
func TestRules(t *testing.T) {
	before, after := t0.Add(-time.Minute), t0.Add(time.Minute)
	managed := map[string]time.Time{"store-a": t0, "store-b": t0}
	tests := []struct {
		name    string
		jobs    []fakeJob
		servers map[string]time.Time
		// wantStows are the servers of the new STOW jobs, in order.
		wantStows []string
		waiting   int
	}{
		{"refused token, managed server, fresh token pushed since: sent again",
			[]fakeJob{failed("store-a", before, "i1", "i2")}, managed, []string{"store-a"}, 0},
		{"each failure of each managed server is sent once",
			[]fakeJob{failed("store-a", before, "i1"), failed("store-b", before.Add(time.Second), "i2"), failed("store-a", before, "i3")},
			managed, []string{"store-a", "store-a", "store-b"}, 0},
		{"job created after the current token was pushed: waits for a fresher one",
			[]fakeJob{failed("store-a", after, "i1")}, managed, nil, 1},
		{"job created the instant the token was pushed: waits",
			[]fakeJob{failed("store-a", t0, "i1")}, managed, nil, 1},
		{"no usable token for the server now: waits",
			[]fakeJob{failed("store-a", before, "i1")}, map[string]time.Time{"store-a": {}}, nil, 1},
		{"server this agent does not manage: untouched",
			[]fakeJob{failed("by-hand", before, "i1")}, managed, nil, 0},
		{"no managed server at all: untouched",
			[]fakeJob{failed("store-a", before, "i1")}, nil, nil, 0},
		{"failed for another reason (9: network error or 5xx): untouched",
			[]fakeJob{{State: orthanc.JobStateFailure, Code: 9, Server: "store-a", Created: before, Instances: []string{"i1"}}},
			managed, nil, 0},
		{"failed without an error code: untouched",
			[]fakeJob{{State: orthanc.JobStateFailure, Server: "store-a", Created: before, Instances: []string{"i1"}}},
			managed, nil, 0},
		{"retrieve job: untouched",
			[]fakeJob{{Type: orthanc.JobTypeRetrieve, State: orthanc.JobStateFailure, Code: 29, Server: "store-a", Created: before}},
			managed, nil, 0},
		{"another job type: untouched",
			[]fakeJob{{Type: "DicomModalityStore", State: orthanc.JobStateFailure, Code: 29, Server: "store-a", Created: before, Instances: []string{"i1"}}},
			managed, nil, 0},
		{"jobs in other states: untouched",
			[]fakeJob{
				{State: "Pending", Code: 29, Server: "store-a", Created: before, Instances: []string{"i1"}},
				{State: "Running", Code: 29, Server: "store-a", Created: before, Instances: []string{"i2"}},
				{State: "Paused", Code: 29, Server: "store-a", Created: before, Instances: []string{"i3"}},
				{State: "Retry", Code: 29, Server: "store-a", Created: before, Instances: []string{"i4"}},
				{State: "Success", Code: 29, Server: "store-a", Created: before, Instances: []string{"i5"}},
			}, managed, nil, 0},
		{"STOW job without Server (cannot tell whose it was): untouched",
			[]fakeJob{failed("", before, "i1")}, managed, nil, 0},
		{"STOW job without Resources (cannot tell what it sent): untouched",
			[]fakeJob{failed("store-a", before)}, managed, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, "1.20")
			var want [][]string
			for _, j := range tc.jobs {
				h.fake.add(j)
			}
			for _, srv := range tc.wantStows {
				for _, j := range tc.jobs {
					if j.Server == srv && !slices.ContainsFunc(want, func(w []string) bool { return slices.Equal(w, j.Instances) }) {
						want = append(want, j.Instances)
						break
					}
				}
			}
			if err := h.check(tc.servers); err != nil {
				t.Fatal(err)
			}
			stows, _, _ := h.fake.snapshot()
			var got []string
			for _, s := range stows {
				got = append(got, s.Server)
				if s.Synchronous == nil || *s.Synchronous {
					t.Errorf("STOW to %s not asynchronous: Synchronous=%v", s.Server, s.Synchronous)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.wantStows) {
				t.Fatalf("new STOW jobs to %v, want %v", got, tc.wantStows)
			}
			for i, s := range stows {
				if !slices.Equal(s.Resources, want[i]) {
					t.Errorf("STOW %d sends %v, want the failed job's instances %v", i, s.Resources, want[i])
				}
			}
			h.noResubmit()
			st := h.w.Status()
			if st.Resubmitted != len(tc.wantStows) || h.counted != len(tc.wantStows) || st.Waiting != tc.waiting {
				t.Errorf("status %+v, metric %d; want resubmitted %d, waiting %d", st, h.counted, len(tc.wantStows), tc.waiting)
			}
			if st.State != "enabled (DICOMweb 1.20)" || st.LastError != "" {
				t.Errorf("state %q, error %q", st.State, st.LastError)
			}
			// A second check sends nothing more: every original at most once per failure.
			if err := h.check(tc.servers); err != nil {
				t.Fatal(err)
			}
			if again, _, _ := h.fake.snapshot(); len(again) != len(stows) {
				t.Errorf("a second check sent %d more", len(again)-len(stows))
			}
		})
	}
}

// TestStudyResourcesSentAsInstances: Content.Resources lists the expanded
// instances besides the study asked for; the new job sends exactly those
// instances (Orthanc refuses the object form in a request).
func TestStudyResourcesSentAsInstances(t *testing.T) {
	h := newHarness(t, "1.24")
	j := failed("store-a", t0.Add(-time.Minute), "inst-2", "inst-1")
	j.Levels = map[string][]string{"Studies": {"study-1"}}
	h.fake.add(j)
	if err := h.check(map[string]time.Time{"store-a": t0}); err != nil {
		t.Fatal(err)
	}
	stows, _, _ := h.fake.snapshot()
	if len(stows) != 1 || !slices.Equal(stows[0].Resources, []string{"inst-2", "inst-1"}) {
		t.Fatalf("stows %+v, want one of [inst-2 inst-1]", stows)
	}
}

// TestAtMostThreeAttemptsPerOriginal: a re-sent job that the store refuses
// again is the same original's next attempt, made once a fresher token is
// pushed; after the third the original is given up, logged once.
func TestAtMostThreeAttemptsPerOriginal(t *testing.T) {
	h := newHarness(t, "1.20")
	orig := h.fake.add(failed("store-a", t0.Add(-time.Minute), "i1"))
	push := t0
	for attempt := 1; attempt <= MaxAttempts; attempt++ {
		if err := h.check(map[string]time.Time{"store-a": push}); err != nil {
			t.Fatal(err)
		}
		stows, _, _ := h.fake.snapshot()
		if len(stows) != attempt {
			t.Fatalf("attempt %d: %d STOW jobs made", attempt, len(stows))
		}
		// The new job fails on the same token: it is created after the push.
		h.clock.Advance(time.Second)
		h.fake.set(h.fake.lastJob(), orthanc.JobStateFailure, orthanc.FunctionErrorBadCredentials)
		if err := h.check(map[string]time.Time{"store-a": push}); err != nil {
			t.Fatal(err)
		}
		if stows, _, _ := h.fake.snapshot(); len(stows) != attempt {
			t.Fatalf("attempt %d: sent again without a fresher token", attempt)
		}
		if attempt < MaxAttempts && h.w.Status().Waiting != 1 {
			t.Errorf("attempt %d: waiting %d, want 1", attempt, h.w.Status().Waiting)
		}
		h.clock.Advance(50 * time.Minute)
		push = h.clock.Now() // the agent refreshed and pushed a new token
	}
	for range 3 {
		if err := h.check(map[string]time.Time{"store-a": push}); err != nil {
			t.Fatal(err)
		}
		h.clock.Advance(time.Hour)
		push = h.clock.Now()
	}
	stows, _, _ := h.fake.snapshot()
	if len(stows) != MaxAttempts {
		t.Errorf("%d STOW jobs for one original, want %d", len(stows), MaxAttempts)
	}
	st := h.w.Status()
	if st.GivenUp != 1 || st.Resubmitted != MaxAttempts || st.Waiting != 0 {
		t.Errorf("status %+v", st)
	}
	if n := h.countLog("failed upload refused by the store again; giving up"); n != 1 {
		t.Errorf("give-up logged %d times, want once", n)
	}
	if h.fake.job(orig).State != orthanc.JobStateFailure {
		t.Error("the original job was changed")
	}
	h.noResubmit()
}

// TestChainEnds: a re-sent job that succeeds, or fails for another reason,
// ends its original's chain.
func TestChainEnds(t *testing.T) {
	tests := []struct {
		name  string
		state string
		code  int
		log   string
	}{
		{"success", orthanc.JobStateSuccess, 0, "failed upload sent again successfully"},
		{"network error", orthanc.JobStateFailure, 9, "failed upload sent again failed for another reason"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, "1.20")
			h.fake.add(failed("store-a", t0.Add(-time.Minute), "i1"))
			if err := h.check(map[string]time.Time{"store-a": t0}); err != nil {
				t.Fatal(err)
			}
			h.fake.set(h.fake.lastJob(), tc.state, tc.code)
			for range 3 {
				h.clock.Advance(time.Hour)
				if err := h.check(map[string]time.Time{"store-a": h.clock.Now()}); err != nil {
					t.Fatal(err)
				}
			}
			if stows, _, _ := h.fake.snapshot(); len(stows) != 1 {
				t.Errorf("%d STOW jobs, want 1", len(stows))
			}
			if n := h.countLog(tc.log); n != 1 {
				t.Errorf("%q logged %d times", tc.log, n)
			}
		})
	}
}

// TestRememberedAcrossRestarts: a restarted agent (a new Watcher on the
// same state file) never sends an original again, and counts a re-sent
// job failing again as the next attempt of the same original.
func TestRememberedAcrossRestarts(t *testing.T) {
	tests := []struct {
		name string
		// after the first re-send, before the restart
		then      func(h *harness)
		wantStows int
	}{
		{"re-sent job still running", func(h *harness) {}, 1},
		{"re-sent job succeeded", func(h *harness) { h.fake.set(h.fake.lastJob(), orthanc.JobStateSuccess, 0) }, 1},
		{"re-sent job refused again: attempts continue to the limit, not from zero", func(h *harness) {
			h.fake.set(h.fake.lastJob(), orthanc.JobStateFailure, orthanc.FunctionErrorBadCredentials)
		}, MaxAttempts},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, "1.20")
			h.fake.add(failed("store-a", t0.Add(-time.Minute), "i1"))
			if err := h.check(map[string]time.Time{"store-a": t0}); err != nil {
				t.Fatal(err)
			}
			tc.then(h)
			for restart := 0; restart < 5; restart++ {
				h.w = h.newWatcher()
				h.clock.Advance(time.Hour)
				if err := h.check(map[string]time.Time{"store-a": h.clock.Now()}); err != nil {
					t.Fatal(err)
				}
				if strings.HasPrefix(tc.name, "re-sent job refused") {
					h.fake.set(h.fake.lastJob(), orthanc.JobStateFailure, orthanc.FunctionErrorBadCredentials)
				}
			}
			if stows, _, _ := h.fake.snapshot(); len(stows) != tc.wantStows {
				t.Errorf("%d STOW jobs over 5 restarts, want %d", len(stows), tc.wantStows)
			}
			h.noResubmit()
		})
	}
}

// TestInterruptedResend: the intent is written before the POST. If the
// agent never learnt the new job's id, the next check (or run) adopts the
// job Orthanc made, or, finding none, sends it then: never twice.
func TestInterruptedResend(t *testing.T) {
	tests := []struct {
		name      string
		fail      func(f *fakeOrthanc)
		wantStows int // POSTs in all
		wantJobs  int // STOW jobs made for the original in all
	}{
		{"job made, answer lost", func(f *fakeOrthanc) { f.stowDrop = true }, 1, 1},
		{"no job made, connection dropped", func(f *fakeOrthanc) { f.stowHangUp = true }, 2, 1},
		{"Orthanc answered 500", func(f *fakeOrthanc) { f.stowStatus = 500 }, 2, 1},
	}
	for _, tc := range tests {
		for _, restart := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, restart %v", tc.name, restart), func(t *testing.T) {
				h := newHarness(t, "1.20")
				orig := h.fake.add(failed("store-a", t0.Add(-time.Minute), "i1", "i2"))
				h.fake.update(tc.fail)
				if err := h.check(map[string]time.Time{"store-a": t0}); err == nil {
					t.Fatal("the failed POST was not reported")
				}
				var st stateFile
				data, _ := os.ReadFile(h.path)
				if err := json.Unmarshal(data, &st); err != nil || len(st.Jobs) != 1 || st.Jobs[0].Pending == nil {
					t.Fatalf("no pending intent on disk before the POST: %s (%v)", data, err)
				}
				h.fake.update(func(f *fakeOrthanc) { f.stowDrop, f.stowHangUp, f.stowStatus = false, false, 0 })
				if restart {
					h.w = h.newWatcher()
				}
				for range 3 {
					h.clock.Advance(time.Second)
					if err := h.check(map[string]time.Time{"store-a": t0}); err != nil {
						t.Fatal(err)
					}
				}
				stows, _, _ := h.fake.snapshot()
				jobs := 0
				h.fake.update(func(f *fakeOrthanc) {
					for _, j := range f.jobs {
						if j.ID != orig && j.Server == "store-a" {
							jobs++
						}
					}
				})
				if len(stows) != tc.wantStows || jobs != tc.wantJobs {
					t.Errorf("%d POSTs and %d new jobs, want %d and %d", len(stows), jobs, tc.wantStows, tc.wantJobs)
				}
				data, _ = os.ReadFile(h.path)
				st = stateFile{}
				if err := json.Unmarshal(data, &st); err != nil || len(st.Jobs) != 1 || st.Jobs[0].Pending != nil || len(st.Jobs[0].Resent) != 1 {
					t.Errorf("state after settling: %s", data)
				}
			})
		}
	}
}

// TestNewJobRefusedByOrthanc: Orthanc answering 404 (the instances were
// deleted) or 400 makes no job: the original is given up, not retried. A
// 403 (the agent's Orthanc user may not do it) is retried later.
func TestNewJobRefusedByOrthanc(t *testing.T) {
	tests := []struct {
		status    int
		wantStows int
		givenUp   int
	}{
		{404, 1, 1},
		{400, 1, 1},
		{403, 3, 0},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			h := newHarness(t, "1.20")
			h.fake.add(failed("store-a", t0.Add(-time.Minute), "i1"))
			h.fake.update(func(f *fakeOrthanc) { f.stowStatus = tc.status })
			for range 3 {
				_ = h.check(map[string]time.Time{"store-a": t0}) // the refusal is reported; the outcome is what counts
			}
			stows, _, _ := h.fake.snapshot()
			if len(stows) != tc.wantStows || h.w.Status().GivenUp != tc.givenUp || h.w.Status().Resubmitted != 0 {
				t.Errorf("%d POSTs, status %+v", len(stows), h.w.Status())
			}
		})
	}
}

// TestVersions: the plugin version decides whether jobs are looked at;
// the unavailable state is logged once.
func TestVersions(t *testing.T) {
	tests := []struct {
		version string
		state   string
		listed  bool
	}{
		{"1.7", "unavailable: DICOMweb 1.7 < 1.18", false},
		{"1.17", "unavailable: DICOMweb 1.17 < 1.18", false},
		{"0.9", "unavailable: DICOMweb 0.9 < 1.18", false},
		{"1.18", "enabled (DICOMweb 1.18)", true},
		{"1.20", "enabled (DICOMweb 1.20)", true},
		{"1.24", "enabled (DICOMweb 1.24)", true},
		{"1.24.1", "enabled (DICOMweb 1.24.1)", true},
		{"2.0", "enabled (DICOMweb 2.0)", true},
		{"mainline", "enabled (DICOMweb mainline)", true},
		{"banana", `unavailable: DICOMweb version "banana" is not understood (need 1.18 or later)`, false},
		{"1.x", `unavailable: DICOMweb version "1.x" is not understood (need 1.18 or later)`, false},
	}
	for _, tc := range tests {
		t.Run(tc.version, func(t *testing.T) {
			h := newHarness(t, tc.version)
			h.fake.legacy = !tc.listed
			h.fake.add(failed("store-a", t0.Add(-time.Minute), "i1"))
			for range 3 {
				if err := h.check(map[string]time.Time{"store-a": t0}); err != nil {
					t.Fatal(err)
				}
			}
			st := h.w.Status()
			if st.State != tc.state {
				t.Errorf("state %q, want %q", st.State, tc.state)
			}
			stows, _, listed := h.fake.snapshot()
			if (listed > 0) != tc.listed || (len(stows) > 0) != tc.listed {
				t.Errorf("jobs listed %d times, %d STOW jobs", listed, len(stows))
			}
			if n := h.countLog("re-sending failed uploads is unavailable"); n != map[bool]int{true: 0, false: 1}[tc.listed] {
				t.Errorf("unavailable logged %d times", n)
			}
		})
	}
}

// TestLegacyJobsOnNewerPlugin: even where the version allows it, a STOW
// job without Server and Resources (as DICOMweb 1.7 writes them) is left.
func TestLegacyJobsOnNewerPlugin(t *testing.T) {
	h := newHarness(t, "mainline")
	h.fake.legacy = true
	h.fake.add(failed("store-a", t0.Add(-time.Minute), "i1"))
	if err := h.check(map[string]time.Time{"store-a": t0}); err != nil {
		t.Fatal(err)
	}
	if stows, _, _ := h.fake.snapshot(); len(stows) != 0 {
		t.Errorf("a job without Server was sent again: %+v", stows)
	}
}

// TestDisabledAndErrors: ResubmitFailedJobs false makes no Orthanc call;
// a failing Orthanc shows in the status and is returned.
func TestDisabledAndErrors(t *testing.T) {
	h := newHarness(t, "1.20")
	h.fake.add(failed("store-a", t0.Add(-time.Minute), "i1"))
	if s := h.w.Status(); s.State != StateNotChecked {
		t.Errorf("before any check: %q", s.State)
	}
	if err := h.w.Check(context.Background(), h.fake.client(), Config{Enabled: false, StatePath: h.path}, map[string]time.Time{"store-a": t0}); err != nil {
		t.Fatal(err)
	}
	if h.w.Status().State != StateDisabled || h.fake.requests != 0 {
		t.Errorf("disabled: state %q, %d requests to Orthanc", h.w.Status().State, h.fake.requests)
	}
	if _, err := os.Stat(h.path); !os.IsNotExist(err) {
		t.Errorf("disabled watcher wrote its state file (%v)", err)
	}

	h.fake.update(func(f *fakeOrthanc) { f.pluginStatus = 500 })
	err := h.check(map[string]time.Time{"store-a": t0})
	if err == nil || !strings.HasPrefix(h.w.Status().State, "unknown: cannot read the DICOMweb plugin version") {
		t.Errorf("plugin version failing: err %v, state %q", err, h.w.Status().State)
	}
}

// TestStateFile: format, mode 0600, pruned with Orthanc's history (and
// only with it), bounded, and a damaged file pauses re-sending instead of sending twice.
func TestStateFile(t *testing.T) {
	t.Run("format and mode", func(t *testing.T) {
		h := newHarness(t, "1.20")
		orig := h.fake.add(failed("store-a", t0.Add(-time.Minute), "instance-1"))
		if err := h.check(map[string]time.Time{"store-a": t0}); err != nil {
			t.Fatal(err)
		}
		// Windows has no mode bits: 0600 is a writable file there (Go
		// shows 0666) and its access list is the data folder's.
		wantMode := os.FileMode(0o600)
		if runtime.GOOS == "windows" {
			wantMode = 0o666
		}
		fi, err := os.Stat(h.path)
		if err != nil || fi.Mode().Perm() != wantMode {
			t.Fatalf("state file: %v mode %v, want %v", err, fi.Mode(), wantMode)
		}
		data, _ := os.ReadFile(h.path)
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`{"Jobs":[{"Original":%q,"Resent":[%q],"Server":"store-a","Updated":"2026-12-01T10:00:00Z"}],"Version":1}`,
			orig, h.fake.lastJob())
		if got, _ := json.Marshal(doc); string(got) != want {
			t.Errorf("state file\n%s\nwant\n%s", got, want)
		}
		if strings.Contains(string(data), "instance-1") {
			t.Error("the state file holds instance ids; it needs job ids only")
		}
	})
	t.Run("pruned when Orthanc no longer lists the jobs", func(t *testing.T) {
		h := newHarness(t, "1.20")
		orig := h.fake.add(failed("store-a", t0.Add(-time.Minute), "i1"))
		if err := h.check(map[string]time.Time{"store-a": t0}); err != nil {
			t.Fatal(err)
		}
		resent := h.fake.lastJob()
		for _, step := range []struct {
			forget  string
			entries int
		}{{orig, 1}, {resent, 0}} {
			h.fake.forget(step.forget)
			if err := h.check(map[string]time.Time{"store-a": t0}); err != nil {
				t.Fatal(err)
			}
			st, err := loadState(h.path)
			if err != nil || len(st.Jobs) != step.entries {
				t.Errorf("after Orthanc forgot %s: %d entries (%v), want %d", step.forget, len(st.Jobs), err, step.entries)
			}
		}
	})
	t.Run("full: listed entries are kept, new work waits", func(t *testing.T) {
		h := newHarness(t, "1.20")
		st := &stateFile{Version: stateVersion}
		for i := 0; i < MaxEntries+5; i++ {
			id := h.fake.add(fakeJob{State: orthanc.JobStateSuccess, Server: "store-a", Created: t0, Instances: []string{"i"}})
			st.Jobs = append(st.Jobs, &entry{Original: "orig-" + id, Server: "store-a", Resent: []string{id},
				Outcome: outcomeSucceeded, Updated: t0.Add(time.Duration(i) * time.Second)})
		}
		if err := saveState(h.path, st); err != nil {
			t.Fatal(err)
		}
		h.fake.add(failed("store-a", t0.Add(-time.Minute), "new"))
		if err := h.check(map[string]time.Time{"store-a": t0}); err != nil {
			t.Fatal(err)
		}
		got, err := loadState(h.path)
		if err != nil || len(got.Jobs) != MaxEntries+5 {
			t.Fatalf("%d entries (%v), want all %d: Orthanc still lists their jobs", len(got.Jobs), err, MaxEntries+5)
		}
		if stows, _, _ := h.fake.snapshot(); len(stows) != 0 {
			t.Errorf("%d STOW jobs with the state file full, want 0", len(stows))
		}
		if !strings.Contains(h.logs.String(), `"skipped":1`) {
			t.Errorf("the skip is not logged:\n%s", h.logs.String())
		}
	})
	for _, damaged := range []string{"not json", `{"Version":2,"Jobs":[]}`, `{"Version":1,"Jobs":[{"Original":"a","Server":"s","Resent":["a"],"Updated":"2026-12-01T10:00:00Z"}]}`,
		`{"Version":1,"Jobs":[],"Extra":1}`} {
		t.Run("damaged: "+damaged, func(t *testing.T) {
			h := newHarness(t, "1.20")
			h.fake.add(failed("store-a", t0.Add(-time.Minute), "i1"))
			if err := os.WriteFile(h.path, []byte(damaged), 0o600); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := h.check(map[string]time.Time{"store-a": t0}); err != nil {
					t.Fatal(err)
				}
			}
			if stows, _, _ := h.fake.snapshot(); len(stows) != 0 {
				t.Error("sent with a damaged state file")
			}
			if s := h.w.Status(); !strings.HasPrefix(s.State, "error: state file ") {
				t.Errorf("state %q", s.State)
			}
			if n := h.countLog("re-sending failed uploads is paused"); n != 1 {
				t.Errorf("pause logged %d times", n)
			}
			// Removing it starts afresh.
			os.Remove(h.path)
			if err := h.check(map[string]time.Time{"store-a": t0}); err != nil {
				t.Fatal(err)
			}
			if stows, _, _ := h.fake.snapshot(); len(stows) != 1 {
				t.Errorf("%d STOW jobs after the file was removed", len(stows))
			}
		})
	}
	t.Run("unwritable: nothing is sent", func(t *testing.T) {
		h := newHarness(t, "1.20")
		h.fake.add(failed("store-a", t0.Add(-time.Minute), "i1"))
		h.path = filepath.Join(t.TempDir(), "missing-dir", StateFileName)
		if err := h.check(map[string]time.Time{"store-a": t0}); err != nil {
			t.Fatal(err)
		}
		if stows, _, _ := h.fake.snapshot(); len(stows) != 0 {
			t.Error("sent without the intent on disk")
		}
		if s := h.w.Status(); !strings.Contains(s.LastError, "missing-dir") {
			t.Errorf("status %+v", s)
		}
	})
}

// TestTwoProcessesShareTheStateFile: "agent once" next to the running
// daemon: each check locks and re-reads the state file, so a job is sent
// again by one of them only, and a check that finds the lock held skips.
func TestTwoProcessesShareTheStateFile(t *testing.T) {
	h := newHarness(t, "1.20")
	other := h.newWatcher()
	h.fake.add(failed("store-a", t0.Add(-time.Minute), "i1"))
	servers := map[string]time.Time{"store-a": t0}

	held, err := lockState(h.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.check(servers); err != nil {
		t.Fatal(err)
	}
	if stows, _, _ := h.fake.snapshot(); len(stows) != 0 || !strings.Contains(h.w.Status().LastError, "state file locked") {
		t.Errorf("with the lock held elsewhere: %d STOW jobs, status %+v", len(stows), h.w.Status())
	}
	held.release()

	for i := range 4 {
		w := []*Watcher{h.w, other}[i%2]
		if err := w.Check(context.Background(), h.fake.client(), Config{Enabled: true, StatePath: h.path}, servers); err != nil {
			t.Fatal(err)
		}
	}
	if stows, _, _ := h.fake.snapshot(); len(stows) != 1 {
		t.Errorf("two watchers on one state file made %d STOW jobs, want 1", len(stows))
	}
}

// TestFullStateNeverSendsTwice: past MaxEntries remembered originals the
// state of a job Orthanc still lists is never forgotten (forgetting it
// makes the job look new, so its study is sent again at the next check);
// the new refused jobs wait instead, counted in one log line per check,
// and are sent once Orthanc's history lets entries go.
func TestFullStateNeverSendsTwice(t *testing.T) {
	const refused = MaxEntries + 20
	h := newHarness(t, "1.20")
	servers := map[string]time.Time{"store-a": t0}
	for i := range refused {
		h.fake.add(failed("store-a", t0.Add(-time.Hour+time.Duration(i)*time.Millisecond), fmt.Sprintf("inst-%04d", i)))
	}
	// sent counts the STOW jobs made per instance.
	sent := func() map[string]int {
		stows, _, _ := h.fake.snapshot()
		n := map[string]int{}
		for _, s := range stows {
			for _, r := range s.Resources {
				n[r]++
			}
		}
		return n
	}
	const checks = 5
	for range checks {
		if err := h.check(servers); err != nil {
			t.Fatal(err)
		}
		// The store accepts what was sent again.
		h.fake.update(func(f *fakeOrthanc) {
			for _, j := range f.jobs {
				if j.State == "Running" {
					j.State = orthanc.JobStateSuccess
				}
			}
		})
		h.clock.Advance(time.Minute)
	}
	n := sent()
	if len(n) != MaxEntries {
		t.Errorf("after %d checks %d studies were sent again, want %d (the cap)", checks, len(n), MaxEntries)
	}
	for inst, c := range n {
		if c > 1 {
			t.Errorf("%s was sent %d times", inst, c)
		}
	}
	const full = "state file of re-sent uploads is full; newer failed uploads are not sent again"
	if c := h.countLog(full); c != checks {
		t.Errorf("%q logged %d times in %d checks, want once per check", full, c, checks)
	}
	if !strings.Contains(h.logs.String(), `"skipped":20`) {
		t.Errorf("the skip log does not count the 20 jobs skipped:\n%s", h.logs.String())
	}
	if h.w.Status().Resubmitted != MaxEntries {
		t.Errorf("status %+v", h.w.Status())
	}

	// Orthanc's history lets go of the first jobs and the ones sent for
	// them: their entries are pruned, and the skipped jobs are sent once.
	h.fake.update(func(f *fakeOrthanc) {
		f.jobs = slices.DeleteFunc(f.jobs, func(j *fakeJob) bool { return n[j.Instances[0]] > 0 })
	})
	if err := h.check(servers); err != nil {
		t.Fatal(err)
	}
	n = sent()
	if len(n) != refused {
		t.Errorf("%d studies sent again in all, want %d", len(n), refused)
	}
	for inst, c := range n {
		if c != 1 {
			t.Errorf("%s was sent %d times, want once", inst, c)
		}
	}
	h.noResubmit()
}
