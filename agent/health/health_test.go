package health

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/reconcile"
)

var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time { t := t0.Add(d); return &t }

func TestHandlerAndMetrics(t *testing.T) {
	now := t0
	status := Status{AgentID: "clinic-a", Broker: reconcile.BrokerStatus{Synced: true, Up: true},
		Stores: []reconcile.StoreStatus{{Store: "a", Server: "a", State: reconcile.StateOK, Pushed: true, TokenExpiresAt: at(90 * time.Second)}}}
	m := NewMetrics()
	srv := httptest.NewServer(Handler(func() Status { return status }, m, func() time.Time { return now }))
	defer srv.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/healthz")
	var s Status
	if code != 200 || json.Unmarshal([]byte(body), &s) != nil || !s.Healthy || s.Stores[0].Store != "a" {
		t.Errorf("healthz %d %s", code, body)
	}
	now = t0.Add(2 * time.Minute) // the token has expired
	code, body = get("/healthz")
	if code != 503 || !strings.Contains(body, `"state": "expired"`) {
		t.Errorf("after expiry: %d %s", code, body)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("unknown path %d", code)
	}

	m.Push()
	m.Push()
	m.Delete()
	m.Failure("broker_unreachable")
	m.Failure("https://secret.example/?token=ya29.x") // not a known reason
	m.BrokerSuccess(t0)
	m.OrthancReachable(true)
	if v := testutil.ToFloat64(m.pushes); v != 2 {
		t.Errorf("pushes %v", v)
	}
	if v := testutil.ToFloat64(m.failures.WithLabelValues("other")); v != 1 {
		t.Errorf("other %v", v)
	}
	_, body = get("/metrics")
	for _, want := range []string{
		"orthanc_gcp_agent_pushes_total 2",
		"orthanc_gcp_agent_deletes_total 1",
		`orthanc_gcp_agent_failures_total{reason="broker_unreachable"} 1`,
		`orthanc_gcp_agent_failures_total{reason="orthanc_unreachable"} 0`,
		`orthanc_gcp_agent_token_expiry_seconds{store="a"} -30`,
		"orthanc_gcp_agent_last_broker_success_timestamp_seconds 1.8934992e+09",
		"orthanc_gcp_agent_orthanc_reachable 1",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Every reason the loop can record is exported from the start.
	for _, r := range append(reconcile.Reasons(), ReasonOther) {
		if !strings.Contains(body, `orthanc_gcp_agent_failures_total{reason="`+r+`"}`) {
			t.Errorf("reason %q not pre-registered", r)
		}
	}
	if strings.Contains(body, "secret.example") || strings.Contains(body, "ya29") {
		t.Error("free text reached a metric label")
	}
}

func TestStatusURL(t *testing.T) {
	tests := map[string]string{
		"127.0.0.1:9750": "http://127.0.0.1:9750/healthz",
		"0.0.0.0:9750":   "http://127.0.0.1:9750/healthz",
		":9750":          "http://127.0.0.1:9750/healthz",
		"[::]:9750":      "http://[::1]:9750/healthz",
		"localhost:1":    "http://localhost:1/healthz",
		"9750":           "",
	}
	for in, want := range tests {
		got, err := StatusURL(in)
		if got != want || (err != nil) != (want == "") {
			t.Errorf("%s: %q %v", in, got, err)
		}
	}
}

func TestFetchAndTable(t *testing.T) {
	status := Status{AgentID: "clinic-a", KeyKind: "tpm", Broker: reconcile.BrokerStatus{Synced: true, Up: false, LastError: "broker GET /v1/stores: HTTP 503", LastSuccess: at(-5 * time.Minute)},
		Orthanc: reconcile.OrthancStatus{Reachable: true},
		Stores: []reconcile.StoreStatus{
			{Store: "zeta", Server: "zeta", State: reconcile.StateNotGranted, LastError: "forbidden"},
			{Store: "alpha", Server: "alpha", State: reconcile.StateOK, Pushed: true, TokenExpiresAt: at(47*time.Minute + 12*time.Second), LastPush: at(-3 * time.Minute)},
		}}
	now := func() time.Time { return t0 }
	srv := httptest.NewServer(Handler(func() Status { return status }, NewMetrics(), now))
	defer srv.Close()
	s, err := Fetch(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatalf("fetch of a 503 status: %v", err)
	}
	if s.Healthy || len(s.Stores) != 2 {
		t.Fatalf("%+v", s)
	}
	var buf bytes.Buffer
	WriteTable(&buf, s, t0)
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if !strings.Contains(lines[0], "UNHEALTHY") || !strings.Contains(lines[0], "broker down, last success 5m0s ago") ||
		!strings.HasSuffix(lines[0], "; key tpm") {
		t.Errorf("summary %q", lines[0])
	}
	var header, alpha, zeta string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "STORE"):
			header = l
		case strings.HasPrefix(l, "alpha"):
			alpha = l
		case strings.HasPrefix(l, "zeta"):
			zeta = l
		}
	}
	for _, col := range []string{"ORTHANC SERVER", "TOKEN EXPIRES IN", "LAST PUSH", "LAST ERROR"} {
		if !strings.Contains(header, col) {
			t.Errorf("header lacks %s: %q", col, header)
		}
	}
	if !strings.Contains(alpha, "47m12s") || !strings.Contains(alpha, "3m0s ago") || !strings.Contains(alpha, " ok ") {
		t.Errorf("alpha row %q", alpha)
	}
	if !strings.Contains(zeta, "not_granted") || !strings.Contains(zeta, "forbidden") {
		t.Errorf("zeta row %q", zeta)
	}
	if strings.Index(out, "\nalpha") > strings.Index(out, "\nzeta") {
		t.Error("rows not sorted")
	}

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	if _, err := Fetch(context.Background(), addr); err == nil {
		t.Error("fetch from a closed port succeeded")
	}
}

// TestKeyKindMetric: orthanc_gcp_agent_key_info has exactly one series,
// kind="file" or kind="tpm", valued 1, and follows a change of key.
func TestKeyKindMetric(t *testing.T) {
	m := NewMetrics()
	scrape := func() string {
		srv := httptest.NewServer(Handler(func() Status { return Status{} }, m, func() time.Time { return t0 }))
		defer srv.Close()
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "orthanc_gcp_agent_key_info{") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	m.SetKeyKind("file")
	if got := scrape(); got != `orthanc_gcp_agent_key_info{kind="file"} 1` {
		t.Errorf("file: %q", got)
	}
	m.SetKeyKind("tpm")
	if got := scrape(); got != `orthanc_gcp_agent_key_info{kind="tpm"} 1` {
		t.Errorf("after a rotation to a TPM key: %q", got)
	}
}

// TestResubmitMetricAndStatus: the counter of failed uploads sent again,
// the snapshot's resubmit fields and the status table's line.
func TestResubmitMetricAndStatus(t *testing.T) {
	m := NewMetrics()
	if v := testutil.ToFloat64(m.resubmitted); v != 0 {
		t.Fatalf("resubmitted starts at %v", v)
	}
	m.Resubmitted()
	m.Resubmitted()
	status := Status{AgentID: "clinic-a", Broker: reconcile.BrokerStatus{Synced: true, Up: true},
		Resubmit: "enabled (DICOMweb 1.20)", Resubmitted: 2, ResubmitWaiting: 1,
		Stores: []reconcile.StoreStatus{{Store: "a", Server: "a", State: reconcile.StateOK, Pushed: true, TokenExpiresAt: at(time.Hour)}}}
	srv := httptest.NewServer(Handler(func() Status { return status }, m, func() time.Time { return t0 }))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "orthanc_gcp_agent_jobs_resubmitted_total 2") {
		t.Error("metrics lack orthanc_gcp_agent_jobs_resubmitted_total 2")
	}
	s, err := Fetch(context.Background(), strings.TrimPrefix(srv.URL, "http://"))
	if err != nil || s.Resubmit != status.Resubmit || s.Resubmitted != 2 || s.ResubmitWaiting != 1 {
		t.Fatalf("fetched %+v (%v)", s, err)
	}

	tests := []struct {
		name string
		s    Status
		want string
	}{
		{"enabled", Status{Resubmit: "enabled (DICOMweb 1.20)", Resubmitted: 2, ResubmitWaiting: 1},
			"failed uploads: resubmit enabled (DICOMweb 1.20); resubmitted 2, waiting 1, given up 0"},
		{"enabled with an error", Status{Resubmit: "enabled (DICOMweb 1.24)", ResubmitError: "orthanc GET /jobs?expand: timeout"},
			"failed uploads: resubmit enabled (DICOMweb 1.24); resubmitted 0, waiting 0, given up 0; last error: orthanc GET /jobs?expand: timeout"},
		{"unavailable", Status{Resubmit: "unavailable: DICOMweb 1.7 < 1.18"}, "failed uploads: resubmit unavailable: DICOMweb 1.7 < 1.18"},
		{"disabled", Status{Resubmit: "disabled (ResubmitFailedJobs is false)"}, "failed uploads: resubmit disabled (ResubmitFailedJobs is false)"},
		{"paused", Status{Resubmit: "error: state file x: bad", ResubmitError: "state file x: bad"}, "failed uploads: resubmit error: state file x: bad"},
		{"older agent", Status{}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ResubmitLine(&tc.s); got != tc.want {
				t.Errorf("line %q\nwant %q", got, tc.want)
			}
			var buf bytes.Buffer
			WriteTable(&buf, &tc.s, t0)
			lines := strings.Split(buf.String(), "\n")
			if tc.want != "" && !slices.Contains(lines, tc.want) {
				t.Errorf("table lacks the line:\n%s", buf.String())
			}
			if tc.want == "" && strings.Contains(buf.String(), "resubmit") {
				t.Errorf("table of an older agent mentions resubmit:\n%s", buf.String())
			}
		})
	}
}

// TestResubmitStateAndGivenUpMetrics: the alerting rules' view of
// re-sending failed uploads. orthanc_gcp_agent_resubmit_state has one
// series per word of ResubmitStates, 1 for the first word of
// Status.Resubmit and 0 for the others (all 0 for a text that starts with
// none: no free text reaches the label), and
// orthanc_gcp_agent_jobs_given_up_total is Status.ResubmitGivenUp.
func TestResubmitStateAndGivenUpMetrics(t *testing.T) {
	tests := []struct {
		resubmit string
		givenUp  int
		want     string // the state valued 1, "" for none
	}{
		{"enabled (DICOMweb 1.20)", 2, "enabled"},
		{"disabled (ResubmitFailedJobs is false)", 0, "disabled"},
		{"unavailable: DICOMweb 1.7 < 1.18", 0, "unavailable"},
		{"unknown: not checked yet", 0, "unknown"},
		{"error: state file /x: bad", 1, "error"},
		{"errors galore", 0, ""},
		{"", 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.resubmit, func(t *testing.T) {
			status := Status{Resubmit: tc.resubmit, ResubmitGivenUp: tc.givenUp}
			srv := httptest.NewServer(Handler(func() Status { return status }, NewMetrics(), func() time.Time { return t0 }))
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var got []string
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "orthanc_gcp_agent_resubmit_state{") || strings.HasPrefix(l, "orthanc_gcp_agent_jobs_given_up_total") {
					got = append(got, l)
				}
			}
			want := []string{fmt.Sprintf("orthanc_gcp_agent_jobs_given_up_total %d", tc.givenUp)}
			for _, w := range []string{"disabled", "enabled", "error", "unavailable", "unknown"} { // sorted, as exposed
				v := 0
				if w == tc.want {
					v = 1
				}
				want = append(want, fmt.Sprintf(`orthanc_gcp_agent_resubmit_state{state="%s"} %d`, w, v))
			}
			if !slices.Equal(got, want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestTableEscapesControls: "agent status" prints what a /healthz answer
// holds, text that came from Orthanc, the broker or a configuration (or
// from whatever answers on that port). No control character of it reaches
// the terminal: each is shown escaped, on the line it was on.
func TestTableEscapesControls(t *testing.T) {
	payloads := []struct{ name, in, want string }{
		{"ESC [ 2 J", "\x1b[2J", `\x1b[2J`},
		{"U+009B", "\u009b2J", `\u009b2J`},
		{"DEL", "\x7f", `\x7f`},
		{"NUL", "\x00", `\x00`},
		{"newline", "\nagent x: healthy", `\nagent x: healthy`},
		{"invalid UTF-8", "\xff", `\xff`},
	}
	fields := []struct {
		name string
		set  func(s *Status, v string)
	}{
		{"agent id", func(s *Status, v string) { s.AgentID = v }},
		{"reason", func(s *Status, v string) { s.Reason = v }},
		{"broker error", func(s *Status, v string) { s.Broker.LastError = v }},
		{"Orthanc error", func(s *Status, v string) { s.Orthanc.LastError = v }},
		{"resubmit", func(s *Status, v string) { s.Resubmit = "enabled " + v }},
		{"resubmit error", func(s *Status, v string) { s.Resubmit, s.ResubmitError = "enabled", v }},
		{"store name", func(s *Status, v string) { s.Stores[0].Store = v }},
		{"server name", func(s *Status, v string) { s.Stores[0].Server = v }},
		{"store state", func(s *Status, v string) { s.Stores[0].State = v }},
		{"store error", func(s *Status, v string) { s.Stores[0].LastError = v }},
	}
	base := func() *Status {
		return &Status{AgentID: "clinic-a", Broker: reconcile.BrokerStatus{Synced: true, Up: true}, Resubmit: "enabled",
			Stores: []reconcile.StoreStatus{{Store: "a", Server: "a", State: reconcile.StateError, LastError: "x"}}}
	}
	for _, f := range fields {
		// clean is the table with the field set to plain text.
		var clean bytes.Buffer
		s := base()
		f.set(s, "é日本")
		if err := WriteTable(&clean, s, t0); err != nil {
			t.Fatal(err)
		}
		for _, p := range payloads {
			t.Run(f.name+"/"+p.name, func(t *testing.T) {
				s := base()
				f.set(s, "é日本"+p.in)
				var buf bytes.Buffer
				if err := WriteTable(&buf, s, t0); err != nil {
					t.Fatal(err)
				}
				out := buf.String()
				if !strings.Contains(out, "é日本"+p.want) {
					t.Errorf("want %q in:\n%s", "é日本"+p.want, out)
				}
				if bad := strings.IndexFunc(out, func(r rune) bool {
					return r != '\n' && (r < 0x20 || r >= 0x7f && r <= 0x9f) || r == utf8.RuneError
				}); bad >= 0 {
					t.Errorf("a control character or invalid UTF-8 at byte %d: %q", bad, out)
				}
				if got, want := strings.Count(out, "\n"), strings.Count(clean.String(), "\n"); got != want {
					t.Errorf("%d lines, want %d:\n%s", got, want, out)
				}
			})
		}
	}
}
