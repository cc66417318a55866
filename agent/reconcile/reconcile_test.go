package reconcile

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/brokerclient"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/config"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/logcapture"
)

const (
	agentID = "clinic-a"
	urlA    = "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/a/dicomWeb/"
	urlB    = "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/b/dicomWeb/"
)

type harness struct {
	t      *testing.T
	clock  *agenttest.Clock
	broker *agenttest.Broker
	orth   *agenttest.Orthanc
	bc     *brokerclient.Client
	oc     *orthanc.Client
	rec    *Reconciler
	events *recorder
	logs   *logcapture.Buffer
	priv   ed25519.PrivateKey
	jitter float64
}

// recorder is the loop's Recorder in tests. A reason outside Reasons fails
// the test, so every failure path any test reaches is checked against
// the list the metrics pre-register.
type recorder struct {
	t               *testing.T
	mu              sync.Mutex
	pushes, deletes int
	resubmitted     int
	failures        map[string]int
}

func (r *recorder) Push()                   { r.mu.Lock(); r.pushes++; r.mu.Unlock() }
func (r *recorder) Delete()                 { r.mu.Lock(); r.deletes++; r.mu.Unlock() }
func (r *recorder) BrokerSuccess(time.Time) {}
func (r *recorder) OrthancReachable(bool)   {}
func (r *recorder) Resubmitted()            { r.mu.Lock(); r.resubmitted++; r.mu.Unlock() }

func (r *recorder) Failure(reason string) {
	if !slices.Contains(Reasons(), reason) {
		r.t.Errorf("failure reason %q is not in Reasons()", reason)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures[reason]++
}

// reasons returns the reasons recorded so far.
func (r *recorder) reasons() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.failures))
}

// The real client is what the loop is built for: it has every part of
// Orthanc, the jobs included, or this does not compile.
var _ Orthanc = (*orthanc.Client)(nil)

// newHarness builds the loop on a fake broker and a fake Orthanc. hosts is
// the Orthanc client's allow-list (AllowedDicomWebHosts); none: config's
// default.
func newHarness(t *testing.T, set Settings, hosts ...string) *harness {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	h := &harness{t: t, clock: agenttest.NewClock(time.Now().Truncate(time.Second)), logs: &logcapture.Buffer{}, priv: priv,
		events: &recorder{t: t, failures: map[string]int{}}}
	h.broker = agenttest.NewBroker(t, agentID, pub)
	h.broker.Set(func(b *agenttest.Broker) {
		b.Now = h.clock.Now
		b.Grants = map[string]string{"store-a": urlA, "store-b": urlB}
	})
	h.orth = agenttest.NewOrthanc(t, "agent", "pw")
	var err error
	h.bc, err = brokerclient.New(brokerclient.Options{URL: h.broker.URL, AgentID: agentID, Key: priv, Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	h.oc = h.orthancClient(hosts...)
	if set.AgentID == "" {
		set.AgentID = agentID
	}
	if set.RefreshMargin == 0 {
		set.RefreshMargin = 10 * time.Minute
	}
	if set.CheckInterval == 0 {
		set.CheckInterval = 10 * time.Second
	}
	h.rec = New(Options{
		Broker: h.bc, Orthanc: h.oc, Settings: set, Now: h.clock.Now, Recorder: h.events,
		Jitter: func() float64 { return h.jitter },
		Log:    slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	return h
}

// orthancClient is a client of the fake Orthanc that may push to hosts (none:
// config's default), as the agent builds one from its configuration.
func (h *harness) orthancClient(hosts ...string) *orthanc.Client {
	h.t.Helper()
	return mustOrthanc(h.t, orthanc.Options{URL: h.orth.URL, DicomWebRoot: "/dicom-web/", Username: "agent", Password: "pw"}, hosts...)
}

func mustOrthanc(t *testing.T, o orthanc.Options, hosts ...string) *orthanc.Client {
	t.Helper()
	if len(hosts) == 0 {
		hosts = config.DefaultAllowedDicomWebHosts
	}
	list, err := urlrule.NewAllowList(hosts)
	if err != nil {
		t.Fatal(err)
	}
	c, err := orthanc.New(o, list)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (h *harness) store(name string) StoreStatus {
	for _, s := range h.rec.Status().Stores {
		if s.Store == name {
			return s
		}
	}
	return StoreStatus{}
}

func (h *harness) issued() []string {
	_, _, issued := h.broker.Snapshot()
	return issued
}

func (h *harness) countLog(msg string) int {
	return strings.Count(h.logs.String(), `"msg":"`+msg+`"`)
}

func TestFullSyncPushesWholeDefinition(t *testing.T) {
	h := newHarness(t, Settings{ServerOptions: map[string]json.RawMessage{
		"HasDelete": json.RawMessage("true"), "ChunkedTransfers": json.RawMessage("true"), "Timeout": json.RawMessage("600"),
	}})
	ctx := context.Background()
	if err := h.rec.Once(ctx); err != nil {
		t.Fatal(err)
	}
	issued := h.issued()
	if len(issued) != 2 {
		t.Fatalf("issued %d tokens", len(issued))
	}
	exp := orthanc.FormatExpiry(h.clock.Now().Add(time.Hour))
	for name, u := range map[string]string{"store-a": urlA, "store-b": urlB} {
		e := h.orth.Entry(name)
		if e == nil {
			t.Fatalf("%s not pushed", name)
		}
		if e["Url"] != u || e["OrthancGcpAgent"] != agentID || e["TokenExpiry"] != exp ||
			e["HasDelete"] != true || e["ChunkedTransfers"] != true || e["Timeout"] != float64(600) {
			t.Errorf("%s entry %v", name, e)
		}
		bearer := h.orth.Bearer(name)
		if bearer == "" || (bearer != issued[0] && bearer != issued[1]) {
			t.Errorf("%s bearer is not an issued token", name)
		}
		st := h.store(name)
		if st.State != StateOK || !st.Pushed || st.LastPush == nil {
			t.Errorf("%s status %+v", name, st)
		}
	}
	if s := h.rec.Status(); !s.Healthy {
		t.Errorf("not healthy: %s", s.Reason)
	}
	if h.events.pushes != 2 {
		t.Errorf("recorded %d pushes, want 2", h.events.pushes)
	}
	// Logs carry each token's fingerprint under the key the broker's audit
	// log uses, and never the token.
	for _, tok := range issued {
		if !strings.Contains(h.logs.String(), `"`+wire.FingerprintKey+`":"`+wire.Fingerprint(tok)+`"`) {
			t.Errorf("no log line carries %s %s", wire.FingerprintKey, wire.Fingerprint(tok))
		}
	}
}

func TestRepushFromCacheWithoutBroker(t *testing.T) {
	h := newHarness(t, Settings{})
	ctx := context.Background()
	if err := h.rec.SyncBroker(ctx); err != nil {
		t.Fatal(err)
	}
	stores0, tokens0, _ := h.broker.Snapshot()
	before := h.orth.Bearer("store-a")

	tests := []struct {
		name   string
		damage func()
	}{
		{"orthanc restarted", func() { h.orth.Restart() }},
		{"stale expiry", func() {
			h.orth.Set(func(o *agenttest.Orthanc) { o.Servers["store-a"]["TokenExpiry"] = "2000-01-01T00:00:00Z" })
		}},
		{"stale url", func() {
			h.orth.Set(func(o *agenttest.Orthanc) { o.Servers["store-a"]["Url"] = "https://elsewhere.example/" })
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			puts, _ := h.orth.Counts("store-a")
			tc.damage()
			h.clock.Advance(10 * time.Second)
			if err := h.rec.CheckOrthanc(ctx); err != nil {
				t.Fatal(err)
			}
			if p, _ := h.orth.Counts("store-a"); p != puts+1 {
				t.Errorf("puts %d -> %d, want one re-push", puts, p)
			}
			if h.orth.Bearer("store-a") != before {
				t.Error("re-push did not use the cached token")
			}
			if e := h.orth.Entry("store-a"); e["Url"] != urlA {
				t.Errorf("url not restored: %v", e["Url"])
			}
		})
	}
	// An up-to-date entry is left alone.
	puts, _ := h.orth.Counts("store-b")
	h.rec.CheckOrthanc(ctx)
	if p, _ := h.orth.Counts("store-b"); p != puts {
		t.Error("fresh entry re-pushed")
	}
	if s, tk, _ := h.broker.Snapshot(); s != stores0 || tk != tokens0 {
		t.Errorf("CheckOrthanc called the broker (%d/%d -> %d/%d)", stores0, tokens0, s, tk)
	}
}

func TestRefreshSchedule(t *testing.T) {
	h := newHarness(t, Settings{})
	h.jitter = 0.5
	ctx := context.Background()
	h.rec.SyncBroker(ctx)
	first := h.orth.Bearer("store-a")
	st := h.store("store-a")
	wantRefresh := st.TokenExpiresAt.Add(-10*time.Minute - 30*time.Second)
	if !st.NextRefresh.Equal(wantRefresh) {
		t.Fatalf("next refresh %v, want %v", st.NextRefresh, wantRefresh)
	}
	// Before the refresh time a sync only lists stores.
	h.clock.Advance(30 * time.Minute)
	h.rec.SyncBroker(ctx)
	if _, tk, _ := h.broker.Snapshot(); tk != 1 {
		t.Errorf("token calls %d before refresh time", tk)
	}
	if h.orth.Bearer("store-a") != first {
		t.Error("token changed before refresh time")
	}
	// At the refresh time both stores are refreshed in one call and re-pushed.
	h.clock.Advance(wantRefresh.Sub(h.clock.Now()))
	h.rec.SyncBroker(ctx)
	if _, tk, _ := h.broker.Snapshot(); tk != 2 {
		t.Errorf("token calls %d at refresh time", tk)
	}
	if h.orth.Bearer("store-a") == first {
		t.Error("token not refreshed")
	}
	if got := h.broker.Asked[1]; len(got) != 2 {
		t.Errorf("asked %v", got)
	}
	if !h.rec.Status().Healthy {
		t.Error("unhealthy after refresh")
	}
	// The next broker call is no later than the stores poll interval.
	if n := h.rec.Status().Broker.NextCall; n == nil || n.Sub(h.clock.Now()) != config.DefaultStoresInterval {
		t.Errorf("next call %v", n)
	}
}

func TestShortTokenHalfLife(t *testing.T) {
	h := newHarness(t, Settings{})
	h.broker.Set(func(b *agenttest.Broker) { b.Lifetime = 4 * time.Minute })
	h.rec.SyncBroker(context.Background())
	st := h.store("store-a")
	if got := st.NextRefresh.Sub(h.clock.Now()); got != 2*time.Minute {
		t.Errorf("refresh in %v, want half the 4m life", got)
	}
}

func TestBrokerDownKeepsTokensAndBacksOff(t *testing.T) {
	h := newHarness(t, Settings{})
	ctx := context.Background()
	h.rec.SyncBroker(ctx)
	pushed := h.orth.Bearer("store-a")

	h.broker.Set(func(b *agenttest.Broker) { b.Fail = 503 })
	var delays []time.Duration
	for i := 0; i < 8; i++ {
		now := h.clock.Now()
		if err := h.rec.SyncBroker(ctx); err == nil {
			t.Fatal("sync succeeded against a failing broker")
		}
		next := *h.rec.Status().Broker.NextCall
		delays = append(delays, next.Sub(now))
		h.clock.Advance(next.Sub(now))
	}
	// jitter 0: d/2 of 1,2,4,...,60 s.
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for i := range want {
		if delays[i] != want[i] {
			t.Fatalf("delays %v, want %v", delays, want)
		}
	}
	if h.orth.Bearer("store-a") != pushed {
		t.Error("pushed token replaced or removed while the broker is down")
	}
	if !h.rec.Status().Healthy {
		t.Error("still-valid pushed tokens must keep the agent healthy")
	}
	if n := h.countLog("broker call failed; keeping pushed tokens and retrying with backoff"); n != 1 {
		t.Errorf("down logged %d times, want once", n)
	}
	// Orthanc restarts while the broker is down: re-push from the cache.
	h.orth.Restart()
	h.rec.SyncBroker(ctx)
	if h.orth.Bearer("store-a") != pushed {
		t.Error("not re-pushed from cache while the broker is down")
	}
	h.broker.Set(func(b *agenttest.Broker) { b.Fail = 0 })
	if err := h.rec.SyncBroker(ctx); err != nil {
		t.Fatal(err)
	}
	if n := h.countLog("broker reachable again"); n != 1 {
		t.Errorf("up logged %d times", n)
	}
	// Backoff reset: a new failure starts at 1 s again.
	h.broker.Set(func(b *agenttest.Broker) { b.Fail = 500 })
	now := h.clock.Now()
	h.rec.SyncBroker(ctx)
	if d := h.rec.Status().Broker.NextCall.Sub(now); d != 500*time.Millisecond {
		t.Errorf("after recovery first retry in %v", d)
	}
	// Tokens expire while the broker stays down: unhealthy, entry kept.
	h.clock.Advance(2 * time.Hour)
	h.rec.SyncBroker(ctx)
	s := h.rec.Status()
	if s.Healthy || h.store("store-a").State != StateExpired {
		t.Errorf("expired tokens: healthy=%v state=%s", s.Healthy, h.store("store-a").State)
	}
	if h.orth.Entry("store-a") == nil {
		t.Error("entry deleted while the broker is down")
	}
}

func TestUnauthenticatedWaitsTheCap(t *testing.T) {
	h := newHarness(t, Settings{})
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	bad, _ := brokerclient.New(brokerclient.Options{URL: h.broker.URL, AgentID: agentID, Key: other, Now: h.clock.Now})
	h.rec.broker = bad
	now := h.clock.Now()
	err := h.rec.SyncBroker(context.Background())
	if brokerclient.Reason(err) != brokerclient.ReasonUnauthenticated {
		t.Fatalf("err %v", err)
	}
	if d := h.rec.Status().Broker.NextCall.Sub(now); d != BackoffMax/2 {
		t.Errorf("retry in %v, want the capped delay", d)
	}
	if !strings.Contains(h.logs.String(), `"level":"ERROR"`) {
		t.Error("a refused agent key should be logged as an error")
	}
}

func TestRevokedStoresDeleted(t *testing.T) {
	tests := []struct {
		name   string
		revoke func(b *agenttest.Broker)
	}{
		{"absent from store list", func(b *agenttest.Broker) { delete(b.Grants, "store-b") }},
		{"forbidden item", func(b *agenttest.Broker) {
			b.StoreErrors["store-b"] = agenttest.StoreError{Code: wire.CodeForbidden, Message: "no"}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Settings{})
			ctx := context.Background()
			h.rec.SyncBroker(ctx)
			if h.orth.Entry("store-b") == nil {
				t.Fatal("store-b not pushed")
			}
			h.broker.Set(tc.revoke)
			h.clock.Advance(time.Hour) // refresh due, so the forbidden item is seen
			h.rec.SyncBroker(ctx)
			if h.orth.Entry("store-b") != nil {
				t.Error("revoked store still in Orthanc")
			}
			if _, del := h.orth.Counts("store-b"); del != 1 || h.events.deletes != 1 {
				t.Errorf("deletes %d, recorded %d", del, h.events.deletes)
			}
			if h.orth.Entry("store-a") == nil {
				t.Error("granted store deleted")
			}
			// Deleting again (already gone) is not attempted or is harmless.
			h.rec.CheckOrthanc(ctx)
			if _, del := h.orth.Counts("store-b"); del != 1 {
				t.Errorf("deletes %d after second check", del)
			}
		})
	}
}

func TestUnmanagedEntriesUntouched(t *testing.T) {
	h := newHarness(t, Settings{})
	configEntry := map[string]any{"Url": "https://config.example/", "HttpHeaders": map[string]any{"Authorization": "Bearer theirs"}}
	otherAgent := map[string]any{"Url": "https://x/", "OrthancGcpAgent": "clinic-b", "TokenExpiry": "2000-01-01T00:00:00Z"}
	h.orth.Set(func(o *agenttest.Orthanc) {
		o.Servers["from-config"] = configEntry
		o.Servers["store-a"] = map[string]any{"Url": "https://hand-made.example/"} // same name, no marker
		o.Servers["other-agent"] = otherAgent
	})
	ctx := context.Background()
	err := h.rec.Once(ctx)
	if err == nil || !strings.Contains(err.Error(), "store-a: conflict") {
		t.Errorf("once: %v", err)
	}
	if e := h.orth.Entry("store-a"); e["Url"] != "https://hand-made.example/" || e["OrthancGcpAgent"] != nil {
		t.Errorf("unmanaged same-name entry touched: %v", e)
	}
	for name := range map[string]bool{"from-config": true, "store-a": true, "other-agent": true} {
		if p, d := h.orth.Counts(name); p != 0 || d != 0 {
			t.Errorf("%s: puts %d deletes %d", name, p, d)
		}
	}
	if h.orth.Bearer("from-config") != "theirs" || h.orth.Entry("other-agent")["OrthancGcpAgent"] != "clinic-b" {
		t.Error("unmanaged entries changed")
	}
	if st := h.store("store-a"); st.State != StateConflict {
		t.Errorf("store-a state %s", st.State)
	}
	if h.store("store-b").State != StateOK {
		t.Error("store-b should still be served")
	}
	if h.rec.Status().Healthy {
		t.Error("a conflict must make the agent unhealthy")
	}
	// Once the operator removes the hand-made entry, the agent takes over.
	h.orth.Set(func(o *agenttest.Orthanc) { delete(o.Servers, "store-a") })
	h.rec.CheckOrthanc(ctx)
	if h.store("store-a").State != StateOK || h.orth.Entry("store-a")["OrthancGcpAgent"] != agentID {
		t.Error("not pushed after the conflict was resolved")
	}
}

func TestAccountsFilter(t *testing.T) {
	h := newHarness(t, Settings{Accounts: []string{"store-a", "store-c"}})
	ctx := context.Background()
	// A stale managed entry for a store not in Accounts is deleted.
	h.orth.Set(func(o *agenttest.Orthanc) {
		o.Servers["store-b"] = map[string]any{"Url": urlB, "OrthancGcpAgent": agentID}
	})
	err := h.rec.Once(ctx)
	if err == nil || !strings.Contains(err.Error(), "store-c: not_granted") {
		t.Errorf("once: %v", err)
	}
	if h.orth.Entry("store-a") == nil || h.orth.Entry("store-b") != nil || h.orth.Entry("store-c") != nil {
		t.Error("wrong entries in Orthanc")
	}
	if got := h.broker.Asked[0]; len(got) != 1 || got[0] != "store-a" {
		t.Errorf("asked %v, want only store-a", got)
	}
	if st := h.store("store-c"); st.State != StateNotGranted || st.LastError == "" {
		t.Errorf("store-c %+v", st)
	}
	// The grant arrives: next sync picks it up.
	h.broker.Set(func(b *agenttest.Broker) { b.Grants["store-c"] = urlB })
	if err := h.rec.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if h.orth.Entry("store-c") == nil {
		t.Error("newly granted store not pushed")
	}
}

func TestPerStoreErrorKeepsCacheAndRetries(t *testing.T) {
	h := newHarness(t, Settings{})
	ctx := context.Background()
	h.rec.SyncBroker(ctx)
	old := h.orth.Bearer("store-a")
	h.broker.Set(func(b *agenttest.Broker) {
		b.StoreErrors["store-a"] = agenttest.StoreError{Code: wire.CodeUpstream, Message: "Google answered 500"}
	})
	h.clock.Advance(51 * time.Minute)
	now := h.clock.Now()
	if err := h.rec.SyncBroker(ctx); err == nil {
		t.Error("per-store failure not reported")
	}
	st := h.store("store-a")
	if h.orth.Bearer("store-a") != old || st.State != StateOK || !strings.Contains(st.LastError, "upstream") {
		t.Errorf("store-a %+v", st)
	}
	if h.orth.Bearer("store-b") == old {
		t.Error("store-b not refreshed")
	}
	if d := h.rec.Status().Broker.NextCall.Sub(now); d != 500*time.Millisecond {
		t.Errorf("retry in %v", d)
	}
	h.rec.SyncBroker(ctx) // same error again: logged once
	if n := h.countLog("broker could not issue a token for store; keeping the cached one"); n != 1 {
		t.Errorf("store error logged %d times", n)
	}
}

func TestOrthancDown(t *testing.T) {
	h := newHarness(t, Settings{})
	ctx := context.Background()
	h.rec.SyncBroker(ctx)
	h.orth.Set(func(o *agenttest.Orthanc) { o.Down = true })
	if err := h.rec.CheckOrthanc(ctx); err == nil {
		t.Fatal("no error")
	}
	s := h.rec.Status()
	if s.Healthy || s.Orthanc.Reachable || s.Orthanc.LastError == "" {
		t.Errorf("status %+v", s)
	}
	h.orth.Set(func(o *agenttest.Orthanc) { o.Down = false; o.Servers = map[string]map[string]any{} })
	h.rec.CheckOrthanc(ctx)
	if !h.rec.Status().Healthy || h.orth.Entry("store-a") == nil {
		t.Error("not recovered after Orthanc came back empty")
	}
	if h.countLog("Orthanc reachable again") != 1 {
		t.Error("recovery not logged")
	}
}

func TestRunLoopSchedulesOverHours(t *testing.T) {
	h := newHarness(t, Settings{})
	end := h.clock.Now().Add(2 * time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	restartAt := h.clock.Now().Add(30 * time.Minute)
	var restartedAt, backAt time.Time
	// Simulated time: every wait advances the clock at once. At 30 min
	// Orthanc "restarts" and forgets the entries.
	h.rec.after = func(d time.Duration) <-chan time.Time {
		now := h.clock.Now()
		if !now.Before(end) {
			cancel()
		}
		if restartedAt.IsZero() && !now.Before(restartAt) {
			h.orth.Restart()
			restartedAt = now
		} else if !restartedAt.IsZero() && backAt.IsZero() && h.orth.Entry("store-a") != nil {
			backAt = now
		}
		h.clock.Advance(d)
		ch := make(chan time.Time, 1)
		ch <- h.clock.Now()
		return ch
	}
	done := make(chan error)
	go func() { done <- h.rec.Run(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop")
	}
	if backAt.IsZero() || backAt.Sub(restartedAt) > 10*time.Second {
		t.Errorf("entries back %v after the Orthanc restart, want within CheckInterval", backAt.Sub(restartedAt))
	}
	storesCalls, tokenCalls, issued := h.broker.Snapshot()
	// 1 h tokens refreshed 10 min before expiry: at 0, ~50 and ~100 min.
	if tokenCalls != 3 || len(issued) != 6 {
		t.Errorf("token calls %d, issued %d; want 3 and 6", tokenCalls, len(issued))
	}
	// Store list polled about once a minute.
	if storesCalls < 110 || storesCalls > 125 {
		t.Errorf("stores calls %d over 2 h", storesCalls)
	}
	if !h.rec.Status().Healthy {
		t.Errorf("unhealthy at the end: %s", h.rec.Status().Reason)
	}
}

func TestRunReloadForcesRepush(t *testing.T) {
	h := newHarness(t, Settings{})
	ctx, cancel := context.WithCancel(context.Background())
	step := make(chan struct{})
	h.rec.after = func(d time.Duration) <-chan time.Time {
		step <- struct{}{}
		return make(chan time.Time) // only reload or cancel wake the loop
	}
	done := make(chan error)
	go func() { done <- h.rec.Run(ctx) }()
	<-step // first sync done
	if p, _ := h.orth.Counts("store-a"); p != 1 {
		t.Fatalf("puts %d", p)
	}
	h.rec.Reload(Update{Broker: h.bc, Orthanc: h.oc, Settings: Settings{
		AgentID: agentID, RefreshMargin: 10 * time.Minute, CheckInterval: 10 * time.Second,
		ServerOptions: map[string]json.RawMessage{"HasDelete": json.RawMessage("false")},
	}})
	<-step // reload applied and synced
	if p, _ := h.orth.Counts("store-a"); p != 2 {
		t.Errorf("puts %d after reload, want a forced re-push", p)
	}
	if e := h.orth.Entry("store-a"); e["HasDelete"] != false {
		t.Errorf("new options not pushed: %v", e)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestFailureReasons provokes every failure the loop records: each reason
// it produces is in Reasons (the recorder checks that too), and each word
// of Reasons can be produced.
func TestFailureReasons(t *testing.T) {
	closedURL := func() string {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		return srv.URL
	}
	brokerAt := func(h *harness, url string) {
		bc, err := brokerclient.New(brokerclient.Options{URL: url, AgentID: agentID, Key: h.priv, Now: h.clock.Now})
		if err != nil {
			h.t.Fatal(err)
		}
		h.rec.broker = bc
	}
	failBroker := func(status int) func(*testing.T, *harness) {
		return func(_ *testing.T, h *harness) { h.broker.Set(func(b *agenttest.Broker) { b.Fail = status }) }
	}
	tests := []struct {
		reason string
		setup  func(*testing.T, *harness)
	}{
		{brokerclient.ReasonTransport, func(t *testing.T, h *harness) { brokerAt(h, closedURL()) }},
		{brokerclient.ReasonServerError, failBroker(http.StatusServiceUnavailable)},
		{brokerclient.ReasonRateLimited, failBroker(http.StatusTooManyRequests)},
		{brokerclient.ReasonUnauthenticated, failBroker(http.StatusUnauthorized)},
		{brokerclient.ReasonForbidden, failBroker(http.StatusForbidden)},
		{brokerclient.ReasonRejected, failBroker(http.StatusBadRequest)},
		{brokerclient.ReasonBadResponse, func(t *testing.T, h *harness) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("<html>")) }))
			t.Cleanup(srv.Close)
			brokerAt(h, srv.URL)
		}},
		{ReasonStoreError, func(_ *testing.T, h *harness) {
			h.broker.Set(func(b *agenttest.Broker) {
				b.StoreErrors["store-a"] = agenttest.StoreError{Code: wire.CodeUpstream, Message: "Google answered 500"}
			})
		}},
		{ReasonOrthancUnreachable, func(t *testing.T, h *harness) {
			h.rec.orth = mustOrthanc(t, orthanc.Options{URL: closedURL(), DicomWebRoot: "/dicom-web/"})
		}},
		{ReasonOrthancError, func(_ *testing.T, h *harness) { h.orth.Set(func(o *agenttest.Orthanc) { o.Down = true }) }},
		{ReasonNameConflict, func(_ *testing.T, h *harness) {
			h.orth.Set(func(o *agenttest.Orthanc) { o.Servers["store-a"] = map[string]any{"Url": "https://hand-made.example/"} })
		}},
		{ReasonHostNotAllowed, func(_ *testing.T, h *harness) {
			h.broker.Set(func(b *agenttest.Broker) { b.Grants["store-a"] = "https://evil.example/dicomWeb/" })
		}},
		{ReasonBadStoreName, func(_ *testing.T, h *harness) {
			h.broker.Set(func(b *agenttest.Broker) { b.Grants["../../peers/evil"] = urlA })
		}},
	}
	produced := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.reason, func(t *testing.T) {
			h := newHarness(t, Settings{})
			tc.setup(t, h)
			h.rec.SyncBroker(context.Background())
			got := h.events.reasons()
			if !slices.Contains(got, tc.reason) {
				t.Errorf("recorded %v, want %s", got, tc.reason)
			}
			for _, r := range got {
				produced[r] = true
			}
		})
	}
	for _, r := range Reasons() {
		if !produced[r] {
			t.Errorf("Reasons lists %q, which no test case produced", r)
		}
	}
}

// closeCounter is a Broker that counts CloseIdleConnections calls.
type closeCounter struct {
	Broker
	closed int
}

func (c *closeCounter) CloseIdleConnections() { c.closed++ }

func TestReloadClosesReplacedBrokerConnections(t *testing.T) {
	h := newHarness(t, Settings{})
	old := &closeCounter{Broker: h.bc}
	h.rec.broker = old
	h.rec.apply(Update{Broker: h.bc, Orthanc: h.oc, Settings: Settings{AgentID: agentID}})
	if old.closed != 1 {
		t.Errorf("replaced broker client closed %d times, want 1", old.closed)
	}
	if h.rec.broker != Broker(h.bc) {
		t.Error("new broker client not in use")
	}
	if h.rec.set.StoresInterval != config.DefaultStoresInterval || h.rec.set.CheckInterval != config.DefaultCheckInterval ||
		h.rec.set.RefreshMargin != config.DefaultRefreshMargin {
		t.Errorf("zero durations of a reload not given config's defaults: %+v", h.rec.set)
	}
}
