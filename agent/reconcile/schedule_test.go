package reconcile

import (
	"testing"
	"time"
)

func TestRefreshAt(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		life     time.Duration
		margin   time.Duration
		jitter   float64
		wantLead time.Duration // expiry - refreshAt
	}{
		{"hour token, no jitter", time.Hour, 10 * time.Minute, 0, 10 * time.Minute},
		{"hour token, max jitter", time.Hour, 10 * time.Minute, 0.999999, 10*time.Minute + time.Duration(0.999999*0.1*float64(10*time.Minute))},
		{"hour token, half jitter", time.Hour, 10 * time.Minute, 0.5, 10*time.Minute + 30*time.Second},
		{"15m token: half-life floor", 15 * time.Minute, 10 * time.Minute, 0, 7*time.Minute + 30*time.Second},
		{"20m token exactly at floor", 20 * time.Minute, 10 * time.Minute, 0, 10 * time.Minute},
		{"20m token with jitter: floor wins", 20 * time.Minute, 10 * time.Minute, 0.9, 10 * time.Minute},
		{"1s token: minimum delay", time.Second, 10 * time.Minute, 0, 0},
		{"already expired: minimum delay", -time.Minute, 10 * time.Minute, 0, -time.Minute - MinRefreshDelay},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp := now.Add(tc.life)
			at := RefreshAt(now, exp, tc.margin, tc.jitter)
			if lead := exp.Sub(at); lead != tc.wantLead {
				t.Errorf("lead = %v, want %v", lead, tc.wantLead)
			}
			if at.Before(now.Add(MinRefreshDelay)) {
				t.Errorf("refresh at %v is sooner than the minimum delay", at.Sub(now))
			}
		})
	}
}

func TestRefreshAtBounds(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	margin := 10 * time.Minute
	for _, life := range []time.Duration{2 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 12 * time.Hour} {
		for j := 0.0; j < 1; j += 0.05 {
			exp := now.Add(life)
			at := RefreshAt(now, exp, margin, j)
			if at.Before(now.Add(life / 2)) {
				t.Fatalf("life %v jitter %v: refresh before half-life", life, j)
			}
			if lead := exp.Sub(at); lead > margin+time.Duration(JitterFraction*float64(margin)) {
				t.Fatalf("life %v jitter %v: lead %v beyond margin+jitter", life, j, lead)
			}
			if life > 2*(margin+margin/10) && exp.Sub(at) < margin {
				t.Fatalf("life %v jitter %v: lead %v below margin", life, j, exp.Sub(at))
			}
		}
	}
}

func TestRetryBackoff(t *testing.T) {
	seq := func(jitter float64, retryable []bool) []time.Duration {
		r := newRetry(func() float64 { return jitter })
		var out []time.Duration
		for _, ok := range retryable {
			out = append(out, r.next(ok))
		}
		return out
	}
	all := func(n int) []bool {
		b := make([]bool, n)
		for i := range b {
			b[i] = true
		}
		return b
	}
	s := time.Second
	tests := []struct {
		name   string
		jitter float64
		kinds  []bool
		want   []time.Duration
	}{
		{"no jitter: lower bound d/2", 0, all(9), []time.Duration{s / 2, s, 2 * s, 4 * s, 8 * s, 16 * s, 30 * s, 30 * s, 30 * s}},
		{"half jitter", 0.5, all(4), []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 3 * s, 6 * s}},
		{"non-retryable waits the cap", 0, []bool{false, false}, []time.Duration{30 * s, 30 * s}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := seq(tc.jitter, tc.kinds)
			for i := range tc.want {
				if got[i] != tc.want[i] {
					t.Fatalf("step %d: %v, want %v (all %v)", i, got[i], tc.want[i], got)
				}
			}
		})
	}
	// Upper bound: the delay never reaches 2x the step, never above the cap.
	r := newRetry(func() float64 { return 0.999999 })
	step := BackoffInitial
	for i := 0; i < 20; i++ {
		d := r.next(true)
		if d > step || d < step/2 || d > BackoffMax {
			t.Fatalf("step %d: delay %v outside [%v, %v]", i, d, step/2, step)
		}
		if step *= 2; step > BackoffMax {
			step = BackoffMax
		}
	}
	r.reset()
	if d := r.next(true); d > BackoffInitial {
		t.Errorf("after reset: %v", d)
	}
}
