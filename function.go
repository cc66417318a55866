// Package function is the Cloud Functions (gen2) entry point: it registers
// the HTTP function "Broker", which serves the broker API (broker.Broker,
// the handler cmd/broker serves on Cloud Run and laptops).
//
// On Cloud Functions there is no start-up hook that may fail, so the first
// request builds the broker. A failed build (Secret Manager briefly down, a
// bad policy) is retried on later requests with exponential backoff, in a
// context of its own: neither a client that hangs up nor one transient
// error leaves the instance answering 503 until it is recycled.
package function

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	"github.com/cenkalti/backoff/v5"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/cloudlog"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

func init() {
	functions.HTTP("Broker", defaultLoader.ServeHTTP)
}

// loadTimeout bounds one attempt to build the broker.
const loadTimeout = 2 * time.Minute

var defaultLoader = newLoader(buildFromEnv, time.Now, cloudlog.New(os.Stdout, slog.LevelInfo))

func buildFromEnv(ctx context.Context, log *slog.Logger) (http.Handler, error) {
	cfg, err := broker.ConfigFromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	cfg.Log = log
	return broker.New(ctx, cfg)
}

// Prepare builds the broker now if it is not built yet, waiting at most
// until ctx ends (the build itself goes on). It returns the last build
// error, if the broker is not built.
func Prepare(ctx context.Context) error {
	_, err := defaultLoader.get(ctx)
	return err
}

// loader builds the handler once, retrying failures with backoff.
type loader struct {
	build func(context.Context, *slog.Logger) (http.Handler, error)
	now   func() time.Time
	log   *slog.Logger

	ready atomic.Pointer[http.Handler] // set once built: the lock-free fast path

	mu       sync.Mutex
	inflight chan struct{} // closed when the running attempt ends; nil if none
	err      error         // of the last failed attempt
	next     time.Time     // no new attempt before this, after a failure
	bo       *backoff.ExponentialBackOff
}

func newLoader(build func(context.Context, *slog.Logger) (http.Handler, error), now func() time.Time, log *slog.Logger) *loader {
	return &loader{build: build, now: now, log: log, bo: &backoff.ExponentialBackOff{
		InitialInterval:     time.Second,
		RandomizationFactor: 0.2,
		Multiplier:          2,
		MaxInterval:         time.Minute,
	}}
}

// get returns the built handler, starting an attempt when none is running
// and the backoff allows one, and waiting for it while ctx lasts.
func (l *loader) get(ctx context.Context) (http.Handler, error) {
	if h := l.ready.Load(); h != nil {
		return *h, nil
	}
	l.mu.Lock()
	if h := l.ready.Load(); h != nil {
		l.mu.Unlock()
		return *h, nil
	}
	if l.inflight == nil {
		if l.err != nil && l.now().Before(l.next) {
			err := l.err
			l.mu.Unlock()
			return nil, err
		}
		l.inflight = make(chan struct{})
		go l.attempt(l.inflight)
	}
	done := l.inflight
	l.mu.Unlock()

	select {
	case <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if h := l.ready.Load(); h != nil {
		return *h, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return nil, l.err
}

func (l *loader) attempt(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	h, err := l.build(ctx, l.log)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.ready.Store(&h)
		l.err = nil
	} else {
		l.err = err
		wait := l.bo.NextBackOff()
		l.next = l.now().Add(wait)
		l.log.Log(ctx, slog.LevelError+4, "broker cannot start; retrying on a later request",
			"error", err.Error(), "retry_after", wait.Round(time.Millisecond).String())
	}
	l.inflight = nil
	close(done)
}

// ServeHTTP serves the broker, or 503 while it cannot be built.
func (l *loader) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, err := l.get(r.Context())
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(wire.Status(wire.CodeUnavailable))
		_ = json.NewEncoder(w).Encode(wire.ErrorResponse{Error: wire.ErrorBody{
			Code: wire.CodeUnavailable, Message: "broker configuration failed to load; see logs"}})
		return
	}
	h.ServeHTTP(w, r)
}
