package policysrc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// FullListEvery is how often a watched directory is listed in full even
// when inotify reported nothing: the safety net for file systems whose
// changes inotify does not see (NFS, a bind mount changed from outside
// the mount namespace).
const FullListEvery = 10 * time.Minute

// newWatcher is fsnotify's, replaced by tests to make it fail.
var newWatcher = fsnotify.NewWatcher

func openDir(dir string, log *slog.Logger) Store { return NewWatchedDir(dir, log) }

// WatchedDir is a Dir whose refreshes stat only the entries inotify
// reported since the last listing. It lists in full at the first listing,
// after a watcher error or queue overflow, after an event on a dot entry
// (a Kubernetes ConfigMap mount swaps its ..data link by rename, which
// changes what every fragment link points to), while a fragment is a
// link to a file outside the directory's own dot entries (inotify on the
// directory does not see that file change), at least every FullListEvery,
// and on every refresh when no watcher can be had (too many watches or
// instances: logged once).
type WatchedDir struct {
	dir       Dir
	log       *slog.Logger
	now       func() time.Time // injected by tests
	fullEvery time.Duration
	slot      *watchSlot

	mu       sync.Mutex
	objs     map[string]Object // by entry name: the last listing
	listed   bool              // objs is a listing, patched since by events
	lastFull time.Time
	outside  bool // a fragment is a link that events on the directory do not cover
	noWatch  bool // the watcher could not be created: logged once
	stats    atomic.Int64
}

// watchSlot holds the current watcher apart from the WatchedDir, so a
// cleanup can close it when the WatchedDir is collected (the watcher's
// goroutine holds the events, not the WatchedDir).
type watchSlot struct {
	mu sync.Mutex
	ev *dirEvents
}

func (s *watchSlot) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ev != nil {
		s.ev.w.Close()
		s.ev = nil
	}
}

// NewWatchedDir returns the directory dir, watched with inotify from its
// first listing on. log receives the watcher's failures (nil: slog's default).
func NewWatchedDir(dir string, log *slog.Logger) *WatchedDir {
	if log == nil {
		log = slog.Default()
	}
	d := &WatchedDir{dir: Dir(dir), log: log, now: time.Now, fullEvery: FullListEvery, slot: &watchSlot{}}
	runtime.AddCleanup(d, func(s *watchSlot) { s.close() }, d.slot)
	return d
}

// Close stops the watcher; later listings are full ones.
func (d *WatchedDir) Close() error {
	d.slot.close()
	d.mu.Lock()
	d.noWatch = true
	d.mu.Unlock()
	return nil
}

func (d *WatchedDir) String() string { return d.dir.String() }

// Read reads one file, as Dir does.
func (d *WatchedDir) Read(ctx context.Context, o Object) ([]byte, error) { return d.dir.Read(ctx, o) }

// ReadEach reads the listed files, as Dir does.
func (d *WatchedDir) ReadEach(ctx context.Context, objs []Object, each func(i int, data []byte, err error)) {
	d.dir.ReadEach(ctx, objs, each)
}

// dirEvents gathers what inotify reported since the last listing.
type dirEvents struct {
	w     *fsnotify.Watcher
	log   *slog.Logger
	dir   string
	mu    sync.Mutex
	dirty map[string]struct{} // *.json entry names to stat again
	full  bool                // list in full: an error, an overflow, a dot entry
	dead  bool                // the watcher stopped: make another
	seen  atomic.Int64        // events and errors received (tests wait on it)
}

func (e *dirEvents) run() {
	for {
		select {
		case ev, ok := <-e.w.Events:
			if !ok {
				e.stop()
				return
			}
			e.note(ev)
			e.seen.Add(1)
		case err, ok := <-e.w.Errors:
			if !ok {
				e.stop()
				return
			}
			// An overflow lost events; any other error may have too.
			e.log.Warn("policy: directory watch error: listing in full", "dir", e.dir, "error", err.Error())
			e.mu.Lock()
			e.full = true
			e.mu.Unlock()
			e.seen.Add(1)
		}
	}
}

func (e *dirEvents) stop() {
	e.mu.Lock()
	e.dead, e.full = true, true
	e.mu.Unlock()
}

func (e *dirEvents) note(ev fsnotify.Event) {
	if filepath.Clean(ev.Name) == e.dir { // the directory itself removed or moved: the watch is gone
		e.w.Close()
		return
	}
	name := filepath.Base(ev.Name)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case strings.HasPrefix(name, "."):
		e.full = true // ..data swapped: every link may point elsewhere now
	case strings.HasSuffix(name, ".json"):
		e.dirty[name] = struct{}{}
	}
}

// take returns and clears what was reported.
func (e *dirEvents) take() (dirty map[string]struct{}, full, dead bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	dirty, full, dead = e.dirty, e.full, e.dead
	e.dirty, e.full = map[string]struct{}{}, false
	return
}

func (e *dirEvents) quiet() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.full && !e.dead && len(e.dirty) == 0
}

// watch returns the current watcher, making one when there is none (at the
// first listing, or after the last one stopped: fresh, so list in full).
// nil: no watcher could be had; the failure is logged once.
func (d *WatchedDir) watch() (e *dirEvents, fresh bool) {
	d.slot.mu.Lock()
	defer d.slot.mu.Unlock()
	if d.slot.ev != nil && !d.slot.ev.isDead() {
		return d.slot.ev, false
	}
	if d.slot.ev != nil {
		d.slot.ev.w.Close()
		d.slot.ev = nil
	}
	if d.noWatch {
		return nil, true
	}
	w, err := newWatcher()
	if err == nil {
		if err = w.Add(string(d.dir)); err != nil {
			w.Close()
		}
	}
	if err != nil {
		d.noWatch = true
		d.log.Warn("policy: cannot watch the directory: listing it in full on every refresh", "dir", string(d.dir), "error", err.Error())
		return nil, true
	}
	e = &dirEvents{w: w, log: d.log, dir: filepath.Clean(string(d.dir)), dirty: map[string]struct{}{}}
	go e.run()
	d.slot.ev = e
	return e, true
}

func (e *dirEvents) isDead() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dead
}

// Unchanged reports, without a system call, that nothing was reported
// since the last listing and none is due in full: the listing would be
// the same. FragmentLoader asks it before listing.
func (d *WatchedDir) Unchanged() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.listed || d.outside || d.now().Sub(d.lastFull) >= d.fullEvery {
		return false
	}
	d.slot.mu.Lock()
	e := d.slot.ev
	d.slot.mu.Unlock()
	return e != nil && e.quiet()
}

// List returns every fragment: a full listing when one is due, else the
// last listing with the reported entries stated again.
func (d *WatchedDir) List(context.Context) ([]Object, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	e, fresh := d.watch() // before listing, so no change after the listing is missed
	var dirty map[string]struct{}
	full := fresh || !d.listed || d.outside || now.Sub(d.lastFull) >= d.fullEvery
	if e != nil {
		var f, dead bool
		dirty, f, dead = e.take()
		full = full || f || dead
	}
	if !full {
		if _, _, err := d.patch(dirty); err != nil {
			d.listed = false
			return nil, err
		}
		out := make([]Object, 0, len(d.objs))
		for _, o := range d.objs {
			out = append(out, o)
		}
		return out, nil
	}
	d.listed = false
	objs, outside, err := listDirLinks(string(d.dir), &d.stats)
	if err != nil {
		return nil, err
	}
	if outside && !d.outside {
		d.log.Info("policy: a fragment is a link outside the directory's dot entries: listing in full on every refresh", "dir", string(d.dir))
	}
	d.outside = outside
	clear(d.objs)
	if d.objs == nil {
		d.objs = make(map[string]Object, len(objs))
	}
	for _, o := range objs {
		d.objs[filepath.Base(o.Name)] = o
	}
	d.listed, d.lastFull = true, now
	return objs, nil
}

// Delta returns what changed since the last listing, the last listing
// patched as List would: the reported entries that are new or changed, and
// the names of those gone. ok is false, and nothing is taken, when a full
// listing is due (List makes it).
func (d *WatchedDir) Delta(context.Context) (changed []Object, gone []string, ok bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.listed || d.outside || d.now().Sub(d.lastFull) >= d.fullEvery {
		return nil, nil, false, nil
	}
	d.slot.mu.Lock()
	e := d.slot.ev
	d.slot.mu.Unlock()
	if e == nil {
		return nil, nil, false, nil
	}
	dirty, full, dead := e.take()
	if full || dead {
		d.listed = false // what take cleared is for List's full listing
		return nil, nil, false, nil
	}
	changed, gone, err = d.patch(dirty)
	if err != nil {
		d.listed = false
		return nil, nil, false, err
	}
	return changed, gone, true, nil
}

// patch states again each reported entry: changed, added or gone. It
// returns the entries now there and the paths of those gone.
func (d *WatchedDir) patch(dirty map[string]struct{}) (changed []Object, gone []string, err error) {
	prefix := filepath.Clean(string(d.dir)) + string(filepath.Separator)
	var st unix.Stat_t
	for name := range dirty {
		path := prefix + name
		d.stats.Add(1)
		err := unix.Lstat(path, &st)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			target, lerr := readlinkAt(unix.AT_FDCWD, path)
			if lerr == nil && !insideDotEntry(target) {
				d.outside = true // from the next refresh on, full listings
			}
			d.stats.Add(1)
			err = unix.Stat(path, &st)
		}
		switch {
		case errors.Is(err, unix.ENOENT) || (err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG):
			delete(d.objs, name)
			gone = append(gone, path)
		case err != nil:
			return nil, nil, fmt.Errorf("policy: cannot stat fragment %s: %s", path, err)
		default:
			o := Object{Name: path, Size: st.Size, Version: Version{Size: st.Size, ModTime: st.Mtim.Nano()}}
			d.objs[name] = o
			changed = append(changed, o)
		}
	}
	return changed, gone, nil
}

// insideDotEntry reports whether a link target goes through a dot entry of
// the directory itself (..data/a.json, as a ConfigMap mount does): events
// on the directory see that entry swapped.
func insideDotEntry(target string) bool {
	first, _, found := strings.Cut(target, "/")
	return found && strings.HasPrefix(first, ".") && first != "." && first != ".."
}
