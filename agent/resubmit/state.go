package resubmit

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/atomicfile"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/strictjson"
)

// stateVersion is the state file format written.
const stateVersion = 1

// maxStateBytes bounds what is read back: MaxEntries entries are far smaller.
const maxStateBytes = 4 << 20

// Outcomes of an entry; "" while it may still be sent again.
const (
	outcomeSucceeded = "succeeded" // the latest re-sent job ended in Success
	outcomeFailed    = "failed"    // it failed for another reason: left alone
	outcomeGivenUp   = "given_up"  // MaxAttempts reached, or Orthanc refused the new job
)

// stateFile is the JSON document in StatePath, e.g.
//
//	{
//	  "Version": 1,
//	  "Jobs": [
//	    { "Original": "9f931743-…", "Server": "my-google",
//	      "Resent": ["1d45b671-…"], "Outcome": "succeeded",
//	      "Updated": "2026-12-01T23:01:02Z" }
//	  ]
//	}
//
// Original is the id of the job that failed first, Resent the ids of the
// jobs started for it, in order (their number is the attempts made);
// Pending, when set, is the time an attempt was decided whose job id was
// not learnt yet. Job ids, server names and times only: no token, no
// instance or patient data.
type stateFile struct {
	Version int      `json:"Version"`
	Jobs    []*entry `json:"Jobs"`
}

// entry is one original failure and what was done about it.
type entry struct {
	Original string     `json:"Original"`
	Server   string     `json:"Server"`
	Resent   []string   `json:"Resent"`
	Pending  *time.Time `json:"Pending,omitempty"`
	Outcome  string     `json:"Outcome,omitempty"`
	Updated  time.Time  `json:"Updated"`
}

// ids are the entry's job ids: the original, then the re-sent ones.
func (e *entry) ids() []string { return append([]string{e.Original}, e.Resent...) }

// latest is the id of the last job of the chain.
func (e *entry) latest() string {
	if len(e.Resent) > 0 {
		return e.Resent[len(e.Resent)-1]
	}
	return e.Original
}

// loadState reads path; a missing file is an empty state (first run).
func loadState(path string) (*stateFile, error) {
	if path == "" {
		return nil, errors.New("path is not set")
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &stateFile{Version: stateVersion}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxStateBytes {
		return nil, fmt.Errorf("%s is larger than %d MiB", path, maxStateBytes>>20)
	}
	var st stateFile
	if err := strictjson.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("%s has format version %d; this agent reads version %d", path, st.Version, stateVersion)
	}
	seen := map[string]bool{}
	for i, e := range st.Jobs {
		if e == nil || e.Original == "" || e.Server == "" || len(e.Resent) > MaxAttempts {
			return nil, fmt.Errorf("%s: Jobs[%d] is not a valid entry", path, i)
		}
		switch e.Outcome {
		case "", outcomeSucceeded, outcomeFailed, outcomeGivenUp:
		default:
			return nil, fmt.Errorf("%s: Jobs[%d]: unknown Outcome %q", path, i, e.Outcome)
		}
		for _, id := range e.ids() {
			if id == "" || seen[id] {
				return nil, fmt.Errorf("%s: Jobs[%d]: job id empty or listed twice", path, i)
			}
			seen[id] = true
		}
	}
	return &st, nil
}

// errLocked: another process holds the state file's lock.
var errLocked = errors.New("locked by another process")

// stateLock is the held lock on path + ".lock".
type stateLock struct{ f *os.File }

// lockState takes the lock that serializes checks of all the agent
// processes sharing path (errLocked when another holds it).
func lockState(path string) (*stateLock, error) {
	if path == "" {
		return nil, errors.New("path is not set")
	}
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := tryLock(f); err != nil {
		f.Close()
		return nil, err
	}
	return &stateLock{f: f}, nil
}

func (l *stateLock) release() {
	_ = unlock(l.f)
	_ = l.f.Close()
}

// saveState replaces path atomically, mode 0600.
func saveState(path string, st *stateFile) error {
	if st.Jobs == nil {
		st.Jobs = []*entry{}
	}
	st.Version = stateVersion
	return atomicfile.WriteJSON(path, st, 0o600)
}
