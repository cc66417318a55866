package fakegcp

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// httpServer is the listener plumbing shared by the HTTP fakes: listen on a
// loopback address, serve until close.
type httpServer struct {
	mu  sync.Mutex
	srv *http.Server
	ln  net.Listener
}

func (h *httpServer) start(addr string, handler http.Handler) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv != nil {
		return errors.New("fakegcp: server already started")
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	h.ln = ln
	h.srv = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go h.srv.Serve(ln) //nolint:errcheck // Serve returns ErrServerClosed on Close.
	return nil
}

// host is "127.0.0.1:PORT", or "" before start.
func (h *httpServer) host() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ln == nil {
		return ""
	}
	return h.ln.Addr().String()
}

func (h *httpServer) url() string {
	if hp := h.host(); hp != "" {
		return "http://" + hp
	}
	return ""
}

func (h *httpServer) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srv == nil {
		return nil
	}
	err := h.srv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// writeJSON answers v as JSON with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// googleAPIError is the JSON error body of Google's REST APIs.
type googleAPIError struct {
	Error googleAPIErrorBody `json:"error"`
}

type googleAPIErrorBody struct {
	Code    int              `json:"code"`
	Message string           `json:"message"`
	Status  string           `json:"status"`
	Details []map[string]any `json:"details,omitempty"`
}

// statusWord maps an HTTP status to the google.rpc.Code name Google puts in "status".
func statusWord(code int) string {
	switch code {
	case http.StatusBadRequest:
		return "INVALID_ARGUMENT"
	case http.StatusUnauthorized:
		return "UNAUTHENTICATED"
	case http.StatusForbidden:
		return "PERMISSION_DENIED"
	case http.StatusNotFound:
		return "NOT_FOUND"
	case http.StatusConflict:
		return "ALREADY_EXISTS"
	case http.StatusTooManyRequests:
		return "RESOURCE_EXHAUSTED"
	case http.StatusNotImplemented:
		return "UNIMPLEMENTED"
	case http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	case http.StatusGatewayTimeout:
		return "DEADLINE_EXCEEDED"
	}
	if code >= 500 {
		return "INTERNAL"
	}
	return "UNKNOWN"
}

// writeGoogleError answers a Google REST style error.
func writeGoogleError(w http.ResponseWriter, code int, msg string, details ...map[string]any) {
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/"`)
	}
	writeJSON(w, code, googleAPIError{Error: googleAPIErrorBody{
		Code: code, Message: msg, Status: statusWord(code), Details: details,
	}})
}

// randomToken returns n random bytes, URL-safe base64 encoded.
func randomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("fakegcp: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// bearerToken extracts the token of an "Authorization: Bearer T" header.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const p = "bearer "
	if len(h) <= len(p) || !equalFoldASCII(h[:len(p)], p) {
		return "", false
	}
	return h[len(p):], true
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// discardLogger is the default: fakes are quiet unless given a logger.
func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// failer injects the next n failures (n < 0: until reset).
type failer struct {
	n      int
	status int
}

// take reports whether this request must fail, and with which status.
func (f *failer) take() (int, bool) {
	if f.n == 0 {
		return 0, false
	}
	if f.n > 0 {
		f.n--
	}
	st := f.status
	if st == 0 {
		st = http.StatusServiceUnavailable
	}
	return st, true
}

// slower delays the next n answers by d (n < 0: until reset).
type slower struct {
	n int
	d time.Duration
}

// take reports whether this answer must be delayed, and by how much.
func (w *slower) take() (time.Duration, bool) {
	if w.n == 0 || w.d <= 0 {
		return 0, false
	}
	if w.n > 0 {
		w.n--
	}
	return w.d, true
}
