package agentauth

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// TestReplayCacheBound drives the cache directly with an injected clock:
// the total never exceeds capTotal, an agent over its share is refused
// (replay_cache_full) while agents within theirs are served, and full
// means refuse, never forget.
func TestReplayCacheBound(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const life = 7 * time.Minute // exp + skew of an assertion made at its step
	type step struct {
		at     time.Duration // since t0
		agent  string
		jti    string
		agents int // in the policy; 0 unknown
		want   string
	}
	tests := []struct {
		name               string
		capTotal, capAgent int
		steps              []step
	}{
		{"a flooding agent is refused, the others are served", 6, 100, []step{
			{0, "a", "1", 3, ""}, {0, "a", "2", 3, ""},
			{0, "a", "3", 3, ReasonReplayCacheFull}, // share = 6/3
			{time.Second, "a", "4", 3, ReasonReplayCacheFull},
			{time.Second, "b", "1", 3, ""}, {time.Second, "b", "2", 3, ""},
			{2 * time.Second, "c", "1", 3, ""}, {2 * time.Second, "c", "2", 3, ""},
			{2 * time.Second, "c", "3", 3, ReasonReplayCacheFull},
		}},
		{"the per-agent cap when it is the smaller", 100, 2, []step{
			{0, "a", "1", 3, ""}, {0, "a", "2", 3, ""},
			{0, "a", "3", 3, ReasonReplayCacheFull},
			{0, "b", "1", 3, ""},
		}},
		{"a replay is named as such, full or not", 4, 100, []step{
			{0, "a", "1", 2, ""}, {0, "a", "2", 2, ""},
			{0, "a", "1", 2, ReasonReplayed},
			{0, "a", "3", 2, ReasonReplayCacheFull},
			{0, "a", "2", 2, ReasonReplayed},
			{0, "b", "1", 2, ""},
		}},
		{"the same jti from two agents is two tokens", 4, 100, []step{
			{0, "a", "x", 2, ""}, {0, "b", "x", 2, ""}, {0, "a", "x", 2, ReasonReplayed},
		}},
		{"expiry frees the share, not before", 4, 100, []step{
			{0, "a", "1", 2, ""}, {time.Minute, "a", "2", 2, ""},
			{2 * time.Minute, "a", "3", 2, ReasonReplayCacheFull},
			{life - time.Nanosecond, "a", "3", 2, ReasonReplayCacheFull},
			{life, "a", "3", 2, ""}, // "1" expired
			{life, "a", "4", 2, ReasonReplayCacheFull},
			{life + time.Minute, "a", "4", 2, ""}, // "2" expired
			{life + time.Minute, "b", "1", 2, ""},
		}},
		{"agent count unknown: the per-agent cap and the total", 3, 2, []step{
			{0, "a", "1", 0, ""}, {0, "a", "2", 0, ""},
			{0, "a", "3", 0, ReasonReplayCacheFull},
			{0, "b", "1", 0, ""},
			{0, "c", "1", 0, ReasonReplayCacheFull}, // total
		}},
		{"shares shrink when the policy grows; earlier entries count until they expire", 4, 100, []step{
			{0, "a", "1", 1, ""}, {0, "a", "2", 1, ""}, {0, "a", "3", 1, ""}, {0, "a", "4", 1, ""},
			{time.Second, "a", "5", 4, ReasonReplayCacheFull},
			{time.Second, "b", "1", 4, ReasonReplayCacheFull}, // the stated exception: the total is full
			{life, "b", "1", 4, ""},
			{life, "a", "5", 4, ""}, // a is back within its new share of 1
			{life, "a", "6", 4, ReasonReplayCacheFull},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newReplayCache(tt.capTotal, tt.capAgent)
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				got := r.add(s.agent, s.jti, now.Add(life), now, s.agents)
				if got != s.want {
					t.Fatalf("step %d (%s/%s at %s): %q, want %q", i, s.agent, s.jti, s.at, got, s.want)
				}
				if n := r.len(now); n > tt.capTotal {
					t.Fatalf("step %d: %d entries, over the total %d", i, n, tt.capTotal)
				}
			}
		})
	}
}

// TestReplayEntryMemory checks the memory per entry that the stated budget
// (ReplayCacheBytesPerEntry × DefaultReplayCapacity, in docs/design.md)
// rests on, with long jtis and many agents.
func TestReplayEntryMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 200,000 entries")
	}
	const n, agents = 200_000, 2_000
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	names := make([]string, agents)
	for i := range names {
		names[i] = fmt.Sprintf("site-%06d.example-health-network", i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := newReplayCache(n, n)
	for i := range n {
		jti := fmt.Sprintf("%0128d", i) // MaxJTIBytes
		if reason := r.add(names[i%agents], jti, t0.Add(time.Hour), t0, agents); reason != "" {
			t.Fatalf("entry %d: %s", i, reason)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per entry (%d entries: %.1f MiB)", per, n, float64(after.HeapAlloc-before.HeapAlloc)/(1<<20))
	if per > ReplayCacheBytesPerEntry {
		t.Fatalf("%.0f bytes per entry, over the %d the budget is stated with", per, ReplayCacheBytesPerEntry)
	}
	runtime.KeepAlive(r)
}
