package cloudlog

import (
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/jsonenc"
)

// chunkSize bounds one write(2) of a batch: PIPE_BUF, the size up to which
// a write to a pipe (Cloud Run's stdout) is atomic, so a line never
// interleaves with another writer's bytes. A batch is cut on line ends.
const chunkSize = 4096

// maxSpare is the largest batch buffer kept for reuse.
const maxSpare = 64 << 10

// Sink is a group-commit writer. Write returns only once the bytes it was
// given have been written to the underlying writer, with that write's
// error; writes that arrive while another is in progress are gathered and
// go out together in one write when it returns. Under load that turns one
// write(2) per line into one per batch, without a background flusher that
// could lose lines when the process dies.
//
// Each Write should hold whole lines: a batch is split only after a '\n'.
type Sink struct {
	w       io.Writer
	mu      sync.Mutex
	writing bool   // a batch is being written (by its leader, without mu)
	pending *batch // the batch new lines join; nil when none is waiting
	spare   []byte
}

// batch is lines that go out in one write. Its callers sleep on wake: when
// a write finishes, its leader wakes all of that batch's callers (done) and
// one caller of the next batch, which then writes that one.
type batch struct {
	buf  []byte
	done bool
	err  error
	wake sync.Cond
}

// NewSink returns a Sink writing to w. w needs no locking of its own: the
// Sink calls it from one goroutine at a time.
func NewSink(w io.Writer) *Sink { return &Sink{w: w} }

// Write writes p, together with whatever other callers are writing at the
// same time, and returns when that write has returned. n is len(p) when
// err is nil, else 0.
func (s *Sink) Write(p []byte) (n int, err error) {
	if err := s.Commit(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Commit writes p like Write and returns the error of the write(s) that
// carried it.
func (s *Sink) Commit(p []byte) error {
	s.mu.Lock()
	b := s.pending
	if b == nil {
		b = &batch{buf: s.spare[:0]}
		s.spare = nil
		b.wake.L = &s.mu
		s.pending = b
	}
	b.buf = append(b.buf, p...)
	for !b.done {
		if s.writing {
			// The writer is busy (with an earlier batch, or with b
			// by another of its callers): wait to be woken.
			b.wake.Wait()
			continue
		}
		// Lead: b is the pending batch (an unfinished batch is either
		// pending or being written, and nothing is being written).
		s.writing = true
		s.pending = nil
		s.mu.Unlock()
		s.lead(b)
	}
	err := b.err
	s.mu.Unlock()
	return err
}

// lead writes batch b, then (with s.mu held on return) hands the writer
// on. If the writer panics, b's other callers get an error, the Sink stays
// usable, and the panic goes on up the leader's stack (without s.mu).
func (s *Sink) lead(b *batch) {
	err := errWriterPanicked
	defer func() {
		p := recover()
		s.mu.Lock()
		b.done, b.err = true, err
		s.writing = false
		if cap(b.buf) <= maxSpare {
			s.spare = b.buf[:0]
		}
		b.buf = nil
		b.wake.Broadcast()
		if s.pending != nil {
			s.pending.wake.Signal()
		}
		if p != nil {
			s.mu.Unlock()
			panic(p)
		}
	}()
	err = writeChunks(s.w, b.buf)
}

var errWriterPanicked = errors.New("cloudlog: the log writer panicked")

// writeChunks writes buf in writes of at most chunkSize bytes, each ending
// after a '\n' (a single longer line goes alone).
func writeChunks(w io.Writer, buf []byte) error {
	for len(buf) > 0 {
		n := len(buf)
		if n > chunkSize {
			if i := bytes.LastIndexByte(buf[:chunkSize], '\n'); i >= 0 {
				n = i + 1
			} else if i := bytes.IndexByte(buf[chunkSize:], '\n'); i >= 0 {
				n = chunkSize + i + 1
			}
		}
		m, err := w.Write(buf[:n])
		if err == nil && m < n {
			err = io.ErrShortWrite
		}
		if err != nil {
			return err
		}
		buf = buf[n:]
	}
	return nil
}

// AppendString appends s as a JSON string exactly as slog's JSON handler
// writes it: quotes, backslashes and control characters escaped (\n, \r,
// \t, else \u00XX), invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func AppendString(b []byte, s string) []byte {
	return jsonenc.AppendString(b, s, jsonenc.Slog)
}
