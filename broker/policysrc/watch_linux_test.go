package policysrc

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// readCounting counts reads of a WatchedDir (its Unchanged stays visible
// to the loader).
type readCounting struct {
	*WatchedDir
	reads atomic.Int64
}

func (c *readCounting) Read(ctx context.Context, o Object) ([]byte, error) {
	c.reads.Add(1)
	return c.WatchedDir.Read(ctx, o)
}

func (c *readCounting) ReadEach(ctx context.Context, objs []Object, each func(int, []byte, error)) {
	c.reads.Add(int64(len(objs)))
	c.WatchedDir.ReadEach(ctx, objs, each)
}

// clock is an injected clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// waitSeen waits until the watcher has received n events or errors in
// all: inotify's events reach the watcher's goroutine asynchronously.
func waitSeen(t *testing.T, d *WatchedDir, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d.slot.mu.Lock()
		e := d.slot.ev
		d.slot.mu.Unlock()
		if e != nil && e.seen.Load() >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watcher did not report %d events", n)
		}
		time.Sleep(time.Millisecond)
	}
}

func current(d *WatchedDir) *dirEvents {
	d.slot.mu.Lock()
	defer d.slot.mu.Unlock()
	return d.slot.ev
}

// writeAt rewrites a file in place with one write (one IN_MODIFY); content
// must be at least as long as what is there.
func writeAt(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte(content), 0); err != nil {
		t.Fatal(err)
	}
}

// TestWatchedDirStatsOnlyReported: between full listings a reload states
// only the entries inotify reported; an unchanged one states nothing.
func TestWatchedDirStatsOnlyReported(t *testing.T) {
	ctx := context.Background()
	dir := writeDir(t, map[string]string{"base.json": baseFrag, "a.json": accountFrag("s", "t"),
		"site1.json": agentFrag(t, "site1", "s"), "README.md": "x"})
	var logs bytes.Buffer
	clk := &clock{t: time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)}
	wd := NewWatchedDir(dir, slog.New(slog.NewJSONHandler(&logs, nil)))
	wd.now = clk.now
	t.Cleanup(func() { wd.Close() })
	src := &readCounting{WatchedDir: wd}
	l := NewFragmentLoader(src)
	if p, err := l.Load(ctx); err != nil || p == nil {
		t.Fatalf("first load: %v", err)
	}
	if got := wd.stats.Load(); got != 3 {
		t.Fatalf("first load: %d stats, want 3 (one per *.json)", got)
	}
	path := func(n string) string { return filepath.Join(dir, n) }
	var seen int64 // events the watcher received so far
	steps := []struct {
		name   string
		change func()
		events int64 // events to wait for; -1: the watcher is replaced
		stats  int64
		reads  int64
		agents int // -1: unchanged (no new policy)
	}{
		{"unchanged", func() {}, 0, 0, 0, -1},
		{"written in place", func() { writeAt(t, path("site1.json"), agentFrag(t, "site1", "s", "t")) }, 1, 1, 1, 1},
		{"unchanged after a write", func() {}, 0, 0, 0, -1},
		{"atomic rename", func() {
			if err := os.WriteFile(path("site2.json.tmp"), []byte(agentFrag(t, "site2", "t")), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path("site2.json.tmp"), path("site2.json")); err != nil {
				t.Fatal(err)
			}
		}, 4, 1, 1, 2}, // create, write, moved from (ignored: not *.json), moved to
		{"non-*.json written, then a chmod", func() {
			if err := os.WriteFile(path("notes.txt"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path("a.json"), 0o640); err != nil {
				t.Fatal(err)
			}
		}, 3, 1, 0, -1}, // notes.txt costs nothing; a.json is stated, same version
		{"deleted", func() { os.Remove(path("site1.json")) }, 1, 1, 0, 1},
		{"new file", func() {
			if err := os.WriteFile(path("site3.json"), []byte(agentFrag(t, "site3", "s")), 0o600); err != nil {
				t.Fatal(err)
			}
		}, 2, 1, 1, 2},
		{"queue overflow: listed in full", func() { current(wd).w.Errors <- fsnotify.ErrEventOverflow }, 1, 4, 0, -1},
		{"unchanged after the overflow", func() {}, 0, 0, 0, -1},
		{"watcher closed: a new one, listed in full", func() {
			current(wd).w.Close()
			for !current(wd).isDead() {
				time.Sleep(time.Millisecond)
			}
		}, -1, 4, 0, -1},
		{"the new watcher sees a write", func() { writeAt(t, path("site3.json"), agentFrag(t, "site3", "s", "t")) }, 1, 1, 1, 2},
		{"9 minutes on: still nothing stated", func() { clk.t = clk.t.Add(9 * time.Minute) }, 0, 0, 0, -1},
		{"10 minutes on: the safety net lists in full", func() { clk.t = clk.t.Add(time.Minute) }, 0, 4, 0, -1},
		{"unchanged after the safety net", func() {}, 0, 0, 0, -1},
	}
	for _, s := range steps {
		wd.stats.Store(0)
		src.reads.Store(0)
		s.change()
		switch {
		case s.events < 0:
			seen = 0 // the next watcher is made by the load
		case s.events > 0:
			seen += s.events
			waitSeen(t, wd, seen)
		}
		p, err := l.Load(ctx)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := wd.stats.Load(); got != s.stats {
			t.Errorf("%s: %d stats, want %d", s.name, got, s.stats)
		}
		if got := src.reads.Load(); got != s.reads {
			t.Errorf("%s: %d reads, want %d", s.name, got, s.reads)
		}
		switch {
		case s.agents < 0 && p != nil:
			t.Errorf("%s: a new policy was built", s.name)
		case s.agents >= 0 && (p == nil || p.NumAgents() != s.agents):
			t.Errorf("%s: policy %v, want %d agents", s.name, p, s.agents)
		}
	}
	if !strings.Contains(logs.String(), "overflow") {
		t.Errorf("the overflow was not logged:\n%s", logs.String())
	}
}

// TestWatchedDirConfigMapSwap: a ConfigMap mount's fragments are links
// through ..data; the kubelet swaps ..data by rename, which no event on a
// fragment's own name shows, so an event on a dot entry lists in full.
func TestWatchedDirConfigMapSwap(t *testing.T) {
	ctx := context.Background()
	dir := writeDir(t, map[string]string{"..v1/base.json": baseFrag, "..v1/a.json": accountFrag("s"),
		"..v2/base.json": baseFrag, "..v2/a.json": accountFrag("s", "t")})
	for _, l := range [][2]string{{"..v1", "..data"}, {"..data/base.json", "base.json"}, {"..data/a.json", "a.json"}} {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	wd := NewWatchedDir(dir, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { wd.Close() })
	l := NewFragmentLoader(wd)
	if p, err := l.Load(ctx); err != nil || p.NumAccounts() != 1 {
		t.Fatalf("load: %v %v", p, err)
	}
	wd.stats.Store(0)
	if p, err := l.Load(ctx); err != nil || p != nil || wd.stats.Load() != 0 {
		t.Fatalf("unchanged: %v %v, %d stats", p, err, wd.stats.Load())
	}
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	waitSeen(t, wd, 3) // created, moved from, moved to
	p, err := l.Load(ctx)
	if err != nil || p == nil || p.NumAccounts() != 2 {
		t.Fatalf("after the swap: %v %v", p, err)
	}
	if got := wd.stats.Load(); got != 2 {
		t.Errorf("after the swap: %d stats, want a full listing (2)", got)
	}
}

// TestWatchedDirOutsideLink: a fragment that links to a file elsewhere
// changes without an event on the directory, so such a directory is
// listed in full on every refresh.
func TestWatchedDirOutsideLink(t *testing.T) {
	ctx := context.Background()
	elsewhere := writeDir(t, map[string]string{"a.json": accountFrag("s")})
	dir := writeDir(t, map[string]string{"base.json": baseFrag})
	if err := os.Symlink(filepath.Join(elsewhere, "a.json"), filepath.Join(dir, "a.json")); err != nil {
		t.Fatal(err)
	}
	wd := NewWatchedDir(dir, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { wd.Close() })
	l := NewFragmentLoader(wd)
	if p, err := l.Load(ctx); err != nil || p.NumAccounts() != 1 {
		t.Fatalf("load: %v %v", p, err)
	}
	if err := os.WriteFile(filepath.Join(elsewhere, "a.json"), []byte(accountFrag("s", "t")), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := l.Load(ctx)
	if err != nil || p == nil || p.NumAccounts() != 2 {
		t.Fatalf("after the target changed: %v %v", p, err)
	}
}

// TestWatchedDirNoWatcher: when no watcher can be had (too many inotify
// instances or watches), it is logged once and every refresh lists.
func TestWatchedDirNoWatcher(t *testing.T) {
	ctx := context.Background()
	orig := newWatcher
	newWatcher = func() (*fsnotify.Watcher, error) { return nil, syscall.EMFILE }
	t.Cleanup(func() { newWatcher = orig })
	dir := writeDir(t, map[string]string{"base.json": baseFrag, "a.json": accountFrag("s")})
	var logs bytes.Buffer
	wd := NewWatchedDir(dir, slog.New(slog.NewJSONHandler(&logs, nil)))
	l := NewFragmentLoader(wd)
	for i := range 3 {
		wd.stats.Store(0)
		if _, err := l.Load(ctx); err != nil {
			t.Fatal(err)
		}
		if got := wd.stats.Load(); got != 2 {
			t.Errorf("load %d: %d stats, want a full listing (2)", i, got)
		}
	}
	if got := strings.Count(logs.String(), "cannot watch"); got != 1 {
		t.Errorf("logged %d times, want once:\n%s", got, logs.String())
	}
	if err := os.WriteFile(filepath.Join(dir, "a.json"), []byte(accountFrag("s", "t")), 0o600); err != nil {
		t.Fatal(err)
	}
	if p, err := l.Load(ctx); err != nil || p == nil || p.NumAccounts() != 2 {
		t.Fatalf("a change without a watcher: %v %v", p, err)
	}
}

// TestWatchedDirListError: a directory that is gone is reported as such.
func TestWatchedDirListError(t *testing.T) {
	dir := writeDir(t, map[string]string{"base.json": baseFrag})
	wd := NewWatchedDir(filepath.Join(dir, "missing"), slog.New(slog.DiscardHandler))
	_, err := NewFragmentLoader(wd).Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cannot list directory") {
		t.Fatalf("missing directory: %v", err)
	}
}

// listCounting counts full listings of a WatchedDir.
type listCounting struct {
	*WatchedDir
	lists atomic.Int64
}

func (c *listCounting) List(ctx context.Context) ([]Object, error) {
	c.lists.Add(1)
	return c.WatchedDir.List(ctx)
}

// TestLoaderUsesDelta: after a good load a change is merged from what the
// watcher reported, with no listing; after a refused one the loader lists
// and merges everything, then goes back to deltas.
func TestLoaderUsesDelta(t *testing.T) {
	ctx := context.Background()
	dir := writeDir(t, map[string]string{"base.json": baseFrag, "a.json": accountFrag("s", "t"),
		"site1.json": agentFrag(t, "site1", "s")})
	wd := NewWatchedDir(dir, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { wd.Close() })
	src := &listCounting{WatchedDir: wd}
	l := NewFragmentLoader(src)
	if _, err := l.Load(ctx); err != nil {
		t.Fatal(err)
	}
	path := func(n string) string { return filepath.Join(dir, n) }
	var seen int64
	steps := []struct {
		name   string
		change func()
		events int64
		lists  int64
		err    string // "" = a new policy with agents agents
		agents int
	}{
		{"agent changed", func() { writeAt(t, path("site1.json"), agentFrag(t, "site1", "s", "t")) }, 1, 0, "", 1},
		{"agent added", func() { os.WriteFile(path("site2.json"), []byte(agentFrag(t, "site2", "t")), 0o600) }, 2, 0, "", 2},
		{"account gone that an agent uses", func() { writeAt(t, path("a.json"), accountFrag("s", "u")+"   ") }, 1, 0, `unknown account "t"`, 0},
		{"unchanged: still refused, nothing listed", func() {}, 0, 0, `unknown account "t"`, 0},
		{"fixed: listed and merged in full", func() { writeAt(t, path("a.json"), accountFrag("s", "t")+"   ") }, 1, 1, "", 2},
		{"agent gone: a delta again", func() { os.Remove(path("site2.json")) }, 1, 0, "", 1},
	}
	for _, s := range steps {
		src.lists.Store(0)
		s.change()
		seen += s.events
		if s.events > 0 {
			waitSeen(t, wd, seen)
		}
		p, err := l.Load(ctx)
		switch {
		case s.err != "" && (err == nil || !strings.Contains(err.Error(), s.err)):
			t.Fatalf("%s: err = %v, want %q", s.name, err, s.err)
		case s.err == "" && err != nil:
			t.Fatalf("%s: %v", s.name, err)
		case s.err == "" && (p == nil || p.NumAgents() != s.agents):
			t.Fatalf("%s: policy %v, want %d agents", s.name, p, s.agents)
		}
		if got := src.lists.Load(); got != s.lists {
			t.Errorf("%s: %d listings, want %d", s.name, got, s.lists)
		}
	}
}
