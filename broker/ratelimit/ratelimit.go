// Package ratelimit is the broker's per-agent request limit: one token
// bucket (golang.org/x/time/rate) per authenticated agent, on an injected
// clock.
//
// Memory is bounded two ways. A bucket left alone long enough to refill
// completely is indistinguishable from a new one, so it is evicted without
// changing any answer. And the number of buckets is capped (agents exist
// only after authentication, so the policy already bounds them; the cap is
// a backstop): when the cap is reached by buckets that are all in use, a
// new agent is refused rather than an existing bucket reset.
package ratelimit

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxAgents is the bucket cap New uses.
const DefaultMaxAgents = 100_000

// minSweepInterval keeps the sweep of idle buckets from running on every
// call when buckets refill quickly.
const minSweepInterval = time.Second

type bucket struct {
	lim  *rate.Limiter
	last time.Time // last Allow call for this agent
}

// Limiter limits each agent to perSecond requests on average with bursts of
// up to burst. It is safe for concurrent use.
type Limiter struct {
	limit     rate.Limit
	burst     int
	now       func() time.Time
	unlimited bool

	// fillTime is how long an untouched bucket takes to become full again;
	// after that it is safe to forget.
	fillTime time.Duration

	mu        sync.Mutex
	buckets   map[string]*bucket
	maxAgents int
	lastSweep time.Time
}

// New returns a Limiter allowing each agent perSecond requests per second
// on average and bursts of burst. perSecond <= 0 (or +Inf, or NaN) turns
// limiting off; burst < 1 is taken as 1. now is the clock (time.Now if nil).
func New(perSecond float64, burst int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	if burst < 1 {
		burst = 1
	}
	l := &Limiter{
		limit:     rate.Limit(perSecond),
		burst:     burst,
		now:       now,
		buckets:   make(map[string]*bucket),
		maxAgents: DefaultMaxAgents,
	}
	if !(perSecond > 0) || math.IsInf(perSecond, 1) {
		l.unlimited = true
		return l
	}
	fill := float64(burst) / perSecond * float64(time.Second)
	if fill > float64(math.MaxInt64/2) {
		fill = float64(math.MaxInt64 / 2)
	}
	l.fillTime = time.Duration(math.Ceil(fill))
	return l
}

// MaxIn reports how many requests one agent can make within d: a full
// bucket plus what refills meanwhile. limited is false when limiting is
// off. broker/agentauth sizes each agent's share of its replay cache with
// it, so the settings live here only.
func (l *Limiter) MaxIn(d time.Duration) (n int, limited bool) {
	if l.unlimited {
		return 0, false
	}
	f := math.Ceil(float64(l.limit)*d.Seconds()) + float64(l.burst)
	if f >= math.MaxInt32 {
		return math.MaxInt32, true
	}
	return int(f), true
}

// SetMaxAgents changes the bucket cap (n < 1 is taken as 1). Call it before
// the Limiter is shared.
func (l *Limiter) SetMaxAgents(n int) {
	if n < 1 {
		n = 1
	}
	l.mu.Lock()
	l.maxAgents = n
	l.mu.Unlock()
}

// Allow takes one request from agentID's bucket and reports whether it was
// allowed.
func (l *Limiter) Allow(agentID string) bool {
	ok, _ := l.Check(agentID)
	return ok
}

// Check is Allow that, when the request is refused, also says how long
// until one request would be allowed, rounded up to the millisecond (for a
// Retry-After header). A refusal because the bucket cap is full says retry
// after the fill time, when idle buckets go.
func (l *Limiter) Check(agentID string) (allowed bool, retryAfter time.Duration) {
	if l.unlimited {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	// Sweep once per fill time, or, when the cap is reached, at most once a
	// second (a sweep is a walk over every bucket).
	sinceSweep := now.Sub(l.lastSweep)
	if sinceSweep >= max(l.fillTime, minSweepInterval) ||
		(len(l.buckets) >= l.maxAgents && sinceSweep >= minSweepInterval) {
		l.sweepLocked(now)
	}
	b, ok := l.buckets[agentID]
	if !ok {
		if len(l.buckets) >= l.maxAgents {
			return false, l.fillTime
		}
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[agentID] = b
	}
	if now.After(b.last) { // a clock step back must not make a bucket look idle
		b.last = now
	}
	if b.lim.AllowN(now, 1) {
		return true, 0
	}
	// Whole milliseconds, rounded up; the epsilon absorbs float error so
	// that an exact 1 ms does not become 2.
	ms := math.Ceil((1-b.lim.TokensAt(now))/float64(l.limit)*1e3 - 1e-6)
	ms = min(max(ms, 0), float64(math.MaxInt64/int64(time.Millisecond)))
	return false, time.Duration(ms) * time.Millisecond
}

// Len reports how many agent buckets are held, after evicting idle ones.
func (l *Limiter) Len() int {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	return len(l.buckets)
}

// sweepLocked evicts buckets untouched for at least fillTime: they have
// refilled, so a fresh bucket gives the same answers.
func (l *Limiter) sweepLocked(now time.Time) {
	l.lastSweep = now
	for id, b := range l.buckets {
		if now.Sub(b.last) >= l.fillTime {
			delete(l.buckets, id)
		}
	}
}
