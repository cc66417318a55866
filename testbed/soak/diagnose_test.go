package soak

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLineTime(t *testing.T) {
	ref := time.Date(2026, 12, 7, 9, 0, 0, 0, time.Local)
	for _, tc := range []struct {
		line string
		want time.Time
		ok   bool
	}{
		{`{"time":"2026-12-07T09:52:41.625673615Z","level":"INFO","msg":"pushed token to Orthanc"}`,
			time.Date(2026, 12, 7, 9, 52, 41, 625673615, time.UTC), true},
		{`W1207 09:52:41.656017 main.cpp:2017] Orthanc version: 1.10.1`,
			time.Date(2026, 12, 7, 9, 52, 41, 656017000, time.Local), true},
		{`=== orthancproc: start #2 of site, http 36367, dicom 45593, 2026-12-07T09:52:41Z ===`,
			time.Date(2026, 12, 7, 9, 52, 41, 0, time.UTC), true},
		{`  a continuation line`, time.Time{}, false},
		{`{"level":"INFO"}`, time.Time{}, false},
	} {
		got, ok := lineTime(tc.line, ref)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("%q: %v %v, want %v %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

func TestLogWindow(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	line := func(s int, msg string) string {
		return fmt.Sprintf(`{"time":%q,"level":"INFO","msg":%q}`, t0.Add(time.Duration(s)*time.Second).Format(time.RFC3339Nano), msg)
	}
	orthanc := func(s int, msg string) string {
		return t0.Add(time.Duration(s)*time.Second).In(time.Local).Format("E0102 15:04:05.000000") + " x.cpp:1] " + msg
	}
	lines := []string{
		line(1, "before"),
		line(5, "in store-a"),
		"  continuation of the line in the window",
		line(6, "in store-b"),
		orthanc(7, "HTTP header Authorization: Bearer abc"),
		orthanc(8, "Exception: ya29.abcdefghijklmnop leaked"),
		line(20, "after"),
		"  continuation of the line after",
	}
	path := filepath.Join(t.TempDir(), "x.log")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, omitted := logWindow(path, t0.Add(5*time.Second), t0.Add(10*time.Second), func(l string) bool { return !strings.Contains(l, "store-b") })
	want := []string{lines[1], lines[2], "(line withheld: may contain a credential)",
		strings.Replace(lines[5], "ya29.abcdefghijklmnop", "[token redacted]", 1)}
	if omitted != 0 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("window: %d omitted,\n%s\nwant\n%s", omitted, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	var many []string
	for i := range maxLinesPerSource + 5 {
		many = append(many, line(5, fmt.Sprintf("line %d", i)))
	}
	if err := os.WriteFile(path, []byte(strings.Join(many, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, omitted = logWindow(path, t0, t0.Add(10*time.Second), func(string) bool { return true })
	if omitted != 5 || len(got) != maxLinesPerSource || got[0] != many[5] {
		t.Errorf("cap: %d omitted, %d lines, first %q", omitted, len(got), got[0])
	}
}

func TestJobCreated(t *testing.T) {
	j := job{CreationTime: "20261207T095241.656017"}
	got, ok := j.created()
	if want := time.Date(2026, 12, 7, 9, 52, 41, 656017000, time.Local); !ok || !got.Equal(want) {
		t.Errorf("created %v %v, want %v", got, ok, want)
	}
	j.Content = []byte(`{ "FunctionErrorCode" : 7, "FunctionErrorDetails" : "Inexistent server: store-a" }`)
	if c := j.content(); c.FunctionErrorCode != 7 || c.FunctionErrorDetails != "Inexistent server: store-a" {
		t.Errorf("content %+v", c)
	}
}

func TestResultText(t *testing.T) {
	r := &Result{Seed: 7, Duration: 3 * time.Minute, Calls: 10, Failed: 1, Unavoidable: 1, UnavoidableDown: 1,
		Rotations: 40, RequiredRotations: 30, FaultCounts: [numKinds]int{1, 1, 1, 1, 1, 1, 1},
		Timeline:         []string{"+20s broker kill"},
		UnavoidableCalls: []string{"call 3 STOW store-c at +1m (took 0s), while the site Orthanc was down: refused"},
		FailedCalls:      []string{"call 4 STOW store-d from +1m2s\n  hops:\n    site Orthanc: EOF"},
		LogDir:           "/tmp/logs/soak-7-x"}
	got := r.Text()
	for _, want := range []string{
		"Fault timeline:\n  +20s broker kill\n",
		"Unavoidable failures:\n  call 3 STOW store-c",
		"Avoidable failures, in full:\n  call 4 STOW store-d from +1m2s\n    hops:\n      site Orthanc: EOF\n",
		"FAILED:\n  1 calls failed that no fault made unavoidable\n",
		"calls: 10 made, 1 failed\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("text lacks %q:\n%s", want, got)
		}
	}
	if !strings.HasSuffix(got, "logs: /tmp/logs/soak-7-x\n") {
		t.Errorf("the last line does not name the logs:\n%s", got)
	}
	r.Failed, r.FailedCalls, r.LogDir = 0, nil, ""
	if got := r.Text(); !strings.Contains(got, "PASSED: ") || strings.Contains(got, "logs:") || strings.Contains(got, "Avoidable") {
		t.Errorf("passing text:\n%s", got)
	}
}

func TestMakeLogDir(t *testing.T) {
	parent := t.TempDir()
	now := time.Date(2026, 12, 7, 10, 11, 12, 0, time.UTC)
	dir, err := makeLogDir(parent, 42, now)
	if err != nil || dir != filepath.Join(parent, "soak-42-20261207T101112Z") {
		t.Fatalf("named: %q %v", dir, err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("named: %v %v", fi, err)
	}
	tmp, err := makeLogDir("", 42, now)
	if err != nil || !strings.HasPrefix(filepath.Base(tmp), "orthanc-gcp-soak-42-20261207T101112Z-") {
		t.Fatalf("temporary: %q %v", tmp, err)
	}
	os.RemoveAll(tmp)
}
