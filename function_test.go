package function

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/clocktest"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/logcapture"
)

// fakeBuild fails while fail is set; each call can be held on gate.
type fakeBuild struct {
	calls atomic.Int32
	fail  atomic.Bool
	gate  chan struct{} // nil: no hold
	ctxs  chan context.Context
}

func (f *fakeBuild) build(ctx context.Context, _ *slog.Logger) (http.Handler, error) {
	f.calls.Add(1)
	if f.ctxs != nil {
		f.ctxs <- ctx
	}
	if f.gate != nil {
		<-f.gate
	}
	if f.fail.Load() {
		return nil, errors.New("secret manager: unavailable")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }), nil
}

func serveOnce(l *loader, ctx context.Context) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	l.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil).WithContext(ctx))
	return rec
}

func TestLoaderRetriesAfterBackoff(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	var logs logcapture.Buffer
	f := &fakeBuild{}
	f.fail.Store(true)
	l := newLoader(f.build, clk.Now, slog.New(slog.NewJSONHandler(&logs, nil)))

	steps := []struct {
		name      string
		advance   time.Duration
		healthy   bool // the build works from this step on
		wantCode  int
		wantCalls int32
	}{
		{"first request: build fails", 0, false, http.StatusServiceUnavailable, 1},
		{"within the backoff: no new attempt", 100 * time.Millisecond, false, http.StatusServiceUnavailable, 1},
		{"after the backoff: tries again, fails", 2 * time.Second, false, http.StatusServiceUnavailable, 2},
		{"the second backoff is longer", 1500 * time.Millisecond, true, http.StatusServiceUnavailable, 2},
		{"after it: built", 3 * time.Second, true, http.StatusTeapot, 3},
		{"built stays built", time.Hour, false, http.StatusTeapot, 3},
	}
	for _, s := range steps {
		clk.Advance(s.advance)
		f.fail.Store(!s.healthy)
		rec := serveOnce(l, context.Background())
		if rec.Code != s.wantCode || f.calls.Load() != s.wantCalls {
			t.Fatalf("%s: status %d, builds %d; want %d, %d", s.name, rec.Code, f.calls.Load(), s.wantCode, s.wantCalls)
		}
		if rec.Code == http.StatusServiceUnavailable {
			var body wire.ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Code != wire.CodeUnavailable {
				t.Fatalf("%s: body %q", s.name, rec.Body.String())
			}
		}
	}
	if n := strings.Count(logs.String(), "broker cannot start"); n != 2 {
		t.Errorf("%d CRITICAL lines for 2 failed builds", n)
	}
}

// A client that hangs up does not cancel the build, and its failure to
// wait is not the instance's failure.
func TestLoaderBuildOutlivesTheRequest(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	f := &fakeBuild{gate: make(chan struct{}), ctxs: make(chan context.Context, 4)}
	l := newLoader(f.build, clk.Now, slog.New(slog.DiscardHandler))

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	var first *httptest.ResponseRecorder
	go func() { defer wg.Done(); first = serveOnce(l, ctx) }()
	buildCtx := <-f.ctxs
	cancel() // the client hangs up mid-build
	wg.Wait()
	if first.Code != http.StatusServiceUnavailable {
		t.Fatalf("hung-up request got %d", first.Code)
	}
	if buildCtx.Err() != nil {
		t.Fatal("the build's context ended with the request's")
	}
	if _, ok := buildCtx.Deadline(); !ok {
		t.Fatal("the build has no deadline of its own")
	}
	close(f.gate) // the build finishes and succeeds
	if rec := serveOnce(l, context.Background()); rec.Code != http.StatusTeapot {
		t.Fatalf("after the build: %d", rec.Code)
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d builds; the hung-up request must not cost a retry", n)
	}
}

// Concurrent first requests share one build.
func TestLoaderOneBuildAtATime(t *testing.T) {
	f := &fakeBuild{gate: make(chan struct{})}
	l := newLoader(f.build, time.Now, slog.New(slog.DiscardHandler))
	var wg sync.WaitGroup
	codes := make([]int, 20)
	for i := range codes {
		wg.Add(1)
		go func() { defer wg.Done(); codes[i] = serveOnce(l, context.Background()).Code }()
	}
	time.Sleep(50 * time.Millisecond) // let them all queue on the build
	close(f.gate)
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusTeapot {
			t.Fatalf("request %d: %d", i, c)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d builds for concurrent first requests, want 1", n)
	}
}
