// Package tokencache keeps one Google access token per account per broker
// instance, coalesces concurrent mints into one (singleflight), and hands a
// cached token out only while it has enough life left for an agent to use.
//
// Like golang.org/x/oauth2's ReuseTokenSource it wraps a token source, but
// for many accounts at once: each call names the account by a key that
// changes whenever the account's definition does, and passes the Source that
// mints for it. The cache knows nothing of the policy: the caller Forgets
// the keys it no longer uses, and DropExpired frees what has run out.
package tokencache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"
)

// DefaultMinRemaining is BROKER_MIN_REMAINING's default.
const DefaultMinRemaining = 15 * time.Minute

// FallbackFloor is the least life a cached token must have to be served
// when minting a new one failed (Google or Secret Manager down).
const FallbackFloor = time.Minute

// FailureHoldoff is how long after a failed mint the cache answers from
// that failure instead of asking Google again, so an outage is not made
// worse by every agent request retrying it.
const FailureHoldoff = 5 * time.Second

// MaxConcurrentMints is how many mints (of different keys) run at once by
// default. A herd of agents after an outage asks for thousands of accounts
// at once; beyond this many the rest wait their turn in arrival order
// (x/sync/semaphore is FIFO), so on one vCPU early agents are served early
// instead of every mint sharing the CPU and all finishing at the end, and
// connections, goroutine stacks and memory stay bounded. 64 keeps one vCPU
// busy with Google's token endpoint answering in up to ~100 ms (a mint is
// ~1.5 ms of CPU). broker/mint keeps as many idle connections.
const MaxConcurrentMints = 64

// mintTimeout bounds one mint; it is detached from the caller's context so
// one impatient agent cannot cancel the mint others are waiting on.
const mintTimeout = 30 * time.Second

// Source mints a new token (oauth2.TokenSource with a context, so a mint can
// be bounded). The broker's sources are broker/mint for one account.
type Source interface {
	Token(ctx context.Context) (*oauth2.Token, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context) (*oauth2.Token, error)

// Token calls f.
func (f SourceFunc) Token(ctx context.Context) (*oauth2.Token, error) { return f(ctx) }

// Cache is safe for concurrent use.
type Cache struct {
	now          func() time.Time
	minRemaining time.Duration

	mu      sync.Mutex
	entries map[string]entry // by key
	failed  map[string]failure
	// firstExpiry is no later than the earliest expiry in entries (zero:
	// unknown), so a refresh with nothing expired skips the pass over
	// 30,000 tokens that would hold mu meanwhile.
	firstExpiry time.Time
	sf          singleflight.Group
	slots       *semaphore.Weighted // mints running at once
	queued      atomic.Int64        // callers waiting for a slot (tests)
}

type failure struct {
	at  time.Time
	err error
}

type entry struct {
	tok    *oauth2.Token
	minted time.Time
}

// New returns a cache. minRemaining <= 0 means DefaultMinRemaining; now nil
// means time.Now.
func New(minRemaining time.Duration, now func() time.Time) *Cache {
	if minRemaining <= 0 {
		minRemaining = DefaultMinRemaining
	}
	if now == nil {
		now = time.Now
	}
	return &Cache{now: now, minRemaining: minRemaining, entries: map[string]entry{}, failed: map[string]failure{},
		slots: semaphore.NewWeighted(MaxConcurrentMints)}
}

// LimitMints sets how many mints run at once (default MaxConcurrentMints;
// n < 1 is taken as 1). Call it before the cache is shared.
func (c *Cache) LimitMints(n int) {
	c.slots = semaphore.NewWeighted(int64(max(n, 1)))
}

// Result is a token and whether it came from the cache.
type Result struct {
	Token  *oauth2.Token
	Cached bool
	// Fallback is true when minting failed and a still-valid cached token
	// was served instead.
	Fallback bool
}

// Token returns the token cached under key if it has enough remaining life,
// and otherwise one from src, calling src at most once at a time per key.
// key must change whenever what src mints changes (the account's
// definition), so a token minted for an old definition is never served.
func (c *Cache) Token(ctx context.Context, key string, src Source) (Result, error) {
	if e, ok := c.get(key); ok && c.usable(e) {
		return Result{Token: e.tok, Cached: true}, nil
	}
	v, err, _ := c.sf.Do(key, func() (any, error) {
		// Someone may have minted between our look-up and this flight.
		if e, ok := c.get(key); ok && c.usable(e) {
			return Result{Token: e.tok, Cached: true}, nil
		}
		tok, minted, err := c.mintOrRecall(ctx, key, src)
		if err != nil {
			if e, ok := c.get(key); ok && e.tok.Expiry.Sub(c.now()) >= FallbackFloor {
				return Result{Token: e.tok, Cached: true, Fallback: true}, nil
			}
			return nil, err
		}
		c.mu.Lock()
		c.entries[key] = entry{tok: tok, minted: minted}
		if !c.firstExpiry.IsZero() && tok.Expiry.Before(c.firstExpiry) {
			c.firstExpiry = tok.Expiry
		}
		delete(c.failed, key)
		c.mu.Unlock()
		return Result{Token: tok}, nil
	})
	if err != nil {
		return Result{}, err
	}
	return v.(Result), nil
}

// mintOrRecall mints, unless a mint for key failed under FailureHoldoff ago,
// in which case that failure is the answer.
func (c *Cache) mintOrRecall(ctx context.Context, key string, src Source) (*oauth2.Token, time.Time, error) {
	c.mu.Lock()
	f, recent := c.failed[key]
	c.mu.Unlock()
	if recent && c.now().Sub(f.at) < FailureHoldoff {
		return nil, time.Time{}, f.err
	}
	// A queued mint, like a running one, does not follow the caller: an
	// agent that hangs up (Cloud Run's request timeout in a long herd)
	// leaves it queued, and it runs in its turn and caches the token the
	// agent's retry then gets at once. Leaving the queue instead would
	// send the retry to the back, and a herd longer than the timeout could
	// starve late agents. Slots free within mintTimeout, so the wait ends.
	c.queued.Add(1)
	_ = c.slots.Acquire(context.Background(), 1) // fails only on a done context
	c.queued.Add(-1)
	defer c.slots.Release(1)
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mintTimeout)
	defer cancel()
	minted := c.now()
	tok, err := src.Token(mctx)
	if err == nil && (tok == nil || tok.AccessToken == "") {
		err = errEmptyToken
	}
	if err != nil {
		c.mu.Lock()
		c.failed[key] = failure{at: c.now(), err: err}
		c.mu.Unlock()
		return nil, time.Time{}, err
	}
	return tok, minted, nil
}

var errEmptyToken = errors.New("upstream returned an empty token")

func (c *Cache) get(key string) (entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	return e, ok
}

// usable: at least minRemaining left or, for tokens too short for that rule
// (lifetime under twice minRemaining), at least half their lifetime.
func (c *Cache) usable(e entry) bool {
	need := c.minRemaining
	if lifetime := e.tok.Expiry.Sub(e.minted); lifetime < 2*c.minRemaining {
		need = lifetime / 2
	}
	return e.tok.Expiry.Sub(c.now()) >= need
}

// Forget drops key's token and any failure remembered for it.
func (c *Cache) Forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, key)
	delete(c.failed, key)
}

// DropExpired frees every expired token. With nothing expired it returns
// without a pass over the cache (which would hold its lock meanwhile).
func (c *Cache) DropExpired() {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.firstExpiry.IsZero() && now.Before(c.firstExpiry) {
		return
	}
	var first time.Time
	for k, e := range c.entries {
		if !e.tok.Expiry.After(now) {
			delete(c.entries, k)
		} else if first.IsZero() || e.tok.Expiry.Before(first) {
			first = e.tok.Expiry
		}
	}
	c.firstExpiry = first
}
