package cloudlog

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder records each write it gets; it fails while fail is set and can
// be slowed down, so that writes pile up behind it.
type recorder struct {
	mu     sync.Mutex
	writes [][]byte
	fail   atomic.Bool
	delay  time.Duration
	busy   atomic.Int32
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.busy.Add(1) != 1 {
		panic("concurrent Write on the underlying writer")
	}
	defer r.busy.Add(-1)
	time.Sleep(r.delay)
	if r.fail.Load() {
		return 0, errors.New("disk full")
	}
	r.mu.Lock()
	r.writes = append(r.writes, bytes.Clone(p))
	r.mu.Unlock()
	return len(p), nil
}

func (r *recorder) all() (string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(bytes.Join(r.writes, nil)), len(r.writes)
}

func TestSinkWritesEveryLineWholeBeforeReturning(t *testing.T) {
	rec := &recorder{delay: time.Millisecond}
	s := NewSink(rec)
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			line := fmt.Sprintf("line %d %s\n", i, strings.Repeat("x", i))
			if err := s.Commit([]byte(line)); err != nil {
				t.Error(err)
				return
			}
			// Commit returned: the line is in a finished write.
			if all, _ := rec.all(); !strings.Contains(all, line) {
				t.Errorf("Commit returned before %q was written", line)
			}
		}()
	}
	wg.Wait()
	all, writes := rec.all()
	for i := range n {
		if !strings.Contains(all, fmt.Sprintf("line %d %s\n", i, strings.Repeat("x", i))) {
			t.Fatalf("line %d missing or torn", i)
		}
	}
	if strings.Count(all, "\n") != n {
		t.Fatalf("%d lines written, want %d", strings.Count(all, "\n"), n)
	}
	// 200 lines behind a 1 ms writer: they must have been batched.
	if writes >= n/2 {
		t.Errorf("%d writes for %d lines: no write-combining", writes, n)
	}
	t.Logf("%d lines in %d writes", n, writes)
}

func TestSinkChunksOnLineEnds(t *testing.T) {
	rec := &recorder{delay: 5 * time.Millisecond}
	s := NewSink(rec)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Commit([]byte(fmt.Sprintf("%03d %s\n", i, strings.Repeat("y", 300)))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	long := strings.Repeat("z", 3*chunkSize) + "\n"
	if err := s.Commit([]byte(long)); err != nil {
		t.Fatal(err)
	}
	for _, w := range rec.writes {
		if w[len(w)-1] != '\n' {
			t.Fatalf("write does not end a line: %q", w[len(w)-10:])
		}
		if len(w) > chunkSize && bytes.Count(w, []byte("\n")) > 1 {
			t.Fatalf("write of %d bytes holds several lines", len(w))
		}
	}
	if all, _ := rec.all(); strings.Count(all, "\n") != 101 {
		t.Fatalf("%d lines", strings.Count(all, "\n"))
	}
}

func TestSinkReportsWriteErrors(t *testing.T) {
	rec := &recorder{delay: time.Millisecond}
	s := NewSink(rec)
	rec.fail.Store(true)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Commit([]byte("x\n")); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 20 {
		t.Fatalf("%d of 20 commits reported the failed write", failed.Load())
	}
	if n, err := s.Write([]byte("y\n")); err == nil || n != 0 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	rec.fail.Store(false)
	if n, err := s.Write([]byte("z\n")); err != nil || n != 2 {
		t.Fatalf("after recovery: %d, %v", n, err)
	}
	if all, _ := rec.all(); all != "z\n" {
		t.Fatalf("written %q", all)
	}
}

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) - 1, nil }

func TestSinkShortWrite(t *testing.T) {
	if err := NewSink(shortWriter{}).Commit([]byte("abc\n")); err == nil {
		t.Fatal("short write not reported")
	}
}

type panicky struct{ armed atomic.Bool }

func (p *panicky) Write(b []byte) (int, error) {
	if p.armed.Load() {
		panic("writer bug")
	}
	return len(b), nil
}

func TestSinkSurvivesWriterPanic(t *testing.T) {
	w := &panicky{}
	w.armed.Store(true)
	s := NewSink(w)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("panic swallowed")
			}
		}()
		s.Commit([]byte("a\n"))
	}()
	w.armed.Store(false)
	done := make(chan error)
	go func() { done <- s.Commit([]byte("b\n")) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Sink stuck after a writer panic")
	}
}
