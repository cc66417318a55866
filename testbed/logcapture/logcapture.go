// Package logcapture collects what a logger or a child process writes, for
// tests that assert on log lines (above all: that no token or key is in them).
package logcapture

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer safe for concurrent writers and readers. Its zero
// value is ready to use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
