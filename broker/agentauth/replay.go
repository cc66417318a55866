package agentauth

import (
	"container/heap"
	"sync"
	"time"
)

// shrinkFloor is the size below which the replay cache never bothers to
// reallocate its map and heap after a burst.
const shrinkFloor = 1024

// replayKey names one jti of one agent: the same jti from two agents are
// two different tokens.
type replayKey struct{ agent, jti string }

type replayEntry struct {
	key     replayKey
	expires time.Time // exp + skew: after this the token fails the time check anyway
}

// expiryHeap orders entries by expiry (container/heap), so sweeping
// touches only expired entries.
type expiryHeap []replayEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(replayEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = replayEntry{} // drop the strings for the GC
	*h = old[:len(old)-1]
	return e
}

// replayCache remembers accepted jtis until their tokens expire. It is
// bounded: when a cap is reached it refuses new tokens rather than forget
// old ones, because forgetting would let a captured token be replayed.
type replayCache struct {
	mu       sync.Mutex
	seen     map[replayKey]struct{}
	order    expiryHeap
	perAgent map[string]int
	capTotal int
	capAgent int
	peak     int // largest len(seen) since the map was last allocated
}

func newReplayCache(capTotal, capAgent int) *replayCache {
	return &replayCache{
		seen:     make(map[replayKey]struct{}),
		perAgent: make(map[string]int),
		capTotal: capTotal,
		capAgent: capAgent,
	}
}

// add records agent's jti until expires and returns "" — or a Reason when
// the jti is already recorded or a cap is reached. agents > 0 is the number
// of agents in the policy: the cache is then one partition of capAgent per
// agent (in all at most capAgent × agents, plus what agents removed by a
// reload left until it expires), and only the agent's own share can be
// full. agents == 0 keeps the fixed total capTotal as well.
func (r *replayCache) add(agent, jti string, expires, now time.Time, agents int) string {
	k := replayKey{agent, jti}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweepLocked(now)
	if _, dup := r.seen[k]; dup {
		return ReasonReplayed
	}
	if (agents <= 0 && len(r.seen) >= r.capTotal) || r.perAgent[agent] >= r.capAgent {
		return ReasonReplayCacheFull
	}
	r.seen[k] = struct{}{}
	r.perAgent[agent]++
	heap.Push(&r.order, replayEntry{key: k, expires: expires})
	if len(r.seen) > r.peak {
		r.peak = len(r.seen)
	}
	return ""
}

// has reports whether agent's jti is recorded (and not yet expired at
// now), without recording it.
func (r *replayCache) has(agent, jti string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweepLocked(now)
	_, ok := r.seen[replayKey{agent, jti}]
	return ok
}

// len drops expired entries and returns how many remain.
func (r *replayCache) len(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweepLocked(now)
	return len(r.seen)
}

// sweepLocked drops every entry whose expiry is not after now.
func (r *replayCache) sweepLocked(now time.Time) {
	for len(r.order) > 0 && !r.order[0].expires.After(now) {
		e := heap.Pop(&r.order).(replayEntry)
		delete(r.seen, e.key)
		if n := r.perAgent[e.key.agent] - 1; n > 0 {
			r.perAgent[e.key.agent] = n
		} else {
			delete(r.perAgent, e.key.agent)
		}
	}
	// Go maps and slices never give memory back, so after a burst has
	// drained, copy what is left into right-sized ones.
	if r.peak >= shrinkFloor && len(r.seen) <= r.peak/4 {
		seen := make(map[replayKey]struct{}, len(r.seen))
		for k := range r.seen {
			seen[k] = struct{}{}
		}
		r.seen = seen
		r.order = append(make(expiryHeap, 0, len(r.order)), r.order...)
		r.peak = len(r.seen)
	}
}
