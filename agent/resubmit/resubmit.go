// Package resubmit sends failed uploads again. When a token expired (or
// was refused) before Orthanc used it, Orthanc's DICOMweb STOW-RS jobs to
// that store fail and stay failed: nothing in Orthanc retries them. The
// Watcher looks at Orthanc's jobs (GET /jobs?expand) and, for a
// DicomWebStowClient job in Failure whose Content.FunctionErrorCode is 29
// (the store answered 401/403) and whose Content.Server is a server this
// agent manages, starts a NEW asynchronous STOW job of the same instances
// (POST {root}servers/{name}/stow) once a fresh token for that server has
// been pushed, i.e. a token pushed after the failed job was created.
//
// It never uses POST /jobs/{id}/resubmit: Orthanc does not rewind a STOW
// job that failed on a 401, so the rerun sends an empty multipart body and
// ends in Success with nothing stored.
//
// Each original failure is sent again at most MaxAttempts times: a re-sent
// job that fails with 29 again is the same original's next attempt. What
// was re-sent is remembered across agent restarts in a small JSON file
// (StateFileName in the agent's state directory), written before each
// POST, so a restart never sends a job twice. Entries are dropped once
// Orthanc no longer lists any of their jobs, and only then: an entry
// forgotten while its job is listed makes that job look new, and its
// instances would be sent twice. So when MaxEntries are remembered, newly
// failed uploads are not taken on (one warning per check with their
// count) until Orthanc's history lets older entries go. Jobs of other servers, jobs
// that failed for another reason (e.g. 9: network error or 5xx), retrieve
// jobs and jobs in other states are never touched.
//
// DICOMweb plugins before 1.18 do not put Server and Resources in a STOW
// job's content, so whose job it was cannot be told: there the Watcher
// logs once that re-sending is unavailable and says so in its Status.
package resubmit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
)

// Limits and names.
const (
	// MaxAttempts is how many times one original failure is sent again.
	MaxAttempts = 3
	// MinDICOMwebVersion is the first DICOMweb plugin whose STOW jobs carry
	// Content.Server and Content.Resources.
	MinDICOMwebVersion = "1.18"
	// StateFileName is the state file's name in the state directory.
	StateFileName = "resubmitted-jobs.json"
	// MaxEntries bounds the state file: with that many originals
	// remembered, new failed uploads are skipped (and logged), never sent
	// in place of a remembered one. Orthanc keeps only JobsHistorySize
	// (default 10) finished jobs, and entries are pruned with them, so
	// this is a safety net.
	MaxEntries = 1000
)

// Status texts. Every State starts with one of these words.
const (
	StateDisabled     = "disabled (ResubmitFailedJobs is false)"
	StateNotChecked   = "unknown: not checked yet"
	prefixEnabled     = "enabled"
	prefixUnknown     = "unknown: "
	prefixUnavailable = "unavailable: "
	prefixError       = "error: "
)

// Orthanc is what the Watcher needs from Orthanc (orthanc.Client).
type Orthanc interface {
	PluginVersion(ctx context.Context) (string, error)
	ListJobs(ctx context.Context) ([]orthanc.Job, error)
	Stow(ctx context.Context, server string, resources []string) (string, error)
}

// Config is the part of the agent's configuration the Watcher follows; it
// is passed to every Check so a reload applies at once.
type Config struct {
	// Enabled is ResubmitFailedJobs.
	Enabled bool
	// StatePath is the state file (StateDirectory/StateFileName).
	StatePath string
}

// Options build a Watcher.
type Options struct {
	// Log receives structured events; nil discards them.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Resubmitted is called once per job sent again (the metric); may be nil.
	Resubmitted func()
}

// Status is the Watcher's summary for /healthz and "agent status".
type Status struct {
	// State is StateDisabled, StateNotChecked, "enabled (DICOMweb 1.20)",
	// "unavailable: DICOMweb 1.7 < 1.18", "unknown: <why>" or "error: <why>".
	State string
	// LastError is the last failure of an enabled Watcher ("" after a good check).
	LastError string
	// Resubmitted and GivenUp count, since the agent started, the jobs
	// sent again and the originals given up (MaxAttempts reached or their
	// instances gone). Waiting is how many failed uploads of managed
	// servers wait for a fresh token at the last check.
	Resubmitted, GivenUp, Waiting int
}

// Watcher re-sends failed uploads. Check must be called from one
// goroutine at a time; Status from any.
type Watcher struct {
	log         *slog.Logger
	now         func() time.Time
	resubmitted func()

	statePath string
	state     *stateFile // read at each check, under the lock
	// noticed are the job ids already logged as waiting, so each is
	// logged once; pruned with Orthanc's list.
	noticed map[string]bool
	// loggedVersion is the plugin version last logged as unavailable.
	loggedVersion string
	lastState     string

	mu     sync.Mutex
	status Status
}

// New builds a Watcher.
func New(o Options) *Watcher {
	w := &Watcher{log: o.Log, now: o.Now, resubmitted: o.Resubmitted, noticed: map[string]bool{},
		status: Status{State: StateNotChecked}}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.resubmitted == nil {
		w.resubmitted = func() {}
	}
	return w
}

// Status returns the latest summary. Safe for concurrent use.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

func (w *Watcher) update(f func(s *Status)) {
	w.mu.Lock()
	f(&w.status)
	s := w.status.State
	w.mu.Unlock()
	if s != w.lastState && strings.HasPrefix(s, prefixEnabled) {
		w.log.Info("re-sending failed uploads is enabled", "state", s)
	}
	w.lastState = s
}

// Supported reports whether a DICOMweb plugin version writes the STOW job
// fields re-sending needs (Server, Resources: 1.18 and later), and if not,
// why, in the words Status uses ("DICOMweb 1.7 < 1.18").
func Supported(version string) (bool, string) {
	if version == "mainline" { // a development build: newer than every release
		return true, ""
	}
	major, minor, ok := parseVersion(version)
	if !ok {
		return false, fmt.Sprintf("DICOMweb version %q is not understood (need %s or later)",
			logtext.Truncate(logtext.Clip(version), 40), MinDICOMwebVersion)
	}
	wantMajor, wantMinor, _ := parseVersion(MinDICOMwebVersion)
	if major > wantMajor || major == wantMajor && minor >= wantMinor {
		return true, ""
	}
	return false, fmt.Sprintf("DICOMweb %s < %s", version, MinDICOMwebVersion)
}

func parseVersion(v string) (major, minor int, ok bool) {
	parts := strings.Split(v, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return 0, 0, false
	}
	var n [3]int
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 || strings.HasPrefix(p, "+") {
			return 0, 0, false
		}
		n[i] = x
	}
	return n[0], n[1], true
}

// Check looks at Orthanc's jobs once and re-sends what is due. servers
// maps every server this agent manages to the time its current token was
// first pushed (zero: no usable token now, so nothing is sent for it
// yet); a job of a server not in the map is never touched. It returns the
// first Orthanc failure (for the metrics); the Status says the rest. o is
// the Orthanc the servers are pushed to; the reconcile loop's Orthanc
// includes this package's, so it is never missing.
func (w *Watcher) Check(ctx context.Context, o Orthanc, cfg Config, servers map[string]time.Time) error {
	if !cfg.Enabled {
		w.update(func(s *Status) { s.State, s.LastError, s.Waiting = StateDisabled, "", 0 })
		return nil
	}
	w.statePath = cfg.StatePath
	version, err := o.PluginVersion(ctx)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		msg := err.Error()
		w.update(func(s *Status) {
			s.State, s.LastError = prefixUnknown+"cannot read the DICOMweb plugin version: "+msg, msg
		})
		return err
	}
	if ok, why := Supported(version); !ok {
		if version != w.loggedVersion {
			w.loggedVersion = version
			w.log.Warn("re-sending failed uploads is unavailable with this DICOMweb plugin version: its STOW jobs do not say "+
				"which server they were for; failed uploads must be sent again by hand",
				"dicomweb_version", logtext.Truncate(logtext.Clip(version), 40), "required", MinDICOMwebVersion)
		}
		w.update(func(s *Status) { s.State, s.LastError, s.Waiting = prefixUnavailable+why, "", 0 })
		return nil
	}
	w.loggedVersion = ""
	enabled := fmt.Sprintf("%s (DICOMweb %s)", prefixEnabled, version)
	// The state file is locked and read afresh for every check, so two
	// agent processes on one state directory ("agent once" next to the
	// daemon) never both send the same job again.
	lock, err := lockState(w.statePath)
	if errors.Is(err, errLocked) {
		w.update(func(s *Status) {
			s.State, s.LastError = enabled, "another agent process is sending failed uploads again (state file locked); skipped one check"
		})
		return nil
	}
	if err != nil {
		msg := "state file lock: " + err.Error()
		if w.Status().LastError != msg {
			w.log.Error("re-sending failed uploads is paused: cannot lock its state file", "path", w.statePath, "error", err.Error())
		}
		w.update(func(s *Status) { s.State, s.LastError = prefixError+msg, msg })
		return nil
	}
	defer lock.release()
	st, err := loadState(w.statePath)
	if err != nil {
		msg := "state file " + err.Error() + "; nothing is sent again until it is fixed (remove it to start afresh: " +
			"failed jobs Orthanc still lists may then be sent once more)"
		if w.Status().LastError != msg {
			w.log.Error("re-sending failed uploads is paused: cannot read its state file", "path", w.statePath, "error", err.Error())
		}
		w.update(func(s *Status) { s.State, s.LastError = prefixError+msg, msg })
		return nil
	}
	w.state = st
	jobs, err := o.ListJobs(ctx)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		msg := err.Error()
		w.update(func(s *Status) { s.State, s.LastError = enabled, msg })
		return err
	}
	r := &round{w: w, o: o, servers: servers, jobs: map[string]orthanc.Job{}, known: map[string]*entry{}}
	err = r.run(ctx, jobs)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	w.update(func(s *Status) {
		s.State, s.LastError, s.Waiting = enabled, msg, r.waiting
		s.Resubmitted += r.resubmitted
		s.GivenUp += r.givenUp
	})
	var oe *orthanc.Error
	if errors.As(err, &oe) {
		return err // an Orthanc failure; state-file failures are in the Status only
	}
	return nil
}

// round is one Check over one listing of Orthanc's jobs.
type round struct {
	w       *Watcher
	o       Orthanc
	servers map[string]time.Time
	jobs    map[string]orthanc.Job // by id, as listed
	known   map[string]*entry      // original and re-sent ids -> their entry
	changed bool

	resubmitted, givenUp, waiting int
	// skipped counts the new originals not taken on: the state is full.
	skipped int
}

func (r *round) run(ctx context.Context, list []orthanc.Job) error {
	w := r.w
	for _, j := range list {
		r.jobs[j.ID] = j
	}
	for id := range w.noticed {
		if _, ok := r.jobs[id]; !ok {
			delete(w.noticed, id)
		}
	}
	r.prune()
	for _, e := range w.state.Jobs {
		for _, id := range e.ids() {
			r.known[id] = e
		}
	}
	r.settlePending()

	var firstErr error
	keep := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	// Entries already re-sent: follow each chain's latest job.
	for _, e := range slices.Clone(w.state.Jobs) {
		if e.Outcome != "" || e.Pending != nil {
			continue
		}
		j, listed := r.jobs[e.latest()]
		if !listed {
			continue // gone from Orthanc's history: pruned with it
		}
		keep(r.follow(ctx, e, j))
	}
	// New originals, oldest first.
	fresh := make([]orthanc.Job, 0, len(list))
	for _, j := range list {
		if r.known[j.ID] == nil && r.isOriginal(j) {
			fresh = append(fresh, j)
		}
	}
	sort.SliceStable(fresh, func(a, b int) bool { return fresh[a].CreationTime.Before(fresh[b].CreationTime) })
	for _, j := range fresh {
		e := &entry{Original: j.ID, Server: j.Server}
		keep(r.candidate(ctx, e, j, true))
	}
	if r.skipped > 0 {
		w.log.Warn("state file of re-sent uploads is full; newer failed uploads are not sent again until Orthanc "+
			"no longer lists older jobs (its JobsHistorySize); send them by hand if they cannot wait",
			"skipped", r.skipped, "max_entries", MaxEntries)
	}
	if r.changed {
		keep(r.save())
	}
	return firstErr
}

// isOriginal: a job this package may act on that it has not seen before —
// a failed STOW job that the store refused (29), of a managed server, with
// the fields that say what it sent.
func (r *round) isOriginal(j orthanc.Job) bool {
	if !j.IsStow() || j.State != orthanc.JobStateFailure || j.FunctionErrorCode != orthanc.FunctionErrorBadCredentials {
		return false
	}
	if j.Server == "" || len(j.Instances) == 0 {
		return false // cannot tell whose job it was, or what it sent
	}
	_, managed := r.servers[j.Server]
	return managed
}

// follow acts on the latest job j of an entry already re-sent.
func (r *round) follow(ctx context.Context, e *entry, j orthanc.Job) error {
	log := r.w.log.With("server", e.Server, "original_job", e.Original, "job", j.ID, "attempt", len(e.Resent))
	switch {
	case j.State == orthanc.JobStateSuccess:
		r.finish(e, outcomeSucceeded)
		log.Info("failed upload sent again successfully")
	case j.State != orthanc.JobStateFailure:
		// Pending, Running, Paused, Retry: wait.
	case j.FunctionErrorCode != orthanc.FunctionErrorBadCredentials:
		r.finish(e, outcomeFailed)
		log.Warn("failed upload sent again failed for another reason than a refused token; leaving it alone",
			"function_error_code", j.FunctionErrorCode)
	case len(e.Resent) >= MaxAttempts:
		r.finish(e, outcomeGivenUp)
		r.givenUp++
		log.Error("failed upload refused by the store again; giving up after the last attempt: send it by hand",
			"attempts", len(e.Resent), "instances", len(j.Instances))
	default:
		return r.candidate(ctx, e, j, false)
	}
	return nil
}

// candidate sends failed job j of entry e again if a fresh token for its
// server has been pushed since j was created; otherwise it waits.
func (r *round) candidate(ctx context.Context, e *entry, j orthanc.Job, isNew bool) error {
	freshSince, managed := r.servers[e.Server]
	if !managed {
		return nil // no longer managed (revoked, conflict): leave it
	}
	if freshSince.IsZero() || !j.CreationTime.Before(freshSince) {
		r.waiting++
		if !r.w.noticed[j.ID] {
			r.w.noticed[j.ID] = true
			r.w.log.Info("upload failed because the store refused the token; it will be sent again once a fresh token is pushed",
				"server", e.Server, "job", j.ID, "original_job", e.Original, "attempt", len(e.Resent)+1)
		}
		return nil
	}
	return r.resend(ctx, e, j, isNew)
}

// resend records the intent, then starts the new STOW job. The intent is
// on disk before the POST, so a crash in between cannot lead to a second
// POST: the next check finds the job (settlePending) or sees there is none.
func (r *round) resend(ctx context.Context, e *entry, j orthanc.Job, isNew bool) error {
	w := r.w
	if len(j.Instances) == 0 {
		return nil // nothing to send (a job without Resources): leave it
	}
	if isNew && len(w.state.Jobs) >= MaxEntries {
		// No room to remember it, and no entry Orthanc still lists may go
		// to make room: sending it unrecorded could send it twice.
		r.skipped++
		return nil
	}
	now := w.now().UTC()
	e.Pending, e.Updated = &now, now
	if isNew {
		w.state.Jobs = append(w.state.Jobs, e)
		for _, id := range e.ids() {
			r.known[id] = e
		}
	}
	if err := r.save(); err != nil {
		// Not on disk: do not send. Undo, so the next check tries again.
		e.Pending = nil
		if isNew {
			w.state.Jobs = slices.DeleteFunc(w.state.Jobs, func(x *entry) bool { return x == e })
			delete(r.known, e.Original)
		}
		return err
	}
	log := w.log.With("server", e.Server, "original_job", e.Original, "failed_job", j.ID, "attempt", len(e.Resent)+1)
	id, err := r.o.Stow(ctx, e.Server, j.Instances)
	if err != nil {
		var oe *orthanc.Error
		if errors.As(err, &oe) && oe.Status >= 400 && oe.Status < 500 {
			// Orthanc refused the request, so no job was made.
			e.Pending = nil
			r.changed = true
			if oe.Status == http.StatusNotFound || oe.Status == http.StatusBadRequest {
				r.finish(e, outcomeGivenUp)
				r.givenUp++
				log.Error("cannot send a failed upload again: Orthanc refused the new STOW job (are its instances deleted?); giving up",
					"error", err.Error())
				return err
			}
		}
		// Otherwise the job may exist: the intent stays, and the next
		// check adopts the job or, finding none, tries again.
		log.Warn("could not send a failed upload again; will retry", "error", err.Error())
		return err
	}
	e.Resent = append(e.Resent, id)
	e.Pending = nil
	r.known[id] = e
	r.changed = true
	r.resubmitted++
	w.resubmitted()
	log.Info("failed upload sent again as a new STOW job (not POST /jobs/{id}/resubmit, which would send nothing)",
		"new_job", id, "instances", len(j.Instances))
	return nil
}

// settlePending resolves intents left by a check that did not learn the
// new job's id (agent stopped, Orthanc's answer lost): a STOW job of the
// same server and instances that no entry knows is that job; with none,
// the POST did not happen and the attempt is not counted.
func (r *round) settlePending() {
	for _, e := range r.w.state.Jobs {
		if e.Pending == nil {
			continue
		}
		var ref []string
		for _, id := range slices.Backward(e.ids()) {
			if j, ok := r.jobs[id]; ok && len(j.Instances) > 0 {
				ref = j.Instances
				break
			}
		}
		var found *orthanc.Job
		for _, j := range r.jobs {
			if !j.IsStow() || j.Server != e.Server || r.known[j.ID] != nil || !slices.Equal(j.Instances, ref) {
				continue
			}
			if found == nil || j.CreationTime.Before(found.CreationTime) {
				jj := j
				found = &jj
			}
		}
		e.Pending, r.changed = nil, true
		if found != nil && ref != nil {
			e.Resent = append(e.Resent, found.ID)
			r.known[found.ID] = e
			r.w.log.Info("found the STOW job a previous run started to send a failed upload again",
				"server", e.Server, "original_job", e.Original, "new_job", found.ID, "attempt", len(e.Resent))
		} else {
			r.w.log.Info("a previous run did not start the STOW job it meant to send a failed upload again; trying again",
				"server", e.Server, "original_job", e.Original)
		}
	}
}

func (r *round) finish(e *entry, outcome string) {
	e.Outcome, e.Updated = outcome, r.w.now().UTC()
	r.changed = true
}

// prune drops the entries none of whose jobs Orthanc lists any more.
func (r *round) prune() {
	w := r.w
	n := len(w.state.Jobs)
	w.state.Jobs = slices.DeleteFunc(w.state.Jobs, func(e *entry) bool {
		for _, id := range e.ids() {
			if _, ok := r.jobs[id]; ok {
				return false
			}
		}
		return true
	})
	if len(w.state.Jobs) != n {
		r.changed = true
	}
}

func (r *round) save() error {
	if err := saveState(r.w.statePath, r.w.state); err != nil {
		r.w.log.Error("cannot write the state file of re-sent uploads; not sending failed uploads again until it can be written",
			"path", r.w.statePath, "error", err.Error())
		return fmt.Errorf("state file %s: %w", r.w.statePath, err)
	}
	r.changed = false
	return nil
}
