package policysrc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
)

// FragmentLoader builds the policy from a Store's fragments, reading and
// parsing only fragments that are new or changed since the last load.
type FragmentLoader struct {
	store  Store
	merger policy.Merger // merges only what changed since its last good merge

	mu      sync.Mutex
	parsed  map[string]parsed // by fragment name: the last listing's fragments
	lastErr error             // the last load's outcome
	loaded  bool              // parsed holds exactly the last listing
}

// unchanged reports whether objs lists exactly the fragments of the last
// load, at the same versions (names are unique in a listing).
func (l *FragmentLoader) unchanged(objs []Object) bool {
	if len(objs) != len(l.parsed) {
		return false
	}
	for _, o := range objs {
		if p, ok := l.parsed[o.Name]; !ok || p.version != o.Version {
			return false
		}
	}
	return true
}

// notifier is a Store that knows, without listing, that its listing has
// not changed since the last List (WatchedDir).
type notifier interface{ Unchanged() bool }

// deltaLister is a Store that can say what changed since its last listing
// without listing the rest (WatchedDir): the new and changed entries and
// the names of those gone. ok false: a full listing is due (List).
type deltaLister interface {
	Delta(ctx context.Context) (changed []Object, gone []string, ok bool, err error)
}

// parsed is one fragment as last read: refused ones are kept too, so an
// unchanged bad fragment is not read again.
type parsed struct {
	version Version
	frag    *policy.Fragment // nil when the JSON did not decode
	err     error
}

// NewFragmentLoader returns a loader for store's fragments.
func NewFragmentLoader(store Store) *FragmentLoader {
	return &FragmentLoader{store: store, parsed: map[string]parsed{}}
}

// Load is a policy.Loader. It lists the fragments; when the listing equals
// the last one it returns that load's outcome without reading anything:
// nil, nil after a success (nothing changed), the same error after a
// refusal. Otherwise it reads and parses the new and changed fragments,
// reuses the others as parsed, and merges them all. The error lists every
// problem of every fragment; the policy is returned only when there is
// none. A fragment that cannot be read (a network error) is not
// remembered, so it is read again at the next load.
func (l *FragmentLoader) Load(ctx context.Context) (*policy.Policy, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n, ok := l.store.(notifier); ok && l.loaded && n.Unchanged() {
		return nil, l.lastErr
	}
	// After a good load, the merger holds exactly the listed fragments, so
	// what changed is all it needs; after a refusal, list and merge all.
	if d, ok := l.store.(deltaLister); ok && l.loaded && l.lastErr == nil {
		changed, gone, ok, err := d.Delta(ctx)
		if err != nil {
			return nil, err
		}
		if ok {
			return l.loadDelta(ctx, changed, gone)
		}
	}
	objs, err := l.store.List(ctx)
	if err != nil {
		return nil, err
	}
	if l.loaded && l.unchanged(objs) {
		return nil, l.lastErr
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("policy: no fragments in %s (want files or objects whose names end in .json)", l.store)
	}

	_, errs, unreadable := l.readChanged(ctx, objs)
	missing := false
	if len(l.parsed) != len(objs) { // some are gone (or unreadable)
		listed := make(map[string]bool, len(objs))
		for _, o := range objs {
			listed[o.Name] = true
		}
		for name := range l.parsed {
			if !listed[name] {
				delete(l.parsed, name)
			}
		}
	}
	frags := make([]*policy.Fragment, 0, len(objs))
	for _, o := range objs {
		p, ok := l.parsed[o.Name]
		switch {
		case !ok: // unreadable, reported above
			missing = true
			continue
		case p.err != nil:
			errs = append(errs, p.err)
		}
		if p.frag == nil {
			missing = true
			continue
		}
		frags = append(frags, p.frag)
	}
	var pol *policy.Policy
	if !missing && !unreadable {
		// With a fragment missing, the merge would report its names as
		// unknown: noise next to the real problem.
		var mergeErr error
		pol, mergeErr = l.merger.Merge(frags)
		errs = append(errs, mergeErr)
	}
	err = errors.Join(errs...)
	if unreadable {
		// Not remembered: the next load lists and tries again.
		l.loaded = false
		return nil, err
	}
	l.lastErr, l.loaded = err, true
	if err != nil {
		return nil, err
	}
	return pol, nil
}

// loadDelta is Load after a good load when the store said what changed:
// only the changed fragments are read, parsed and merged in.
func (l *FragmentLoader) loadDelta(ctx context.Context, changed []Object, gone []string) (*policy.Policy, error) {
	fresh, errs, unreadable := l.readChanged(ctx, changed)
	var frags []*policy.Fragment
	refused := false
	for _, p := range fresh {
		if p.err != nil {
			errs = append(errs, p.err)
		}
		if p.frag == nil {
			refused = true
			continue
		}
		frags = append(frags, p.frag)
	}
	var removed []string
	for _, name := range gone {
		if _, ok := l.parsed[name]; ok {
			delete(l.parsed, name)
			removed = append(removed, name)
		}
	}
	switch {
	case unreadable:
		// Not remembered: the next load lists and tries again.
		l.loaded = false
		return nil, errors.Join(errs...)
	case len(frags) == 0 && len(removed) == 0 && !refused:
		return nil, nil // touched, not changed
	case len(l.parsed) == 0:
		err := fmt.Errorf("policy: no fragments in %s (want files or objects whose names end in .json)", l.store)
		l.lastErr = err
		return nil, err
	}
	if !refused {
		pol, err := l.merger.Update(frags, removed)
		errs = append(errs, err)
		if err = errors.Join(errs...); err == nil {
			return pol, nil
		}
	}
	l.lastErr = errors.Join(errs...)
	return nil, l.lastErr
}

// Readers is how many fragments a load reads and parses at once from a
// store that waits on the network (Cloud Storage). A prefix laid out as
// the Terraform module does holds 40,001 objects at 10,000 sites: one GET
// after another, at tens of milliseconds each, would keep a new instance
// from serving for many minutes. A directory is read one file after
// another: its reads are CPU on the broker's own core, and goroutines in
// file system calls only add thread hand-offs.
const Readers = 32

// remote is a Store whose reads wait on the network, read Readers at once.
type remote interface{ remote() }

// eachReader is a Store that reads a set of fragments for less than one
// Read each (a directory opens itself once, and its files relative to it).
type eachReader interface {
	ReadEach(ctx context.Context, objs []Object, each func(i int, data []byte, err error))
}

func (*GCS) remote() {}

// readChanged reads and parses the listed fragments that are new or at a
// new version (Readers at a time from a remote store), records them in l.parsed (patched in
// place: a new 40,000-entry map per reload would cost more than the rest)
// and returns them in listing order. One that cannot be read is reported,
// not recorded.
func (l *FragmentLoader) readChanged(ctx context.Context, objs []Object) (fresh []parsed, errs []error, unreadable bool) {
	if len(l.parsed) == 0 {
		l.parsed = make(map[string]parsed, len(objs)) // a first load: sized once, not grown
	}
	todo := make([]Object, 0, len(objs))
	for _, o := range objs {
		if p, ok := l.parsed[o.Name]; !ok || p.version != o.Version {
			todo = append(todo, o)
		}
	}
	type result struct {
		p       parsed
		readErr error
	}
	results := make([]result, len(todo))
	workers := 1
	if _, ok := l.store.(remote); ok {
		workers = min(Readers, len(todo))
	}
	parse := func(i int, data []byte, err error) {
		if err != nil {
			results[i].readErr = err
			return
		}
		f, err := policy.ParseFragment(todo[i].Name, data)
		results[i].p = parsed{version: todo[i].Version, frag: f, err: err}
	}
	var next atomic.Int64
	work := func() {
		for i := int(next.Add(1) - 1); i < len(todo); i = int(next.Add(1) - 1) {
			data, err := l.store.Read(ctx, todo[i])
			parse(i, data, err)
		}
	}
	r, each := l.store.(eachReader)
	switch {
	case workers == 1 && each:
		r.ReadEach(ctx, todo, parse)
	case workers == 1:
		work()
	default:
		var wg sync.WaitGroup
		for range workers {
			wg.Go(work)
		}
		wg.Wait()
	}
	fresh = make([]parsed, 0, len(todo))
	for i, r := range results {
		name := todo[i].Name
		if r.readErr != nil {
			errs = append(errs, fmt.Errorf("policy: fragment %q: cannot read: %v", name, r.readErr))
			unreadable = true
			continue
		}
		l.parsed[name] = r.p
		fresh = append(fresh, r.p)
	}
	return fresh, errs, unreadable
}
