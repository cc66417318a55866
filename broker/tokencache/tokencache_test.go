package tokencache

import (
	"context"
	"errors"
	"fmt"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/clocktest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
)

// minter issues tokens living `lifetime` from the clock's now; it can fail
// and can block until released, to widen the window for races.
type minter struct {
	clk      *clocktest.Clock
	lifetime time.Duration
	calls    atomic.Int64
	fail     atomic.Bool
	gate     chan struct{}
}

func (m *minter) Mint(ctx context.Context, a *policy.Account) (*oauth2.Token, error) {
	n := m.calls.Add(1)
	if m.gate != nil {
		<-m.gate
	}
	if m.fail.Load() {
		return nil, errors.New("google is down")
	}
	return &oauth2.Token{AccessToken: fmt.Sprintf("tok-%s-%d", a.Name(), n), Expiry: m.clk.Now().Add(m.lifetime)}, nil
}

func testPolicy(t *testing.T, store string) *policy.Policy {
	t.Helper()
	pub, _, _ := agentkey.Generate()
	p, err := policy.Parse(fmt.Appendf(nil, `{"Audience":"https://b","Accounts":{
		"a":{"Project":"p","Location":"l","Dataset":"d","DicomStore":%q,"ServiceAccountSecret":"/x"},
		"b":{"Project":"p","Location":"l","Dataset":"d","DicomStore":"s","ServiceAccountSecret":"/y"}},
		"Agents":{"x":{"PublicKey":%q,"Accounts":["a"]}}}`, store, agentkey.FormatPublicKey(pub)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConcurrentRequestsMintOnce(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m := &minter{clk: clk, lifetime: time.Hour, gate: make(chan struct{})}
	c := New(m, 15*time.Minute, clk.Now)
	a := testPolicy(t, "s").Accounts["a"]

	var wg sync.WaitGroup
	tokens := make([]string, 1000)
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.Token(context.Background(), a)
			if err != nil {
				t.Error(err)
				return
			}
			tokens[i] = r.Token.AccessToken
		}()
	}
	time.Sleep(20 * time.Millisecond) // let most goroutines queue behind the flight (not a timing assertion)
	close(m.gate)
	wg.Wait()
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
			clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			m := &minter{clk: clk, lifetime: tt.lifetime}
			c := New(m, tt.minRemaining, clk.Now)
			a := testPolicy(t, "s").Accounts["a"]
			start := clk.Now()
			get := func() Result {
				r, err := c.Token(context.Background(), a)
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			if r := get(); r.Cached {
				t.Fatal("first token cannot be cached")
			}
			clk.Set(start.Add(tt.stillCached))
			if r := get(); !r.Cached || m.calls.Load() != 1 {
				t.Fatalf("at %v: cached=%v mints=%d, want cached and 1", tt.stillCached, r.Cached, m.calls.Load())
			}
			clk.Set(start.Add(tt.remint))
			if r := get(); r.Cached || m.calls.Load() != 2 {
				t.Fatalf("at %v: cached=%v mints=%d, want a new mint", tt.remint, r.Cached, m.calls.Load())
			}
		})
	}
}

func TestOutageServesValidCachedToken(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m := &minter{clk: clk, lifetime: time.Hour}
	c := New(m, 15*time.Minute, clk.Now)
	a := testPolicy(t, "s").Accounts["a"]
	first, err := c.Token(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	m.fail.Store(true)
	clk.Advance(50 * time.Minute) // below the margin: a mint is attempted and fails
	r, err := c.Token(context.Background(), a)
	if err != nil || !r.Fallback || r.Token.AccessToken != first.Token.AccessToken {
		t.Fatalf("got %+v, %v; want the cached token as fallback", r, err)
	}
	// Within the hold-off no new mint is attempted.
	calls := m.calls.Load()
	clk.Advance(FailureHoldoff / 2)
	if _, err := c.Token(context.Background(), a); err != nil || m.calls.Load() != calls {
		t.Fatalf("hold-off not honoured: err=%v calls %d -> %d", err, calls, m.calls.Load())
	}
	// Under FallbackFloor left: the outage becomes visible.
	clk.Set(first.Token.Expiry.Add(-FallbackFloor + time.Second))
	if _, err := c.Token(context.Background(), a); err == nil {
		t.Fatal("a token about to expire must not be served")
	}
	// Recovery: the next attempt after the hold-off mints.
	m.fail.Store(false)
	clk.Advance(FailureHoldoff)
	if r, err := c.Token(context.Background(), a); err != nil || r.Cached {
		t.Fatalf("after recovery: %+v %v", r, err)
	}
}

func TestNoCacheNoToken(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m := &minter{clk: clk, lifetime: time.Hour}
	m.fail.Store(true)
	c := New(m, 0, clk.Now)
	if _, err := c.Token(context.Background(), testPolicy(t, "s").Accounts["a"]); err == nil {
		t.Fatal("want error")
	}
}

func TestDefinitionChangeMintsAgainAndPrunes(t *testing.T) {
	clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m := &minter{clk: clk, lifetime: time.Hour}
	c := New(m, 0, clk.Now)
	old := testPolicy(t, "s")
	if _, err := c.Token(context.Background(), old.Accounts["a"]); err != nil {
		t.Fatal(err)
	}
	changed := testPolicy(t, "other-store")
	r, err := c.Token(context.Background(), changed.Accounts["a"])
	if err != nil || r.Cached {
		t.Fatalf("a token for the old store definition was reused: %+v %v", r, err)
	}
	c.Prune(changed)
	c.mu.Lock()
	n := len(c.entries)
	c.mu.Unlock()
	if n != 1 {
		t.Fatalf("entries after prune = %d, want 1", n)
	}
}
