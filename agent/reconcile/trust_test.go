package reconcile

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/agenttest"
)

const (
	evilURL     = "https://evil.example/v1/projects/p/locations/l/datasets/d/dicomStores/b/dicomWeb/"
	regionalURL = "https://healthcare.europe-west4.rep.googleapis.com/v1/projects/p/locations/europe-west4/datasets/d/dicomStores/b/dicomWeb/"
)

// assertNoToken fails if any issued token is in the logs or the status.
func (h *harness) assertNoToken() {
	h.t.Helper()
	status := mustJSONText(h.t, h.rec.Status())
	for _, tok := range h.issued() {
		if strings.Contains(h.logs.String(), tok) || strings.Contains(status, tok) {
			h.t.Fatal("a token is in the logs or the status")
		}
	}
}

// TestHostNotAllowedNeverPushed: a token whose dicomweb_url is not https
// to an AllowedDicomWebHosts host (or http to a loopback host listed with
// its port) is never pushed; the store is in the error state naming the
// host, the failure is counted and the agent is unhealthy.
func TestHostNotAllowedNeverPushed(t *testing.T) {
	tests := []struct {
		name     string
		allowed  []string // the Orthanc client's AllowedDicomWebHosts; nil: the default
		urlB     string   // store-b in the store list
		tokenB   string   // store-b's token URL when it differs from urlB
		wantHost string   // "": pushed; else refused, naming this host
		aRefused bool     // store-a (the global endpoint) is refused too
	}{
		{name: "default allows the global endpoint", urlB: urlB},
		{name: "other https host", urlB: evilURL, wantHost: "evil.example:443"},
		{name: "look-alike host", urlB: "https://healthcare.googleapis.com.evil.example/v1/dicomWeb/",
			wantHost: "healthcare.googleapis.com.evil.example:443"},
		{name: "allowed host on another port", urlB: "https://healthcare.googleapis.com:8443/v1/dicomWeb/",
			wantHost: "healthcare.googleapis.com:8443"},
		{name: "token url differs from the store list", urlB: urlB, tokenB: evilURL, wantHost: "evil.example:443"},
		{name: "http loopback not listed", urlB: "http://127.0.0.1:9/dicomWeb/", wantHost: "127.0.0.1:9"},
		{name: "http loopback listed without its port", allowed: []string{"healthcare.googleapis.com", "127.0.0.1"},
			urlB: "http://127.0.0.1:9/dicomWeb/", wantHost: "127.0.0.1:9"},
		{name: "http loopback listed with its port", allowed: []string{"healthcare.googleapis.com", "127.0.0.1:9"},
			urlB: "http://127.0.0.1:9/dicomWeb/"},
		{name: "host compared case-insensitively", urlB: "https://HealthCare.GoogleAPIs.com/v1/x/dicomWeb/"},
		{name: "regional endpoint added", allowed: []string{"healthcare.googleapis.com", "healthcare.europe-west4.rep.googleapis.com"},
			urlB: regionalURL},
		{name: "configured list replaces the default", allowed: []string{"healthcare.europe-west4.rep.googleapis.com"},
			urlB: regionalURL, aRefused: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Settings{}, tc.allowed...)
			h.broker.Set(func(b *agenttest.Broker) {
				b.Grants["store-b"] = tc.urlB
				if tc.tokenB != "" {
					b.TokenURLs["store-b"] = tc.tokenB
				}
			})
			err := h.rec.Once(context.Background())
			s := h.rec.Status()
			if tc.wantHost == "" && !tc.aRefused {
				if err != nil || !s.Healthy {
					t.Fatalf("once: %v, healthy %v", err, s.Healthy)
				}
				if e := h.orth.Entry("store-b"); e == nil || e["Url"] != tc.urlB {
					t.Fatalf("store-b not pushed: %v", e)
				}
				return
			}
			if err == nil || s.Healthy {
				t.Fatalf("once: %v, healthy %v; want a failure and unhealthy", err, s.Healthy)
			}
			if tc.wantHost != "" {
				if p, d := h.orth.Counts("store-b"); p != 0 || d != 0 || h.orth.Entry("store-b") != nil {
					t.Fatalf("store-b touched in Orthanc: puts %d deletes %d", p, d)
				}
				st := h.store("store-b")
				if st.State != StateError || st.Pushed || !strings.Contains(st.LastError, `"`+tc.wantHost+`"`) ||
					!strings.Contains(st.LastError, "AllowedDicomWebHosts") {
					t.Errorf("store-b status %+v; want error naming %s", st, tc.wantHost)
				}
				if !strings.Contains(err.Error(), tc.wantHost) {
					t.Errorf("once error %q does not name the host", err)
				}
			}
			if tc.aRefused != (h.orth.Entry("store-a") == nil) {
				t.Errorf("store-a pushed=%v, want refused=%v", h.orth.Entry("store-a") != nil, tc.aRefused)
			}
			if h.events.failures[ReasonHostNotAllowed] == 0 {
				t.Errorf("failures %v lack %s", h.events.failures, ReasonHostNotAllowed)
			}
			if tc.wantHost != "" && !strings.Contains(h.logs.String(), `"host":"`+tc.wantHost+`"`) {
				t.Errorf("no log line names the host:\n%s", h.logs.String())
			}
			h.assertNoToken()
		})
	}
}

// TestHostNotAllowedLeavesEarlierEntry: when a store's URL stops being
// allowed (the broker changes it, or a reload narrows the list), the entry
// pushed earlier is neither overwritten nor deleted, nothing is pushed for
// the store even when Orthanc loses the entry, and the agent recovers as
// soon as the URL is allowed again.
func TestHostNotAllowedLeavesEarlierEntry(t *testing.T) {
	both := []string{"healthcare.googleapis.com", "healthcare.europe-west4.rep.googleapis.com"}
	tests := []struct {
		name             string
		refuse, allowAgn func(h *harness)
		host             string
	}{
		{"store list url changes",
			func(h *harness) { h.broker.Set(func(b *agenttest.Broker) { b.Grants["store-b"] = evilURL }) },
			func(h *harness) { h.broker.Set(func(b *agenttest.Broker) { b.Grants["store-b"] = regionalURL }) },
			"evil.example:443"},
		{"token url changes",
			func(h *harness) { h.broker.Set(func(b *agenttest.Broker) { b.TokenURLs["store-b"] = evilURL }) },
			func(h *harness) { h.broker.Set(func(b *agenttest.Broker) { delete(b.TokenURLs, "store-b") }) },
			"evil.example:443"},
		{"reload narrows the list",
			func(h *harness) {
				h.rec.apply(Update{Broker: h.bc, Orthanc: h.orthancClient("healthcare.googleapis.com"), Settings: Settings{AgentID: agentID}})
			},
			func(h *harness) {
				h.rec.apply(Update{Broker: h.bc, Orthanc: h.orthancClient(both...), Settings: Settings{AgentID: agentID}})
			},
			"healthcare.europe-west4.rep.googleapis.com:443"},
		// The client's own gate (PutServer) refuses before the loop has
		// asked the new list: the same refusal, and nothing is sent.
		{"reload narrows the list, seen first by the push",
			func(h *harness) {
				puts, _ := h.orth.Counts("store-b")
				h.rec.apply(Update{Broker: h.bc, Orthanc: h.orthancClient("healthcare.googleapis.com"), Settings: Settings{AgentID: agentID}})
				if err := h.rec.CheckOrthanc(context.Background()); err != nil {
					h.t.Errorf("check after the reload: %v", err)
				}
				if p, _ := h.orth.Counts("store-b"); p != puts || !strings.Contains(h.store("store-b").LastError, ReasonHostNotAllowed) {
					h.t.Errorf("push after the reload: puts %d -> %d, store-b %+v", puts, p, h.store("store-b"))
				}
				if h.events.failures[ReasonOrthancError] != 0 {
					h.t.Errorf("the client's refusal counted as an Orthanc failure: %v", h.events.failures)
				}
			},
			func(h *harness) {
				h.rec.apply(Update{Broker: h.bc, Orthanc: h.orthancClient(both...), Settings: Settings{AgentID: agentID}})
			},
			"healthcare.europe-west4.rep.googleapis.com:443"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Settings{}, both...)
			h.broker.Set(func(b *agenttest.Broker) { b.Grants["store-b"] = regionalURL })
			ctx := context.Background()
			if err := h.rec.Once(ctx); err != nil {
				t.Fatal(err)
			}
			before, bearer := h.orth.Entry("store-b"), h.orth.Bearer("store-b")
			puts, _ := h.orth.Counts("store-b")

			tc.refuse(h)
			h.clock.Advance(51 * time.Minute) // the refresh is due
			err := h.rec.SyncBroker(ctx)
			_ = h.rec.CheckOrthanc(ctx)
			if p, d := h.orth.Counts("store-b"); p != puts || d != 0 {
				t.Fatalf("store-b puts %d -> %d, deletes %d: the earlier entry was touched (sync: %v)", puts, p, d, err)
			}
			if h.orth.Bearer("store-b") != bearer || mustJSONText(t, h.orth.Entry("store-b")) != mustJSONText(t, before) {
				t.Fatal("the earlier entry was changed")
			}
			if h.orth.Bearer("store-a") == "" {
				t.Error("store-a not served")
			}
			st := h.store("store-b")
			if st.State != StateError || st.Pushed || !strings.Contains(st.LastError, tc.host) {
				t.Errorf("store-b %+v; want error naming %s", st, tc.host)
			}
			if s := h.rec.Status(); s.Healthy {
				t.Error("healthy with a refused store")
			}
			// Checks go on without touching anything (a forced re-push
			// after a reload does not stay pending for the refused store).
			putsA, _ := h.orth.Counts("store-a")
			for range 3 {
				h.clock.Advance(10 * time.Second)
				_ = h.rec.CheckOrthanc(ctx)
			}
			if p, _ := h.orth.Counts("store-a"); p != putsA {
				t.Errorf("store-a re-pushed %d times by checks while store-b is refused", p-putsA)
			}
			if p, _ := h.orth.Counts("store-b"); p != puts {
				t.Error("store-b pushed by a check")
			}
			// Orthanc forgets the entry: the refused store is still not pushed.
			h.orth.Restart()
			h.clock.Advance(10 * time.Second)
			_ = h.rec.CheckOrthanc(ctx)
			if h.orth.Entry("store-b") != nil || h.orth.Entry("store-a") == nil {
				t.Errorf("after an Orthanc restart: store-b %v, store-a %v", h.orth.Entry("store-b"), h.orth.Entry("store-a"))
			}
			h.assertNoToken()

			tc.allowAgn(h)
			h.clock.Advance(time.Minute)
			if err := h.rec.Once(ctx); err != nil {
				t.Fatalf("not recovered: %v", err)
			}
			if h.orth.Entry("store-b")["Url"] != regionalURL || h.store("store-b").State != StateOK {
				t.Errorf("store-b after recovery: %v %+v", h.orth.Entry("store-b"), h.store("store-b"))
			}
		})
	}
}

// TestBadStoreNamesNeverReachOrthanc: a store name outside the rule
// ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$ (from the broker or a hand-built
// Accounts) is refused: it is never asked for, never in an Orthanc
// request, shown as an error without a server name, counted, and keeps
// the agent unhealthy. The other stores are served.
func TestBadStoreNamesNeverReachOrthanc(t *testing.T) {
	names := []string{"../../peers/evil", "..", ".", "a/b", "..%2Fpeers", "a b", "-x", ".x", "_x",
		strings.Repeat("a", 64), "x\n", "é", "store-a/../../peers/evil"}
	for _, fromAccounts := range []bool{false, true} {
		for _, bad := range names {
			name := "broker/" + bad
			if fromAccounts {
				name = "accounts/" + bad
			}
			t.Run(name, func(t *testing.T) {
				set := Settings{}
				if fromAccounts {
					set.Accounts = []string{"store-a", "store-b", bad}
				}
				h := newHarness(t, set)
				h.broker.Set(func(b *agenttest.Broker) { b.Grants[bad] = urlB })
				ctx := context.Background()
				err := h.rec.Once(ctx)
				if err == nil {
					t.Fatal("once succeeded with a refused store name")
				}
				for _, req := range h.orth.RequestLog() {
					if !slices.Contains([]string{"GET /dicom-web/servers", "PUT /dicom-web/servers/store-a", "PUT /dicom-web/servers/store-b"}, req) {
						t.Errorf("Orthanc request %q", req)
					}
				}
				for _, asked := range h.broker.Asked {
					if slices.Contains(asked, bad) {
						t.Errorf("asked the broker for %q", bad)
					}
				}
				s := h.rec.Status()
				if s.Healthy {
					t.Error("healthy with a refused store name")
				}
				var found bool
				for _, st := range s.Stores {
					switch st.Store {
					case "store-a", "store-b":
						if st.State != StateOK {
							t.Errorf("%s %+v", st.Store, st)
						}
					default:
						found = true
						if st.State != StateError || st.Server != "" || st.Pushed || !strings.Contains(st.LastError, ReasonBadStoreName) {
							t.Errorf("refused name shown as %+v", st)
						}
						if strings.ContainsAny(st.Store, "\n") {
							t.Errorf("status store %q has a control character", st.Store)
						}
					}
				}
				if !found || h.events.failures[ReasonBadStoreName] == 0 {
					t.Errorf("refused name not shown (%v) or not counted (%v)", found, h.events.failures)
				}
				if !fromAccounts {
					// The broker drops the name: healthy again.
					h.broker.Set(func(b *agenttest.Broker) { delete(b.Grants, bad) })
					if err := h.rec.Once(ctx); err != nil {
						t.Errorf("after the name went away: %v", err)
					}
				}
			})
		}
	}
}

// TestManagedEntryWithBadNameNotDeleted: an entry carrying this agent's
// marker whose name fails the rule (never pushed by this agent) is not
// deleted: the delete path builds no URL from such a name either.
func TestManagedEntryWithBadNameNotDeleted(t *testing.T) {
	h := newHarness(t, Settings{})
	h.orth.Set(func(o *agenttest.Orthanc) {
		o.Servers["a b"] = map[string]any{"Url": urlA, orthanc.MarkerProperty: agentID}
		o.Servers["gone"] = map[string]any{"Url": urlA, orthanc.MarkerProperty: agentID}
	})
	if err := h.rec.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if h.orth.Entry("a b") == nil || h.orth.Entry("gone") != nil {
		t.Errorf("entries after sync: %q kept=%v, %q deleted=%v", "a b", h.orth.Entry("a b") != nil, "gone", h.orth.Entry("gone") == nil)
	}
}

func mustJSONText(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
