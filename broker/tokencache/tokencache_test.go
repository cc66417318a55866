package tokencache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/clocktest"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// minter issues tokens living `lifetime` from the clock's now; it can fail
// and can block until released, to widen the window for races.
type minter struct {
	clk      *clocktest.Clock
	lifetime time.Duration
	calls    atomic.Int64
	fail     atomic.Bool
	gate     chan struct{}
}

// source mints for the account called name; tokens carry the name and the
// mint's sequence number so tests can tell them apart.
func (m *minter) source(name string) Source {
	return SourceFunc(func(context.Context) (*oauth2.Token, error) {
		n := m.calls.Add(1)
		if m.gate != nil {
			<-m.gate
		}
		if m.fail.Load() {
			return nil, errors.New("google is down")
		}
		return &oauth2.Token{AccessToken: fmt.Sprintf("tok-%s-%d", name, n), Expiry: m.clk.Now().Add(m.lifetime)}, nil
	})
}

func (c *Cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func TestConcurrentRequestsMintOnce(t *testing.T) {
	clk := clocktest.New(epoch)
	m := &minter{clk: clk, lifetime: time.Hour, gate: make(chan struct{})}
	c := New(15*time.Minute, clk.Now)
	src := m.source("a")

	var started, done sync.WaitGroup
	tokens := make([]string, 1000)
	for i := range tokens {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			started.Done()
			r, err := c.Token(context.Background(), "a", src)
			if err != nil {
				t.Error(err)
				return
			}
			tokens[i] = r.Token.AccessToken
		}()
	}
	// The mint stays blocked until every request is under way, so they
	// overlap it; any that arrive after it finished still get its token.
	started.Wait()
	close(m.gate)
	done.Wait()
	if got := m.calls.Load(); got != 1 {
		t.Fatalf("mints = %d, want 1", got)
	}
	for i, tok := range tokens {
		if tok != "tok-a-1" {
			t.Fatalf("request %d got %q", i, tok)
		}
	}
}

func TestRefreshAfterMinRemaining(t *testing.T) {
	tests := []struct {
		name         string
		lifetime     time.Duration
		minRemaining time.Duration
		stillCached  time.Duration // age at which the cached token is still served
		remint       time.Duration // age at which a new one is minted
	}{
		{"hour token, 15m margin", time.Hour, 15 * time.Minute, 45 * time.Minute, 45*time.Minute + time.Second},
		{"short token uses half its life", 20 * time.Minute, 15 * time.Minute, 10 * time.Minute, 10*time.Minute + time.Second},
		{"exactly twice the margin", 30 * time.Minute, 15 * time.Minute, 15 * time.Minute, 15*time.Minute + time.Second},
		{"20s token", 20 * time.Second, 15 * time.Minute, 10 * time.Second, 11 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktest.New(epoch)
			m := &minter{clk: clk, lifetime: tt.lifetime}
			c := New(tt.minRemaining, clk.Now)
			src := m.source("a")
			get := func() Result {
				r, err := c.Token(context.Background(), "a", src)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			if r := get(); r.Cached {
				t.Fatal("first token cannot be cached")
			}
			clk.Set(epoch.Add(tt.stillCached))
			if r := get(); !r.Cached || m.calls.Load() != 1 {
				t.Fatalf("at %v: cached=%v mints=%d, want cached and 1", tt.stillCached, r.Cached, m.calls.Load())
			}
			clk.Set(epoch.Add(tt.remint))
			if r := get(); r.Cached || m.calls.Load() != 2 {
				t.Fatalf("at %v: cached=%v mints=%d, want a new mint", tt.remint, r.Cached, m.calls.Load())
			}
		})
	}
}

func TestOutageServesValidCachedToken(t *testing.T) {
	clk := clocktest.New(epoch)
	m := &minter{clk: clk, lifetime: time.Hour}
	c := New(15*time.Minute, clk.Now)
	src := m.source("a")
	first, err := c.Token(context.Background(), "a", src)
	if err != nil {
		t.Fatal(err)
	}
	m.fail.Store(true)
	clk.Advance(50 * time.Minute) // below the margin: a mint is attempted and fails
	r, err := c.Token(context.Background(), "a", src)
	if err != nil || !r.Fallback || r.Token.AccessToken != first.Token.AccessToken {
		t.Fatalf("got %+v, %v; want the cached token as fallback", r, err)
	}
	// Within the hold-off no new mint is attempted.
	calls := m.calls.Load()
	clk.Advance(FailureHoldoff / 2)
	if _, err := c.Token(context.Background(), "a", src); err != nil || m.calls.Load() != calls {
		t.Fatalf("hold-off not honoured: err=%v calls %d -> %d", err, calls, m.calls.Load())
	}
	// Under FallbackFloor left: the outage becomes visible.
	clk.Set(first.Token.Expiry.Add(-FallbackFloor + time.Second))
	if _, err := c.Token(context.Background(), "a", src); err == nil {
		t.Fatal("a token about to expire must not be served")
	}
	// Recovery: the next attempt after the hold-off mints.
	m.fail.Store(false)
	clk.Advance(FailureHoldoff)
	if r, err := c.Token(context.Background(), "a", src); err != nil || r.Cached {
		t.Fatalf("after recovery: %+v %v", r, err)
	}
}

func TestNoTokenIsAnError(t *testing.T) {
	tests := []struct {
		name string
		src  Source
	}{
		{"mint fails, nothing cached", SourceFunc(func(context.Context) (*oauth2.Token, error) { return nil, errors.New("google is down") })},
		{"nil token", SourceFunc(func(context.Context) (*oauth2.Token, error) { return nil, nil })},
		{"empty access token", SourceFunc(func(context.Context) (*oauth2.Token, error) {
			return &oauth2.Token{Expiry: epoch.Add(time.Hour)}, nil
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(0, clocktest.New(epoch).Now)
			if r, err := c.Token(context.Background(), "a", tt.src); err == nil {
				t.Fatalf("got %+v, want an error", r)
			}
			if n := c.len(); n != 0 {
				t.Fatalf("entries = %d, want 0", n)
			}
		})
	}
}

func TestSourceGetsADetachedBoundedContext(t *testing.T) {
	c := New(0, clocktest.New(epoch).Now)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // one impatient caller must not cancel a mint others share
	var bounded bool
	var live error
	_, err := c.Token(ctx, "a", SourceFunc(func(ctx context.Context) (*oauth2.Token, error) {
		_, bounded = ctx.Deadline()
		live = ctx.Err()
		return &oauth2.Token{AccessToken: "t", Expiry: epoch.Add(time.Hour)}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !bounded || live != nil {
		t.Fatalf("mint context: deadline set %v, err %v; want bounded and live", bounded, live)
	}
}

func TestKeyChangeMintsAgainForgetAndExpiry(t *testing.T) {
	clk := clocktest.New(epoch)
	m := &minter{clk: clk, lifetime: time.Hour}
	c := New(0, clk.Now)
	get := func(key string) Result {
		t.Helper()
		r, err := c.Token(context.Background(), key, m.source(key))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	get("a@v1")
	if r := get("a@v2"); r.Cached {
		t.Fatalf("a token for the old definition was reused: %+v", r)
	}
	get("b@v1")
	c.Forget("a@v1")
	if n := c.len(); n != 2 {
		t.Fatalf("entries after Forget = %d, want 2", n)
	}
	if r := get("a@v2"); !r.Cached {
		t.Fatal("a token not forgotten was dropped")
	}
	c.DropExpired()
	if n := c.len(); n != 2 {
		t.Fatalf("entries after DropExpired with nothing expired = %d, want 2", n)
	}

	// Expired tokens go.
	clk.Advance(time.Hour)
	c.DropExpired()
	if n := c.len(); n != 0 {
		t.Fatalf("entries after expiry = %d, want 0", n)
	}

	// A failure record of a forgotten key goes too: a re-added account
	// mints at once instead of recalling the old failure.
	m.fail.Store(true)
	if _, err := c.Token(context.Background(), "c@v1", m.source("c")); err == nil {
		t.Fatal("want error")
	}
	c.Forget("c@v1")
	m.fail.Store(false)
	if _, err := c.Token(context.Background(), "c@v1", m.source("c")); err != nil {
		t.Fatalf("failure outlived Forget: %v", err)
	}
}

func TestMintsRunAtMostLimitAtOnceInArrivalOrder(t *testing.T) {
	clk := clocktest.New(epoch)
	c := New(15*time.Minute, clk.Now)
	c.LimitMints(2)
	var running, peak atomic.Int64
	gate := make(chan struct{})
	var orderMu sync.Mutex
	var order []string
	src := func(name string) Source {
		return SourceFunc(func(context.Context) (*oauth2.Token, error) {
			n := running.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			orderMu.Lock()
			order = append(order, name)
			orderMu.Unlock()
			<-gate
			running.Add(-1)
			return &oauth2.Token{AccessToken: "tok-" + name, Expiry: clk.Now().Add(time.Hour)}, nil
		})
	}
	var wg sync.WaitGroup
	names := []string{"a", "b", "c", "d", "e"}
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Token(context.Background(), name, src(name)); err != nil {
				t.Error(err)
			}
		}()
		// Each caller is queued before the next arrives.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			orderMu.Lock()
			started := len(order)
			orderMu.Unlock()
			if started == min(i+1, 2) && (i < 2 || waiters(c) == i-1) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("caller %s not started or queued", name)
			}
		}
	}
	// Let one mint finish at a time: the freed slot goes to the longest
	// waiting caller.
	for started := 3; started <= len(names); started++ {
		gate <- struct{}{}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			orderMu.Lock()
			n := len(order)
			orderMu.Unlock()
			if n == started {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no mint started after a slot was freed (%d of %d)", n, started)
			}
		}
	}
	close(gate)
	wg.Wait()
	if peak.Load() != 2 {
		t.Fatalf("%d mints ran at once, want 2", peak.Load())
	}
	if fmt.Sprint(order) != fmt.Sprint(names) {
		t.Fatalf("mints ran in order %v, want arrival order %v", order, names)
	}
}

// waiters is how many callers wait for a mint slot.
func waiters(c *Cache) int { return int(c.queued.Load()) }

func TestQueuedMintOutlivesItsCaller(t *testing.T) {
	clk := clocktest.New(epoch)
	c := New(15*time.Minute, clk.Now)
	c.LimitMints(1)
	gate := make(chan struct{})
	m := &minter{clk: clk, lifetime: time.Hour, gate: gate}
	done := make(chan error)
	go func() { _, err := c.Token(context.Background(), "busy", m.source("busy")); done <- err }()
	for m.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// An agent queued behind the busy mint hangs up.
	ctx, cancel := context.WithCancel(context.Background())
	queued := make(chan error)
	go func() { _, err := c.Token(ctx, "waiting", m.source("waiting")); queued <- err }()
	for waiters(c) != 1 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Its mint still ran in its turn ...
	if err := <-queued; err != nil {
		t.Fatalf("queued mint: %v", err)
	}
	// ... and the agent's retry is answered from the cache.
	res, err := c.Token(context.Background(), "waiting", m.source("waiting"))
	if err != nil || !res.Cached || m.calls.Load() != 2 {
		t.Fatalf("retry: %+v, %v, %d mints; want the cached token of 2 mints", res, err, m.calls.Load())
	}
}

// TestDropExpiredSkipsUntilSomethingExpires: with nothing expired a
// refresh does not walk the cache, yet a token minted later with an
// earlier expiry still goes when it expires.
func TestDropExpiredSkipsUntilSomethingExpires(t *testing.T) {
	clk := clocktest.New(epoch)
	c := New(0, clk.Now)
	put := func(key string, life time.Duration) {
		t.Helper()
		exp := clk.Now().Add(life)
		if _, err := c.Token(context.Background(), key, SourceFunc(func(context.Context) (*oauth2.Token, error) {
			return &oauth2.Token{AccessToken: "x", Expiry: exp}, nil
		})); err != nil {
			t.Fatal(err)
		}
	}
	put("long", 2*time.Hour)
	c.DropExpired() // learns the earliest expiry
	put("short", 30*time.Minute)
	for _, step := range []struct {
		advance time.Duration
		want    int
	}{
		{10 * time.Minute, 2},
		{30 * time.Minute, 1}, // short expired
		{30 * time.Minute, 1},
		{time.Hour, 0},
	} {
		clk.Advance(step.advance)
		c.DropExpired()
		if n := c.len(); n != step.want {
			t.Fatalf("after %s more: %d tokens, want %d", step.advance, n, step.want)
		}
	}
}
