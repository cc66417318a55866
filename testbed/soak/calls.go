package soak

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/dicomgen"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/stack"
)

// Op is a DICOMweb operation made through the site Orthanc.
type Op string

// The three calls of a cycle.
const (
	OpSTOW Op = "STOW"
	OpQIDO Op = "QIDO"
	OpWADO Op = "WADO"
)

// Call is one DICOMweb call through the site Orthanc and its check.
type Call struct {
	Cycle      int
	Op         Op
	Store      string
	Start, End time.Time
	// Err is nil for a call that passed its check; its text never holds a
	// token (redacted when recorded).
	Err error
	// missingServer: the site Orthanc answered that it has no DICOMweb
	// server of that name (HTTP 404), i.e. the entry was not there.
	missingServer bool
	// detail is what a failed call met, gathered when it failed.
	detail *failureDetail
}

type class int

const (
	classOK class = iota
	// classDown: unavoidable, rule 1 (doc.go): the site Orthanc was down.
	classDown
	// classRepush: unavoidable, rule 2: the entry its restart erased was
	// not back yet.
	classRepush
	classFailed
)

func (c class) unavoidable() bool { return c == classDown || c == classRepush }

// classify applies doc.go's rules to a call, given the site Orthanc's
// restart intervals.
func classify(c Call, down []interval) class {
	if c.Err == nil {
		return classOK
	}
	for _, iv := range down {
		if iv.overlaps(c.Start, c.End) { // rule 1: Orthanc itself was down
			return classDown
		}
	}
	for _, iv := range down {
		// Rule 2: the entry the restart erased is not back yet.
		if c.missingServer && !c.Start.Before(iv.to) && c.Start.Sub(iv.to) <= RepushGrace {
			return classRepush
		}
	}
	return classFailed
}

func (r *runner) record(c Call) {
	if c.Err != nil {
		// One line (Orthanc's error bodies are indented JSON), no token.
		c.Err = errors.New(strings.Join(strings.Fields(redact(c.Err.Error())), " "))
	}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	if c.Err != nil {
		r.logf("call %d %s %s failed after %s: %v", c.Cycle, c.Op, c.Store, c.End.Sub(c.Start).Round(time.Millisecond), c.Err)
	}
}

// callLoop runs cycles round-robin over the stores until ctx ends.
func (r *runner) callLoop(ctx context.Context) {
	stores := r.s.Stores()
	for n := 1; ctx.Err() == nil; n++ {
		r.cycle(ctx, n, stores[(n-1)%len(stores)].Name)
		if !sleepUntil(ctx, time.Now().Add(CallPause)) {
			return
		}
	}
}

// cycle is STOW, then QIDO and WADO of what was stored, then clean-up.
func (r *runner) cycle(ctx context.Context, n int, store string) {
	site, cloud := r.s.Site, r.s.CloudOrthanc
	info, err := dicomgen.Generate(dicomgen.Options{
		PatientID: fmt.Sprintf("SOAK-%06d", n), PatientName: "SOAK^CYCLE", StudyDescription: "soak cycle " + store,
	})
	if err != nil {
		r.harnessProblem("generate a study: %v", err)
		return
	}
	var siteStudy string
	ok := r.call(ctx, n, OpSTOW, store, func(cctx context.Context) error {
		var err error
		if siteStudy, _, err = stack.Upload(cctx, site, info.Files); err != nil {
			return fmt.Errorf("upload to the site: %w", err)
		}
		if err := stack.StowWait(cctx, site, store, []string{siteStudy}); err != nil {
			return err
		}
		_, inst, err := stack.FindStudy(cctx, cloud, info.StudyUID)
		if err != nil {
			return fmt.Errorf("look for the study in the cloud Orthanc: %w", err)
		}
		if inst != len(info.Files) {
			return fmt.Errorf("STOW answered success but the cloud Orthanc holds %d of the %d instances", inst, len(info.Files))
		}
		return nil
	})
	if ok {
		r.call(ctx, n, OpQIDO, store, func(cctx context.Context) error {
			found, err := stack.QIDOStudy(cctx, site, store, info.StudyUID)
			if err == nil && !found {
				err = errors.New("QIDO answered without the study just stored")
			}
			return err
		})
		r.call(ctx, n, OpWADO, store, func(cctx context.Context) error {
			if err := stack.DeleteStudy(cctx, site, siteStudy); err != nil {
				return fmt.Errorf("delete the study on the site before retrieving it: %w", err)
			}
			if err := stack.RetrieveWait(cctx, site, store, info.StudyUID); err != nil {
				return err
			}
			_, inst, err := stack.FindStudy(cctx, site, info.StudyUID)
			if err != nil {
				return fmt.Errorf("look for the retrieved study on the site: %w", err)
			}
			if inst != len(info.Files) {
				return fmt.Errorf("retrieve answered success but the site holds %d of the %d instances", inst, len(info.Files))
			}
			return nil
		})
	}
	// Clean-up keeps both Orthancs small; not a call, failures are ignored
	// (a study left behind while Orthanc restarts does no harm).
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	for _, o := range []*orthancproc.Instance{site, cloud} {
		if id, _, err := stack.FindStudy(cctx, o, info.StudyUID); err == nil && id != "" {
			_ = stack.DeleteStudy(cctx, o, id)
		}
	}
}

// call times and records one call; it reports whether it passed. A call
// cut short by the end of the run is not recorded.
func (r *runner) call(ctx context.Context, n int, op Op, store string, f func(context.Context) error) bool {
	if ctx.Err() != nil {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	c := Call{Cycle: n, Op: op, Store: store, Start: time.Now()}
	c.Err = f(cctx)
	c.End = time.Now()
	if ctx.Err() != nil && c.Err != nil {
		return false // the run ended under it
	}
	if c.Err != nil {
		jobs := r.siteJobs()
		c.missingServer = r.isMissingServer(op, store, c.Err, jobs)
		r.gather(&c, jobs)
	}
	r.record(c)
	return c.Err == nil
}

// Orthanc's answers when it has no DICOMweb server of the name asked for
// (measured on 1.10.1 with DICOMweb 1.7): /qido answers 404 with Details
// "Inexistent server: NAME"; /stow and /retrieve start a job that fails
// with FunctionErrorCode 7, FunctionErrorDetails "Inexistent server: NAME"
// (the soak waits for the job itself, stack.StowWait; asked for a
// synchronous job, Orthanc answers 500 and the job says the same).
const inexistentServer = "Inexistent server: "

// missingAnswer looks at a failed call's answer: missing when the answer
// or the failed job itself says the server is unknown, askJobs when only
// Orthanc's job list can say (a synchronous job answered 500).
func missingAnswer(store string, err error) (missing, askJobs bool) {
	var je *stack.JobError
	if errors.As(err, &je) {
		return je.FunctionErrorCode == 7 && je.FunctionErrorDetails == inexistentServer+store, false
	}
	var he *orthancproc.HTTPError
	if !errors.As(err, &he) || !strings.Contains(he.Path, "/servers/") {
		return false, false
	}
	switch {
	case he.Status == http.StatusNotFound:
		return strings.Contains(he.Body, inexistentServer+store), false
	case he.Status == http.StatusInternalServerError && (strings.HasSuffix(he.Path, "/stow") || strings.HasSuffix(he.Path, "/retrieve")):
		return false, true
	}
	return false, false
}

// isMissingServer reports whether a failed call failed because the site
// Orthanc had no DICOMweb server of that name. For a STOW or retrieve it
// looks in Orthanc's jobs (read just after the call failed) for a failed
// job of that type, not yet attributed to another call, whose reason is
// the inexistent server.
func (r *runner) isMissingServer(op Op, store string, err error, jobs []job) bool {
	missing, askJobs := missingAnswer(store, err)
	if !askJobs {
		return missing
	}
	typ := jobType(op)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.jobsSeen == nil {
		r.jobsSeen = map[string]bool{}
	}
	for _, j := range jobs {
		if c := j.content(); j.Type == typ && j.State == "Failure" && c.FunctionErrorCode == 7 &&
			c.FunctionErrorDetails == inexistentServer+store && !r.jobsSeen[j.ID] {
			r.jobsSeen[j.ID] = true
			return true
		}
	}
	return false
}
