package soak

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/stack"
)

var durations = []time.Duration{3 * time.Minute, 4*time.Minute + 10*time.Second, 10 * time.Minute, 25 * time.Minute, time.Hour}

func TestPlanDeterministic(t *testing.T) {
	a, err := Plan(42, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Plan(42, 10*time.Minute)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed gave two timelines")
	}
	c, _ := Plan(43, 10*time.Minute)
	if reflect.DeepEqual(a, c) {
		t.Fatal("seeds 42 and 43 gave the same timeline")
	}
}

func TestPlanTooShort(t *testing.T) {
	if _, err := Plan(1, MinDuration-time.Second); err == nil {
		t.Fatal("want an error below MinDuration")
	}
}

// TestPlanShape checks, over many seeds and durations, that every kind
// occurs (as often as Counts says), that faults stay in order, inside the
// window and apart, and that parameters stay within the bounds doc.go's
// argument relies on.
func TestPlanShape(t *testing.T) {
	for _, d := range durations {
		for seed := uint64(0); seed < 200; seed++ {
			name := fmt.Sprintf("seed %d duration %s", seed, d)
			plan, err := Plan(seed, d)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var got [numKinds]int
			for i, f := range plan {
				got[f.Kind]++
				if f.At < Warmup || f.At > f.Latest {
					t.Fatalf("%s: fault %d at %s, latest %s", name, i, f.At, f.Latest)
				}
				end := f.Latest + f.Budget
				if i+1 < len(plan) && end >= plan[i+1].At {
					t.Fatalf("%s: fault %d (%s) may run until %s, the next starts at %s", name, i, f.Kind, end, plan[i+1].At)
				}
				if end > d-Tail(d) {
					t.Fatalf("%s: last fault may run until %s, after the tail starts", name, end)
				}
				checkParams(t, name, f)
			}
			if got != Counts(d) {
				t.Fatalf("%s: counts %v, want %v", name, got, Counts(d))
			}
			for k, n := range got {
				if n == 0 {
					t.Fatalf("%s: no %s", name, Kind(k))
				}
			}
			for i := 1; i < len(plan); i++ {
				if plan[i-1].Kind == AgentRestart && plan[i].Kind.costsTokens() {
					for _, later := range plan[i+1:] {
						if !later.Kind.costsTokens() {
							t.Fatalf("%s: %s right after an agent restart though a %s comes later", name, plan[i].Kind, later.Kind)
						}
					}
				}
			}
		}
	}
}

func checkParams(t *testing.T, name string, f Fault) {
	t.Helper()
	bad := func(format string, args ...any) {
		t.Fatalf("%s: %s %+v: %s", name, f.Kind, f, fmt.Sprintf(format, args...))
	}
	if f.Budget <= 0 || f.Budget > maxBudget {
		bad("budget %s", f.Budget)
	}
	switch f.Kind {
	case BrokerKill:
		if f.Down < time.Second || f.Down > 6*time.Second || f.Down >= f.Budget {
			bad("down %s", f.Down)
		}
	case Token5xx:
		if f.Count < 2 || f.Count > 6 || f.Status < 500 || f.Status > 599 || f.Budget > 8*time.Second {
			bad("burst")
		}
	case SlowToken:
		if f.Count < 2 || f.Count > 4 || f.Delay < time.Second || f.Delay > 5*time.Second ||
			time.Duration(f.Count)*f.Delay > 12*time.Second {
			bad("slow")
		}
	case SMOutage:
		if f.Down < 5*time.Second || f.Down > f.Budget || f.Budget > 10*time.Second {
			bad("outage %s", f.Down)
		}
	case AgentRestart:
		if f.Down < 500*time.Millisecond || f.Down > 5*time.Second || (f.Signal != syscall.SIGTERM && f.Signal != syscall.SIGKILL) {
			bad("restart")
		}
	}
}

func TestCounts(t *testing.T) {
	if got := Counts(10 * time.Minute); got != perTenMinutes {
		t.Errorf("10m: %v", got)
	}
	for _, n := range Counts(3 * time.Minute) {
		if n != 1 {
			t.Errorf("3m: %v, want one of each", Counts(3*time.Minute))
		}
	}
	if RequiredRotations(10*time.Minute) != 100 || RequiredRotations(3*time.Minute) != 30 {
		t.Errorf("required rotations: %d, %d", RequiredRotations(10*time.Minute), RequiredRotations(3*time.Minute))
	}
}

func TestAfterAgentRestart(t *testing.T) {
	in := []Kind{AgentRestart, Token5xx, SMOutage, KeyRotation, BrokerKill}
	got := afterAgentRestart(in)
	want := []Kind{AgentRestart, KeyRotation, Token5xx, SMOutage, BrokerKill}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// Nothing safe left: unchanged.
	in = []Kind{KeyRotation, AgentRestart, BrokerKill}
	if got := afterAgentRestart(in); !reflect.DeepEqual(got, in) {
		t.Errorf("got %v", got)
	}
}

func TestClassify(t *testing.T) {
	t0 := time.Now()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	down := []interval{{from: at(10), to: at(12)}}
	missing := &orthancproc.HTTPError{Method: "POST", Path: "/dicom-web/servers/store-a/qido", Status: http.StatusNotFound,
		Body: `{"Details" : "Inexistent server: store-a", "HttpStatus" : 404}`}
	other := errors.New("HTTP 500")
	for _, tc := range []struct {
		name       string
		start, end float64
		err        error
		want       class
	}{
		{"passed", 11, 11.5, nil, classOK},
		{"inside the restart", 10.5, 10.6, other, classDown},
		{"started before, ended inside", 9, 10.1, other, classDown},
		{"spanning it", 9, 13, other, classDown},
		{"missing entry right after", 12.5, 12.6, fmt.Errorf("stow: %w", missing), classRepush},
		{"missing entry too late", 12 + RepushGrace.Seconds() + 0.1, 14.5, missing, classFailed},
		{"other failure right after", 12.5, 12.6, other, classFailed},
		{"missing entry before the restart", 9, 9.5, missing, classFailed},
		{"far from it", 30, 31, other, classFailed},
	} {
		m, _ := missingAnswer("store-a", tc.err)
		c := Call{Start: at(tc.start), End: at(tc.end), Err: tc.err, missingServer: m}
		if got := classify(c, down); got != tc.want {
			t.Errorf("%s: class %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestMissingAnswer(t *testing.T) {
	for _, tc := range []struct {
		err             error
		missing, asking bool
	}{
		{&orthancproc.HTTPError{Path: "/dicom-web/servers/store-a/qido", Status: 404, Body: `"Details" : "Inexistent server: store-a"`}, true, false},
		{&orthancproc.HTTPError{Path: "/dicom-web/servers/store-a/qido", Status: 404, Body: `"Details" : "Inexistent server: store-b"`}, false, false},
		{&orthancproc.HTTPError{Path: "/dicom-web/servers/store-a/qido", Status: 401}, false, false},
		{&orthancproc.HTTPError{Path: "/dicom-web/servers/store-a/stow", Status: 500}, false, true},
		{&orthancproc.HTTPError{Path: "/dicom-web/servers/store-a/retrieve", Status: 500}, false, true},
		{&orthancproc.HTTPError{Path: "/instances", Status: 500}, false, false},
		{errors.New("connection refused"), false, false},
		{&stack.JobError{Op: "stow", Server: "store-a", FunctionErrorCode: 7, FunctionErrorDetails: "Inexistent server: store-a"}, true, false},
		{&stack.JobError{Op: "retrieve", Server: "store-a", FunctionErrorCode: 7, FunctionErrorDetails: "Inexistent server: store-a"}, true, false},
		{&stack.JobError{Op: "stow", Server: "store-a", FunctionErrorCode: 7, FunctionErrorDetails: "Inexistent server: store-b"}, false, false},
		{&stack.JobError{Op: "stow", Server: "store-a", FunctionErrorCode: 29}, false, false},
	} {
		m, a := missingAnswer("store-a", fmt.Errorf("wrapped: %w", tc.err))
		if m != tc.missing || a != tc.asking {
			t.Errorf("%v: missing %v asking %v", tc.err, m, a)
		}
	}
}

func TestGaps(t *testing.T) {
	t0 := time.Now()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	mk := func(s float64, valid bool, err string) sample {
		return sample{start: at(s - 0.01), at: at(s), valid: []bool{valid}, expiry: []string{""}, err: err}
	}
	samples := []sample{
		mk(0, true, ""), mk(1, false, ""), mk(2, false, ""), mk(3, true, ""), // a 2 s gap
		mk(4, true, ""), mk(5, false, "refused"), mk(6, false, "refused"), // Orthanc restarting at 4.5-6.5
		mk(7, false, ""), mk(7.5, true, ""), // 0.5 s after the restart
		mk(8, false, ""), // open at the end
	}
	down := []interval{{from: at(4.5), to: at(6.5)}}
	got := gaps(samples, []string{"s"}, down)
	if len(got) != 3 {
		t.Fatalf("gaps %+v", got)
	}
	if got[0].length != 2*time.Second || got[1].length != 500*time.Millisecond || !got[2].ongoing || got[2].length != 0 {
		t.Errorf("gaps %+v", got)
	}
	// A gap that starts before a restart and ends after it does not count the restart.
	samples = []sample{mk(0, true, ""), mk(4, false, ""), mk(5, false, "x"), mk(7.5, true, "")}
	got = gaps(samples, []string{"s"}, down)
	if len(got) != 1 || got[0].length != 1500*time.Millisecond {
		t.Errorf("gap across a restart %+v", got)
	}
}

func TestCountRotations(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	line := func(s int, server, fp string) string {
		return fmt.Sprintf(`{"time":%q,"level":"INFO","msg":"pushed token to Orthanc","server":%q,"reason":"x","token_sha256":%q}`,
			t0.Add(time.Duration(s)*time.Second).Format(time.RFC3339Nano), server, fp)
	}
	log := strings.Join([]string{
		line(-5, "a", "1"), line(-5, "b", "9"), // first pushes: not rotations
		line(-1, "a", "2"),                   // before the run
		line(1, "a", "3"), line(2, "a", "3"), // a rotation, then the same token again
		`{"time":"x","msg":"something else"}`,
		line(3, "b", "8"), line(4, "a", "2"), // a rotation; an old token again is not one
		line(100, "a", "4"), // after the run
	}, "\n")
	n, err := countRotations([]byte(log), t0, t0.Add(time.Minute))
	if err != nil || n != 2 {
		t.Errorf("rotations %d, %v; want 2", n, err)
	}
	if _, err := countRotations([]byte(`{"msg":"pushed token to Orthanc","server":"a"}`), t0, t0); err == nil {
		t.Error("a push line without a fingerprint must be an error")
	}
}

func TestReportShape(t *testing.T) {
	r := &Result{Seed: 42, Duration: 10 * time.Minute, Calls: 1234, Unavoidable: 12, UnavoidableDown: 9, UnavoidableRepush: 3,
		Rotations: 130, RequiredRotations: 100,
		FaultCounts: [numKinds]int{3, 3, 2, 4, 4, 2, 2}}
	want := `soak: seed=42 duration=10m0s
calls: 1234 made, 0 failed
unavoidable: 12 (calls that failed because the site Orthanc itself was down or restarting: 9 while it was, 3 within 2s after it answered again, on a DICOMweb server entry its restart erased and the agent had not re-pushed yet)
token rotations: 130
faults: broker kills 3, orthanc restarts 3, key rotations 2, token 5xx bursts 4, slow token answers 4, secret manager outages 2, agent restarts 2
longest without a valid token: 0s
`
	if got := r.Report(); got != want {
		t.Errorf("report:\n%s\nwant:\n%s", got, want)
	}
	if !r.Pass() {
		t.Errorf("problems %v", r.Problems())
	}
	r.Failed, r.Rotations, r.LongestGap = 1, 99, GapBound+time.Second
	if len(r.Problems()) != 3 {
		t.Errorf("problems %v", r.Problems())
	}
}

func TestRedact(t *testing.T) {
	in := `upstream said: Authorization: Bearer ya29.fake-AbCdEfGhIjKlMnOpQrStUvWxYz012345 and bearer abcdefghijkl`
	out := redact(in)
	if strings.Contains(out, "ya29.fake-AbCd") || strings.Contains(out, "abcdefghijkl") {
		t.Errorf("redact left a token: %s", out)
	}
}
