package ratelimit

import (
	"fmt"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/clocktest"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// step is one call in a scripted scenario: advance the clock by after,
// then call Allow for agent.
type step struct {
	after time.Duration
	agent string
	want  bool
}

func TestAllow(t *testing.T) {
	tests := []struct {
		name      string
		perSecond float64
		burst     int
		steps     []step
	}{
		{
			name: "burst then refill", perSecond: 1, burst: 3,
			steps: []step{
				{0, "a", true}, {0, "a", true}, {0, "a", true},
				{0, "a", false},
				{999 * time.Millisecond, "a", false},
				{time.Millisecond, "a", true}, // one token after 1 s
				{0, "a", false},
				{10 * time.Second, "a", true}, {0, "a", true}, {0, "a", true}, // refilled to burst, not beyond
				{0, "a", false},
			},
		},
		{
			name: "agents have separate buckets", perSecond: 1, burst: 1,
			steps: []step{
				{0, "a", true}, {0, "a", false},
				{0, "b", true}, {0, "b", false},
				{0, "a", false},
			},
		},
		{
			name: "fractional rate", perSecond: 0.5, burst: 1,
			steps: []step{
				{0, "a", true},
				{1500 * time.Millisecond, "a", false},
				{500 * time.Millisecond, "a", true},
			},
		},
		{
			name: "burst below one is one", perSecond: 10, burst: 0,
			steps: []step{{0, "a", true}, {0, "a", false}, {100 * time.Millisecond, "a", true}},
		},
		{
			name: "zero rate disables limiting", perSecond: 0, burst: 1,
			steps: []step{{0, "a", true}, {0, "a", true}, {0, "a", true}},
		},
		{
			name: "infinite rate disables limiting", perSecond: math.Inf(1), burst: 1,
			steps: []step{{0, "a", true}, {0, "a", true}},
		},
		{
			name: "NaN rate disables limiting", perSecond: math.NaN(), burst: 1,
			steps: []step{{0, "a", true}, {0, "a", true}},
		},
		{
			name: "clock going backwards does not grant tokens", perSecond: 1, burst: 1,
			steps: []step{{0, "a", true}, {-time.Hour, "a", false}, {time.Hour, "a", false}, {time.Second, "a", true}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := clocktest.New(t0)
			l := New(tc.perSecond, tc.burst, clock.Now)
			for i, s := range tc.steps {
				clock.Advance(s.after)
				if got := l.Allow(s.agent); got != s.want {
					t.Fatalf("step %d (%s at +%v): Allow = %v, want %v", i, s.agent, clock.Now().Sub(t0), got, s.want)
				}
			}
		})
	}
}

func TestCheckRetryAfter(t *testing.T) {
	clock := clocktest.New(t0)
	l := New(2, 2, clock.Now) // one token per 500 ms
	for range 2 {
		if ok, _ := l.Check("a"); !ok {
			t.Fatal("burst refused")
		}
	}
	tests := []struct {
		after time.Duration
		want  time.Duration
	}{
		{0, 500 * time.Millisecond},
		{200 * time.Millisecond, 300 * time.Millisecond},
		{299 * time.Millisecond, time.Millisecond},
	}
	for _, tc := range tests {
		clock.Advance(tc.after)
		ok, wait := l.Check("a")
		if ok || wait != tc.want {
			t.Fatalf("at +%v: Check = %v, %v; want false, %v", clock.Now().Sub(t0), ok, wait, tc.want)
		}
	}
	clock.Advance(time.Millisecond)
	if ok, wait := l.Check("a"); !ok || wait != 0 {
		t.Fatalf("after the wait: %v, %v", ok, wait)
	}
}

func TestIdleBucketsEvicted(t *testing.T) {
	clock := clocktest.New(t0)
	l := New(1, 5, clock.Now) // fill time 5 s
	for i := range 100 {
		l.Allow(fmt.Sprint("agent-", i))
	}
	if n := l.Len(); n != 100 {
		t.Fatalf("Len = %d, want 100", n)
	}
	clock.Advance(4 * time.Second)
	l.Allow("agent-0") // keeps agent-0 busy
	if n := l.Len(); n != 100 {
		t.Fatalf("before the fill time: Len = %d, want 100", n)
	}
	clock.Advance(time.Second)
	if n := l.Len(); n != 1 {
		t.Fatalf("after the fill time: Len = %d, want only the busy agent", n)
	}
	// An evicted bucket comes back full, exactly as it would have been.
	for i := range 5 {
		if !l.Allow("agent-7") {
			t.Fatalf("request %d of a refilled burst refused", i)
		}
	}
	if l.Allow("agent-7") {
		t.Fatal("request beyond the burst allowed")
	}
	// Sweeps also happen on their own as Allow is called.
	clock.Advance(time.Hour)
	l.Allow("agent-0")
	l.mu.Lock()
	n := len(l.buckets)
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("Allow after an hour left %d buckets, want 1", n)
	}
}

func TestMaxAgents(t *testing.T) {
	clock := clocktest.New(t0)
	l := New(1, 2, clock.Now) // fill time 2 s
	l.SetMaxAgents(3)
	for _, id := range []string{"a", "b", "c"} {
		if !l.Allow(id) {
			t.Fatalf("%s refused", id)
		}
	}
	// Full of buckets in use: a new agent is refused, not someone else's
	// bucket reset.
	ok, wait := l.Check("d")
	if ok || wait != 2*time.Second {
		t.Fatalf("fourth agent: %v, %v; want refused, retry after 2s", ok, wait)
	}
	if !l.Allow("a") {
		t.Fatal("existing agent refused while the cap is full")
	}
	if l.Allow("a") {
		t.Fatal("existing agent's bucket was reset")
	}
	clock.Advance(2 * time.Second)
	l.Allow("a") // b and c are now idle long enough to go
	if !l.Allow("d") {
		t.Fatal("new agent refused after idle buckets expired")
	}
	if n := l.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2 (a, d)", n)
	}
}

func TestConcurrentAllow(t *testing.T) {
	clock := clocktest.New(t0)
	l := New(1, 10, clock.Now)
	var allowed [4]atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if l.Allow(fmt.Sprint("agent-", g%4)) {
					allowed[g%4].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	// The clock did not move: each agent gets exactly its burst.
	for i := range allowed {
		if n := allowed[i].Load(); n != 10 {
			t.Fatalf("agent-%d allowed %d, want 10", i, n)
		}
	}
}
