package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/health"
)

// Done is a fault as it was carried out.
type Done struct {
	Fault
	Start, End time.Time
	// Detail says what the fault did (answers failed or slowed, reads refused).
	Detail string
	// Settling is how long the start was held back for the system to
	// settle after the previous fault; Aligning, for the agent's next refresh.
	Settling, Aligning time.Duration
	// Missed: an Aligned fault that met no token request (or no agent
	// call, for a broker kill) while it was active.
	Missed bool
	Err    error
}

// faultLoop carries out the plan in order until it is done or ctx ends.
func (r *runner) faultLoop(ctx context.Context) {
	for _, f := range r.plan {
		if !sleepUntil(ctx, r.t0.Add(f.At)) {
			return
		}
		d := Done{Fault: f}
		latest := r.t0.Add(f.Latest)
		t := time.Now()
		r.waitSettled(ctx, latest)
		d.Settling = time.Since(t)
		if f.Kind.Aligned() {
			t = time.Now()
			r.alignToRefresh(ctx, latest)
			d.Aligning = time.Since(t)
		}
		if ctx.Err() != nil {
			return
		}
		r.logf("fault %s: %s", f.Kind, f.Describe())
		d.Start = time.Now()
		d.Detail, d.Missed, d.Err = r.inject(ctx, f)
		d.End = time.Now()
		if d.Err != nil {
			r.harnessProblem("fault %s at %s: %v", f.Kind, fmtOffset(r.offset(d.Start)), d.Err)
		} else {
			r.logf("fault %s over after %s%s", f.Kind, d.End.Sub(d.Start).Round(100*time.Millisecond), prefixed("; ", d.Detail))
		}
		r.mu.Lock()
		r.done = append(r.done, d)
		r.mu.Unlock()
	}
}

func prefixed(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

// inject carries out one fault and lifts it. When the run ends during a
// fault, its waits end at once and it is lifted all the same, never left in
// place. missed is true for an Aligned fault that met no token request.
func (r *runner) inject(ctx context.Context, f Fault) (detail string, missed bool, err error) {
	s := r.s
	tokens := s.Cloud.Tokens
	switch f.Kind {
	case BrokerKill:
		if err := s.KillBroker(); err != nil {
			return "", false, err
		}
		tries := s.Tap.TotalRequests()
		sleepUntil(ctx, time.Now().Add(f.Down))
		tries = s.Tap.TotalRequests() - tries
		t := time.Now()
		if err := s.StartBroker(); err != nil {
			return "", false, err
		}
		return fmt.Sprintf("the agent called it %d times while it was down; up %s after its start",
			tries, time.Since(t).Round(10*time.Millisecond)), tries == 0, nil

	case OrthancRestart:
		// The interval is open (ends in a year) while the restart runs, so
		// the progress lines already count calls failing now as unavoidable.
		from := time.Now()
		r.mu.Lock()
		r.down = append(r.down, interval{from: from, to: from.Add(365 * 24 * time.Hour)})
		i := len(r.down) - 1
		r.mu.Unlock()
		err := s.RestartSite()
		to := time.Now()
		r.mu.Lock()
		r.down[i].to = to
		r.mu.Unlock()
		if err != nil {
			return "", false, err
		}
		return fmt.Sprintf("Orthanc down for %s", to.Sub(from).Round(10*time.Millisecond)), false, nil

	case KeyRotation:
		n, err := r.rotateKeys()
		return fmt.Sprintf("%d keys rotated", n), false, err

	case Token5xx:
		before := tokens.InjectedFailures()
		tokens.FailNext(f.Count, f.Status)
		failed := waitCount(ctx, f.Budget, f.Count, func() int { return tokens.InjectedFailures() - before })
		tokens.FailNext(0, 0)
		failed = tokens.InjectedFailures() - before
		return fmt.Sprintf("%d of %d answers failed", failed, f.Count), failed == 0, nil

	case SlowToken:
		before := tokens.SlowedAnswers()
		tokens.SlowNext(f.Count, f.Delay)
		waitCount(ctx, f.Budget, f.Count, func() int { return tokens.SlowedAnswers() - before })
		tokens.SlowNext(0, 0)
		slowed := tokens.SlowedAnswers() - before
		return fmt.Sprintf("%d of %d answers slowed", slowed, f.Count), slowed == 0, nil

	case SMOutage:
		before := sum(s.Cloud.SecretManager.AccessCounts())
		s.Cloud.SecretManager.SetDown(true)
		sleepUntil(ctx, time.Now().Add(f.Down))
		s.Cloud.SecretManager.SetDown(false)
		return fmt.Sprintf("%d secret reads refused", sum(s.Cloud.SecretManager.AccessCounts())-before), false, nil

	case AgentRestart:
		if err := s.StopAgentSignal(f.Signal, 5*time.Second); err != nil {
			return "", false, err
		}
		sleepUntil(ctx, time.Now().Add(f.Down))
		if err := s.StartAgent(); err != nil {
			return "", false, err
		}
		return "", false, nil
	}
	return "", false, fmt.Errorf("unknown fault kind %d", f.Kind)
}

// waitCount polls until count() reaches n or budget passes (or ctx ends),
// and returns the last count.
func waitCount(ctx context.Context, budget time.Duration, n int, count func() int) int {
	deadline := time.Now().Add(budget)
	for {
		c := count()
		if c >= n || !time.Now().Before(deadline) || ctx.Err() != nil {
			return c
		}
		sleepUntil(ctx, earlier(deadline, time.Now().Add(100*time.Millisecond)))
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// rotateKeys gives every store's service account a new key, adds it as a
// new version of the store's secret (the policy reads versions/latest) and
// disables the old keys at the token endpoint, as an operator rotating a
// leaked key would.
func (r *runner) rotateKeys() (int, error) {
	tokens, sm := r.s.Cloud.Tokens, r.s.Cloud.SecretManager
	n := 0
	for _, st := range r.s.Stores() {
		secret, ok := strings.CutPrefix(st.Secret, "sm://")
		if !ok {
			return n, fmt.Errorf("store %s's key is not in Secret Manager", st.Name)
		}
		secret = strings.TrimSuffix(secret, "/versions/latest")
		old := tokens.KeyIDs(st.ServiceAccount)
		cred, _, err := tokens.NewServiceAccountKey(st.ServiceAccount)
		if err != nil {
			return n, err
		}
		sm.AddVersion(secret, cred)
		for _, id := range old {
			tokens.DisableKey(id)
		}
		n++
	}
	return n, nil
}

// agentClient reads the agent's /healthz; one client for the whole run.
var agentClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, IdleConnTimeout: time.Second}}

func (r *runner) agentStatus(ctx context.Context) (*health.Status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.s.AgentListen+"/healthz", nil)
	if err != nil {
		return nil, err
	}
	resp, err := agentClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st health.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, err
	}
	return &st, nil
}

// settled: the agent answers, is healthy, reaches the broker and every
// store is ok with no error pending.
func (r *runner) settled(ctx context.Context) bool {
	st, err := r.agentStatus(ctx)
	if err != nil || !st.Healthy || !st.Broker.Up {
		return false
	}
	for _, ss := range st.Stores {
		if ss.State != "ok" || ss.LastError != "" {
			return false
		}
	}
	return len(st.Stores) == Stores
}

// waitSettled waits until settled or latest.
func (r *runner) waitSettled(ctx context.Context, latest time.Time) {
	for !r.settled(ctx) {
		if !time.Now().Before(latest) || !sleepUntil(ctx, earlier(latest, time.Now().Add(250*time.Millisecond))) {
			if ctx.Err() == nil {
				r.logf("system not settled by the fault's latest start; starting anyway")
			}
			return
		}
	}
}

// alignToRefresh waits until just before the agent's next scheduled token
// refresh, so that a fault meets a real token request; it never waits past
// latest. The agent's schedule is read again every half second: a refresh
// that comes due moves it.
func (r *runner) alignToRefresh(ctx context.Context, latest time.Time) {
	const lead = 300 * time.Millisecond
	for ctx.Err() == nil && time.Now().Before(latest) {
		st, err := r.agentStatus(ctx)
		if err == nil {
			now := time.Now()
			var next time.Time
			for _, ss := range st.Stores {
				if ss.NextRefresh != nil && ss.NextRefresh.After(now) && (next.IsZero() || ss.NextRefresh.Before(next)) {
					next = *ss.NextRefresh
				}
			}
			if !next.IsZero() && next.Add(-lead).Before(latest) && next.Sub(now) <= lead+500*time.Millisecond {
				sleepUntil(ctx, next.Add(-lead))
				return
			}
		}
		sleepUntil(ctx, earlier(latest, time.Now().Add(500*time.Millisecond)))
	}
}
