package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	cases := []struct {
		args    []string
		want    config
		wantErr string
	}{
		{nil, config{instances: 3}, ""},
		{[]string{"--keep", "--instances", "5"}, config{keep: true, instances: 5}, ""},
		{[]string{"--instances", "0"}, config{}, "--instances must be 1-100"},
		{[]string{"extra"}, config{}, "unexpected argument"},
		{[]string{"--bin", "/nonexistent"}, config{}, "no broker and agent binaries"},
		{[]string{"--nope"}, config{}, "flag provided but not defined"},
	}
	for _, c := range cases {
		got, err := parseArgs(c.args, io.Discard)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("parseArgs(%q): err %v, want %q", c.args, err, c.wantErr)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("parseArgs(%q) = %+v, %v; want %+v", c.args, got, err, c.want)
		}
	}
}

func TestReportStopsAfterAFailure(t *testing.T) {
	var out bytes.Buffer
	clock := time.Unix(0, 0)
	r := &report{out: &out, now: func() time.Time { clock = clock.Add(1500 * time.Microsecond); return clock }}
	ran := 0
	r.do("first", func() (string, error) { ran++; return "fine", nil })
	r.do("second", func() (string, error) { ran++; return "", errors.New("boom") })
	if r.do("third", func() (string, error) { ran++; return "", nil }) {
		t.Error("a step after a failure reported success")
	}
	if ran != 2 || !r.failed() {
		t.Errorf("ran %d steps, failed=%v", ran, r.failed())
	}
	got := out.String()
	for _, want := range []string{"1. first", "1 ms  ok (fine)", "2. second", "FAILED: boom"} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "third") {
		t.Errorf("report shows a skipped step:\n%s", got)
	}
}

// TestDemo runs the whole demo (real Orthanc; fails when it is missing).
func TestDemo(t *testing.T) {
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	code := run(ctx, func() {}, []string{"--instances", "2"}, &out, &errb)
	got := out.String()
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, got, errb.String())
	}
	for _, want := range []string{
		"STOW site -> cloud (store-a)", "QIDO the study at the cloud", "retrieve it from the cloud (WADO-RS)",
		"cloud store now holds the 2 instances", "site holds the 2 instances again",
		`HttpHeaders: ["Authorization"]`, "OrthancGcpAgent: \"site-a\"", "token for store-a",
		"Result: every step passed", "Stopped everything",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := strings.Count(got, " ms  ok"); n != 7 {
		t.Errorf("%d steps ok, want 7:\n%s", n, got)
	}
	if strings.Contains(got, "Bearer") || strings.Contains(got, "ya29.") {
		t.Errorf("the report shows a token:\n%s", got)
	}
}

func TestDemoInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Ctrl-C before anything started
	var out bytes.Buffer
	if code := run(ctx, func() {}, nil, &out, io.Discard); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(out.String(), "Interrupted.") || !strings.Contains(out.String(), "Result: FAILED") {
		t.Errorf("output:\n%s", out.String())
	}
}
