package agentauth

import (
	"container/heap"
	"crypto/sha256"
	"sync"
	"time"
)

// shrinkFloor is the size below which the replay cache never bothers to
// reallocate its map and heap after a burst.
const shrinkFloor = 1024

// replayKey names one jti of one agent (the same jti from two agents are
// two different tokens): the first 128 bits of SHA-256 over agent, NUL,
// jti. Fixed-size keys make an entry's memory independent of the jti's
// length; a collision (not expected in the life of the universe) would
// refuse a fresh assertion as replayed, never accept a replay.
type replayKey [16]byte

func keyOf(agent, jti string) replayKey {
	h := sha256.New()
	h.Write([]byte(agent))
	h.Write([]byte{0})
	h.Write([]byte(jti))
	var k replayKey
	copy(k[:], h.Sum(nil))
	return k
}

// share counts one agent's entries; entries point at it, so the agent's
// name is held once, not once per entry.
type share struct {
	agent string
	n     int
}

type replayEntry struct {
	key     replayKey
	expires int64 // unix ns of exp + skew: after this the token fails the time check anyway
	owner   *share
}

// expiryHeap orders entries by expiry (container/heap), so sweeping
// touches only expired entries.
type expiryHeap []replayEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires < h[j].expires }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(replayEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = replayEntry{} // drop the pointer for the GC
	*h = old[:len(old)-1]
	return e
}

// replayCache remembers accepted jtis until their tokens expire. It holds
// at most capTotal entries in all, whatever the policy's size, and refuses
// new tokens rather than forget old ones when a bound is reached, because
// forgetting would let a captured token be replayed.
//
// Each agent may hold a share: capAgent, or capTotal divided by the number
// of agents in the policy when that is smaller. The shares add up to at
// most capTotal, so an agent within its share always finds room and only
// an agent over its own share (a flood, a loop, a stolen key) is refused.
// The one exception is the first replay window after a reload that made
// shares smaller (more agents): entries accepted under the larger shares
// count until they expire, and while they fill the total, any agent's new
// jti is refused too.
type replayCache struct {
	mu       sync.Mutex
	seen     map[replayKey]struct{}
	order    expiryHeap
	perAgent map[string]*share
	capTotal int
	capAgent int
	peak     int // largest len(seen) since the map was last allocated
}

func newReplayCache(capTotal, capAgent int) *replayCache {
	return &replayCache{
		seen:     make(map[replayKey]struct{}),
		perAgent: make(map[string]*share),
		capTotal: capTotal,
		capAgent: min(capAgent, capTotal),
	}
}

// shareFor is one agent's bound when the policy has agents agents (0:
// unknown, the per-agent cap alone).
func (r *replayCache) shareFor(agents int) int {
	if agents <= 0 {
		return r.capAgent
	}
	return max(1, min(r.capAgent, r.capTotal/agents))
}

// add records agent's jti until expires and returns "" — or a Reason when
// the jti is already recorded (ReasonReplayed) or agent's share or the
// total is full (ReasonReplayCacheFull). agents is the number of agents in
// the policy (0 if unknown).
func (r *replayCache) add(agent, jti string, expires, now time.Time, agents int) string {
	k := keyOf(agent, jti)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweepLocked(now)
	if _, dup := r.seen[k]; dup {
		return ReasonReplayed
	}
	s := r.perAgent[agent]
	if (s != nil && s.n >= r.shareFor(agents)) || len(r.seen) >= r.capTotal {
		return ReasonReplayCacheFull
	}
	if s == nil {
		s = &share{agent: agent}
		r.perAgent[agent] = s
	}
	s.n++
	r.seen[k] = struct{}{}
	heap.Push(&r.order, replayEntry{key: k, expires: expires.UnixNano(), owner: s})
	if len(r.seen) > r.peak {
		r.peak = len(r.seen)
	}
	return ""
}

// has reports whether agent's jti is recorded (and not yet expired at
// now), without recording it.
func (r *replayCache) has(agent, jti string, now time.Time) bool {
	k := keyOf(agent, jti)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweepLocked(now)
	_, ok := r.seen[k]
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
	t := now.UnixNano()
	for len(r.order) > 0 && r.order[0].expires <= t {
		e := heap.Pop(&r.order).(replayEntry)
		delete(r.seen, e.key)
		if e.owner.n--; e.owner.n == 0 {
			delete(r.perAgent, e.owner.agent)
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
