package soak

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"syscall"
	"time"
)

// Kind is a kind of fault.
type Kind int

// The fault kinds, in the order the report lists them.
const (
	BrokerKill     Kind = iota // broker SIGKILLed, restarted after Fault.Down
	OrthancRestart             // site Orthanc restarted (SIGTERM, start, ready)
	KeyRotation                // every store: new key as a new Secret Manager version, old key disabled
	Token5xx                   // the token endpoint answers the next Fault.Count requests with Fault.Status
	SlowToken                  // the token endpoint delays the next Fault.Count answers by Fault.Delay
	SMOutage                   // Secret Manager answers UNAVAILABLE for Fault.Down
	AgentRestart               // agent stopped with Fault.Signal, started again after Fault.Down
	numKinds
)

// Kinds lists every kind in report order.
func Kinds() []Kind {
	out := make([]Kind, numKinds)
	for k := range out {
		out[k] = Kind(k)
	}
	return out
}

// label is the kind's name in the report's "faults:" line (plural).
func (k Kind) label() string {
	return [...]string{"broker kills", "orthanc restarts", "key rotations", "token 5xx bursts",
		"slow token answers", "secret manager outages", "agent restarts"}[k]
}

// String is the kind's name for one fault.
func (k Kind) String() string {
	if k < 0 || k >= numKinds {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return [...]string{"broker kill", "orthanc restart", "key rotation", "token 5xx burst",
		"slow token answers", "secret manager outage", "agent restart"}[k]
}

// perTenMinutes is how many faults of each kind a 10-minute run has; a run
// of duration D has round(n*D/10m) of each, and never fewer than one.
var perTenMinutes = [numKinds]int{
	BrokerKill: 3, OrthancRestart: 3, KeyRotation: 2, Token5xx: 4, SlowToken: 4, SMOutage: 2, AgentRestart: 2,
}

// Fault is one planned fault. At is its offset from the start of the run;
// the executor may start it later (never earlier) while the system is still
// recovering from the previous one, but always within the fault's slot.
type Fault struct {
	Kind Kind
	At   time.Duration
	// Latest is the offset by which the fault must have started (the end of
	// the part of its slot reserved for starting).
	Latest time.Duration
	// Budget bounds the fault's active phase (from its start until it is
	// lifted); the rest of its slot is left quiet for recovery.
	Budget time.Duration
	// Down: how long the broker or agent stays down, or how long Secret
	// Manager is unavailable.
	Down time.Duration
	// Count: the injected 5xx answers, or the slowed answers.
	Count int
	// Status of the injected token endpoint answers (Token5xx).
	Status int
	// Delay of each slowed answer (SlowToken).
	Delay time.Duration
	// Signal that stops the agent (AgentRestart): SIGTERM or SIGKILL.
	Signal syscall.Signal
}

// Describe is the fault's parameters for the timeline (no secrets involved).
func (f Fault) Describe() string {
	switch f.Kind {
	case BrokerKill:
		return fmt.Sprintf("SIGKILL, down %s", f.Down)
	case OrthancRestart:
		return "SIGTERM, start, wait until ready"
	case KeyRotation:
		return "new key per store as a new Secret Manager version, old keys disabled"
	case Token5xx:
		return fmt.Sprintf("next %d answers HTTP %d (lifted after %s at most)", f.Count, f.Status, f.Budget)
	case SlowToken:
		return fmt.Sprintf("next %d answers delayed %s each (lifted after %s at most)", f.Count, f.Delay, f.Budget)
	case SMOutage:
		return fmt.Sprintf("UNAVAILABLE for %s", f.Down)
	case AgentRestart:
		return fmt.Sprintf("%v, down %s", f.Signal, f.Down)
	}
	return ""
}

// Timing of the plan.
const (
	// MinDuration is the shortest run whose slots still fit every kind once.
	MinDuration = 3 * time.Minute
	// Warmup is the quiet start: every store is served and the call loop
	// runs before the first fault.
	Warmup = 20 * time.Second
	// minUnit is the shortest slot unit (see Plan).
	minUnit = 12 * time.Second
	// maxBudget caps a fault's active phase whatever the slot length.
	maxBudget = 20 * time.Second
)

// Aligned reports whether a fault of kind k waits for the agent's next
// scheduled refresh before it starts, so that it meets a real token
// request: a broker kill or a token endpoint fault between two refreshes
// would go unnoticed. Such a fault gets a slot twice as long (see Plan).
func (k Kind) Aligned() bool { return k == BrokerKill || k == Token5xx || k == SlowToken }

// costsTokens reports whether a fault of kind k can make token requests
// fail or wait. Such a fault is never planned right after an agent
// restart: the restarted agent may be handed cached tokens with just over
// half their life left and then waits half of that before refreshing
// (never sooner than half the remaining life), so for one refresh its
// stores have about TokenLifetime/4 of slack instead of RefreshMargin.
func (k Kind) costsTokens() bool {
	return k == BrokerKill || k == Token5xx || k == SlowToken || k == SMOutage
}

// Tail is the quiet end after the last slot, so the last fault's recovery
// is observed: D/12, within [20s, 60s].
func Tail(d time.Duration) time.Duration {
	return min(max(d/12, 20*time.Second), time.Minute)
}

// Counts is how many faults of each kind a run of duration d has.
func Counts(d time.Duration) [numKinds]int {
	var n [numKinds]int
	for k, per := range perTenMinutes {
		n[k] = max(1, int(math.Round(float64(per)*d.Seconds()/600)))
	}
	return n
}

// Plan lays out the faults of a run of duration d on one timeline,
// deterministically from seed. The multiset of kinds (Counts) is shuffled
// (then no fault that costs tokens directly follows an agent restart when
// another order is possible), and the window between Warmup and Tail(d) is
// cut into one slot per fault: 2u for Aligned kinds and Secret Manager
// outages (up to 10 s long), a unit u for the others.
// Each fault is planned at a random point in the first tenth of u; the
// executor may start it later, up to Latest: u/5 into the slot, or for an
// Aligned kind as late as still leaves its Budget and 3u/10 of quiet. Its
// parameters are random, and its active phase is bounded by Budget (u/2, at
// most 20 s; for Aligned kinds 3/10 of the slot, at most 7 s for a broker
// kill, 8 s for a 5xx burst, 12 s for slow answers). So active phases never
// overlap and the last 3u/10 of every slot is quiet.
func Plan(seed uint64, d time.Duration) ([]Fault, error) {
	if d < MinDuration {
		return nil, fmt.Errorf("soak: duration %s is too short: every fault kind needs a slot; use at least %s", d, MinDuration)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x736f616b)) // "soak"
	var kinds []Kind
	for k, n := range Counts(d) {
		for range n {
			kinds = append(kinds, Kind(k))
		}
	}
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	kinds = afterAgentRestart(kinds)
	weight := func(k Kind) time.Duration {
		if k.Aligned() || k == SMOutage {
			return 2
		}
		return 1
	}
	var units time.Duration
	for _, k := range kinds {
		units += weight(k)
	}
	window := d - Warmup - Tail(d)
	u := (window / units).Truncate(100 * time.Millisecond)
	if u < minUnit {
		return nil, fmt.Errorf("soak: duration %s leaves %s per fault (want %s)", d, u.Round(time.Second), minUnit)
	}
	budget := min(u/2, maxBudget).Truncate(100 * time.Millisecond)
	between := func(lo, hi time.Duration) time.Duration { // uniform in [lo, hi], 100 ms steps
		if hi <= lo {
			return lo
		}
		steps := int64((hi - lo) / (100 * time.Millisecond))
		return lo + time.Duration(rng.Int64N(steps+1))*100*time.Millisecond
	}
	faults := make([]Fault, 0, len(kinds))
	start := Warmup
	for _, k := range kinds {
		slot := weight(k) * u
		f := Fault{Kind: k, Budget: budget, Latest: start + u/5}
		f.At = between(start, start+u/10)
		if k.Aligned() {
			most := map[Kind]time.Duration{BrokerKill: 7 * time.Second, Token5xx: 8 * time.Second, SlowToken: 12 * time.Second}[k]
			f.Budget = min(3*slot/10, most).Truncate(100 * time.Millisecond)
			f.Latest = start + slot - f.Budget - 3*u/10
		}
		switch k {
		case BrokerKill:
			f.Down = between(time.Second, min(6*time.Second, f.Budget-time.Second))
		case Token5xx:
			f.Count = 2 + rng.IntN(5) // 2..6
			f.Status = []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}[rng.IntN(3)]
		case SlowToken:
			f.Count = 2 + rng.IntN(3) // 2..4
			// At most 12 s of delay in all, each well under the agent's 10 s broker timeout.
			f.Delay = between(time.Second, min(5*time.Second, 12*time.Second/time.Duration(f.Count)))
		case SMOutage:
			f.Budget = min(slot-3*u/10-u/5, 10*time.Second).Truncate(100 * time.Millisecond)
			f.Down = between(max(5*time.Second, f.Budget/2), f.Budget)
		case AgentRestart:
			f.Down = between(500*time.Millisecond, min(5*time.Second, budget-time.Second))
			f.Signal = syscall.SIGTERM
			if rng.IntN(2) == 1 {
				f.Signal = syscall.SIGKILL
			}
		}
		faults = append(faults, f)
		start += slot
	}
	return faults, nil
}

// afterAgentRestart reorders kinds so that no fault that costs tokens
// directly follows an agent restart (see costsTokens): walking the list, when
// the previous fault is an agent restart and the next one costs tokens, the
// first later fault that does not is brought forward. When none is left the
// order stays as it is (Plan's slots then still separate them).
func afterAgentRestart(kinds []Kind) []Kind {
	out := append([]Kind(nil), kinds...)
	for i := 1; i < len(out); i++ {
		if out[i-1] != AgentRestart || !out[i].costsTokens() {
			continue
		}
		for j := i + 1; j < len(out); j++ {
			if !out[j].costsTokens() {
				k := out[j]
				copy(out[i+1:j+1], out[i:j])
				out[i] = k
				break
			}
		}
	}
	return out
}
