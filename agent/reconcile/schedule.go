package reconcile

import (
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Scheduling constants.
const (
	// JitterFraction spreads refreshes over RefreshMargin*(1+JitterFraction)
	// before expiry, so a fleet of agents does not refresh in step.
	JitterFraction = 0.1
	// MinRefreshDelay keeps a token that is (nearly) expired on receipt from
	// causing a tight loop.
	MinRefreshDelay = time.Second
	// BackoffInitial, BackoffMax: broker retries start at 1 s and double up
	// to 60 s, so the agent recovers within a minute of the broker's return.
	BackoffInitial = time.Second
	BackoffMax     = 60 * time.Second
)

// RefreshAt returns when a token received at now and expiring at exp
// should be refreshed: RefreshMargin plus jitter before expiry, but never
// sooner than half the token's remaining life (a short token must not
// cause a refresh loop) nor sooner than MinRefreshDelay. jitter is in [0, 1).
func RefreshAt(now, exp time.Time, margin time.Duration, jitter float64) time.Time {
	lead := margin + time.Duration(jitter*JitterFraction*float64(margin))
	at := exp.Add(-lead)
	if floor := now.Add(exp.Sub(now) / 2); at.Before(floor) {
		at = floor
	}
	if floor := now.Add(MinRefreshDelay); at.Before(floor) {
		at = floor
	}
	return at
}

// retry is the broker retry state machine: exponential backoff (1 s
// doubling, capped at 60 s) from cenkalti/backoff with the randomisation
// replaced by an injected jitter source, so tests are deterministic.
type retry struct {
	bo     *backoff.ExponentialBackOff
	jitter func() float64
}

func newRetry(jitter func() float64) *retry {
	bo := &backoff.ExponentialBackOff{
		InitialInterval:     BackoffInitial,
		RandomizationFactor: 0, // jitter is applied below, within the cap
		Multiplier:          2,
		MaxInterval:         BackoffMax,
	}
	bo.Reset()
	return &retry{bo: bo, jitter: jitter}
}

// next returns the delay before the next attempt: the current backoff step
// d (or the cap for errors that a quick retry cannot fix) with "equal
// jitter", uniformly in [d/2, d), never above BackoffMax.
func (r *retry) next(retryable bool) time.Duration {
	d := r.bo.NextBackOff()
	if !retryable {
		d = BackoffMax
	}
	half := d / 2
	return half + time.Duration(r.jitter()*float64(d-half))
}

// reset returns to the initial step after a success.
func (r *retry) reset() { r.bo.Reset() }
