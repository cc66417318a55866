package api

import (
	"crypto/ed25519"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/agentauth"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/ratelimit"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
)

// sitePolicy grants store-a to bound (AllowedSourceRanges 203.0.113.0/24
// and 2001:db8:cafe::/48) and to free (no ranges).
func sitePolicy(t testing.TB, bound, free agentSpec) *policy.Policy {
	t.Helper()
	line := func(a agentSpec) string { return agentkey.FormatPublicKey(a.priv.Public().(ed25519.PublicKey)) }
	doc, _ := json.Marshal(map[string]any{
		"Audience": testAudience,
		"Accounts": map[string]any{"store-a": map[string]any{"Project": "p", "Location": "l", "Dataset": "d", "DicomStore": "a", "ServiceAccountSecret": "/nonexistent/a.json"}},
		"Agents": map[string]any{
			bound.id: map[string]any{"PublicKey": line(bound), "Accounts": []string{"store-a"}, "AllowedSourceRanges": []string{"203.0.113.0/24", "2001:db8:cafe::/48"}},
			free.id:  map[string]any{"PublicKey": line(free), "Accounts": []string{"store-a"}},
		},
	})
	p, err := policy.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAllowedSourceRanges(t *testing.T) {
	bound, free := newSpec(t, "clinic-a", false), newSpec(t, "clinic-free", false)
	p := sitePolicy(t, bound, free)
	const outside = "192.0.2.66"
	tests := []struct {
		name string
		who  agentSpec
		hops int
		peer string
		xff  []string
		want int
	}{
		{"peer inside", bound, 0, "203.0.113.7:5000", nil, 200},
		{"peer outside", bound, 0, outside + ":5000", nil, 401},
		{"peer outside, header ignored without hops", bound, 0, outside + ":5000", []string{"203.0.113.7"}, 401},
		{"IPv6 peer inside", bound, 0, "[2001:db8:cafe::7]:5000", nil, 200},
		{"IPv4-mapped peer inside", bound, 0, "[::ffff:203.0.113.7]:5000", nil, 200},
		{"one hop, client inside", bound, 1, "169.254.1.1:30000", []string{"203.0.113.7"}, 200},
		{"one hop, client outside", bound, 1, "169.254.1.1:30000", []string{outside}, 401},
		{"one hop, spoofed inside address on the left", bound, 1, "169.254.1.1:30000", []string{"203.0.113.7, " + outside}, 401},
		{"one hop, spoofed header line", bound, 1, "169.254.1.1:30000", []string{"203.0.113.7", outside}, 401},
		{"one hop, outside entry on the left ignored", bound, 1, "169.254.1.1:30000", []string{outside + ", 203.0.113.7"}, 200},
		{"one hop, IPv6 client inside", bound, 1, "169.254.1.1:30000", []string{"2001:db8:cafe::9"}, 200},
		{"one hop, no header", bound, 1, "203.0.113.7:5000", nil, 401},
		{"one hop, rightmost not an address", bound, 1, "169.254.1.1:30000", []string{"203.0.113.7, unknown"}, 401},
		{"two hops, client inside", bound, 2, "169.254.1.1:30000", []string{outside + ", 203.0.113.7, 34.120.1.1"}, 200},
		{"two hops, client outside", bound, 2, "169.254.1.1:30000", []string{"203.0.113.7, " + outside + ", 34.120.1.1"}, 401},
		{"two hops, chain too short", bound, 2, "169.254.1.1:30000", []string{"203.0.113.7"}, 401},
		{"unbound agent, anywhere", free, 0, outside + ":5000", nil, 200},
		{"unbound agent, no address to be had", free, 2, outside + ":5000", nil, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.srv.Policy = func() *policy.Policy { return p }
			h.srv.TrustedProxyHops = tt.hops
			r := newTokenRequest(tt.who.header(t, time.Now()), `{"stores":["store-a"]}`)
			r.RemoteAddr = tt.peer
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			rec := httptest.NewRecorder()
			h.srv.ServeHTTP(rec, r)
			if rec.Code != tt.want {
				t.Fatalf("%d, want %d: %s", rec.Code, tt.want, rec.Body)
			}
		})
	}
}

// A request from outside an agent's ranges gets the very answer of any
// other authentication failure, and the log line says why and from where.
func TestSourceRefusalLooksLikeAnyAuthFailure(t *testing.T) {
	bound, free := newSpec(t, "clinic-a", false), newSpec(t, "clinic-free", false)
	forger := newSpec(t, "clinic-a", false)
	p := sitePolicy(t, bound, free)
	h := newHarness(t, nil)
	h.srv.Policy = func() *policy.Policy { return p }
	h.srv.TrustedProxyHops = 1

	answer := func(hdr, xff string) string {
		r := newTokenRequest(hdr, `{}`)
		r.RemoteAddr = "169.254.1.1:30000"
		r.Header.Set("X-Forwarded-For", xff)
		rec := httptest.NewRecorder()
		h.srv.ServeHTTP(rec, r)
		if rec.Code != 401 {
			t.Fatalf("%d: %s", rec.Code, rec.Body)
		}
		return rec.Body.String() + "|" + rec.Header().Get("WWW-Authenticate") + "|" + rec.Header().Get("Content-Type")
	}
	forged := answer(forger.header(t, time.Now()), "203.0.113.7")
	hdr := bound.header(t, time.Now())
	elsewhere := answer(hdr, "203.0.113.7\x1b[2J, 192.0.2.66")
	if forged != elsewhere {
		t.Errorf("source refusal %q differs from a bad signature's %q", elsewhere, forged)
	}

	var line map[string]any
	for _, l := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if m["reason"] == agentauth.ReasonSourceNotAllowed {
			line = m
		}
	}
	if line == nil {
		t.Fatalf("no source_not_allowed line:\n%s", h.logs)
	}
	if line["message"] != "agent authentication failed" || line["claimed_agent"] != "clinic-a" || line["client"] != "192.0.2.66" ||
		line["path"] != "/v1/tokens" || line["severity"] != "WARNING" {
		t.Errorf("log line %v", line)
	}
	if fwd, _ := line["forwarded_for"].(string); !strings.HasSuffix(fwd, ", 192.0.2.66") || strings.ContainsRune(fwd, 0x1b) {
		t.Errorf("forwarded_for %q: want the chain's right end, control characters blanked", fwd)
	}
	if strings.Contains(h.logs.String(), strings.TrimPrefix(hdr, "Bearer ")) {
		t.Error("the assertion is in the log")
	}
}

// A refused request spends neither the agent's rate limit nor its replay
// share, and does not burn the jti: the agent itself can still use the
// very assertion (as if a copy had been tried from elsewhere first).
func TestSourceRefusalSpendsNothing(t *testing.T) {
	bound, free := newSpec(t, "clinic-a", false), newSpec(t, "clinic-free", false)
	p := sitePolicy(t, bound, free)
	now := time.Now()
	v := agentauth.NewVerifier(agentauth.Options{Now: func() time.Time { return now }})
	h := newHarness(t, nil)
	h.srv.Policy = func() *policy.Policy { return p }
	h.srv.Auth = v
	h.srv.Limiter = ratelimit.New(0.001, 1, func() time.Time { return now }) // one request, no refill
	captured := bound.header(t, now)
	send := func(peer string) int {
		r := newTokenRequest(captured, `{"stores":["store-a"]}`)
		r.RemoteAddr = peer
		rec := httptest.NewRecorder()
		h.srv.ServeHTTP(rec, r)
		return rec.Code
	}
	for i := range 5 {
		if got := send("192.0.2.66:5000"); got != 401 {
			t.Fatalf("from outside, try %d: %d", i, got)
		}
	}
	if n := v.ReplayLen(); n != 0 {
		t.Fatalf("replay cache holds %d jtis of refused requests", n)
	}
	for i, want := range []int{200, 401} { // first use, then a replay
		if got := send("203.0.113.7:5000"); got != want {
			t.Fatalf("from inside, try %d: %d, want %d", i, got, want)
		}
	}
}

// The audit line's client is the address the broker judged the request
// by, not the proxy on the TCP connection.
func TestAuditClientIsTheClientAddress(t *testing.T) {
	bound, free := newSpec(t, "clinic-a", false), newSpec(t, "clinic-free", false)
	p := sitePolicy(t, bound, free)
	for _, tt := range []struct {
		who  agentSpec
		hops int
		xff  string
		want string
	}{
		{bound, 1, "192.0.2.66, 203.0.113.7", "203.0.113.7"},
		{free, 0, "203.0.113.7", "169.254.1.1"},
		{free, 2, "203.0.113.7", "unknown"}, // the chain is too short to tell
	} {
		h := newHarness(t, nil)
		h.srv.Policy = func() *policy.Policy { return p }
		h.srv.TrustedProxyHops = tt.hops
		r := newTokenRequest(tt.who.header(t, time.Now()), `{"stores":["store-a"]}`)
		r.RemoteAddr = "169.254.1.1:30000"
		if tt.xff != "" {
			r.Header.Set("X-Forwarded-For", tt.xff)
		}
		rec := httptest.NewRecorder()
		h.srv.ServeHTTP(rec, r)
		if rec.Code != 200 {
			t.Fatalf("%+v: %d %s", tt, rec.Code, rec.Body)
		}
		var audit map[string]any
		for _, l := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
			var m map[string]any
			_ = json.Unmarshal([]byte(l), &m)
			if m["event"] == "token_issued" {
				audit = m
			}
		}
		if audit == nil || audit["client"] != tt.want {
			t.Errorf("hops %d, X-Forwarded-For %q: audit line %v, want client %s", tt.hops, tt.xff, audit, tt.want)
		}
	}
}
