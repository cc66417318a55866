package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    memory
		wantErr bool
	}{
		{"agent", "Name:\tagent\nVmPeak:\t 1261996 kB\nVmHWM:\t   12340 kB\nVmRSS:\t   11984 kB\nRssAnon:\t    6000 kB\nRssFile:\t    5984 kB\nRssShmem:\t0 kB\nThreads:\t7\n",
			memory{RSSkB: 11984, HWMkB: 12340, AnonkB: 6000, FilekB: 5984}, false},
		{"order does not matter", "VmRSS: 5 kB\nVmHWM: 6 kB\n", memory{RSSkB: 5, HWMkB: 6}, false},
		{"kernel thread has neither", "Name:\tkthreadd\nState:\tS\n", memory{}, true},
		{"missing HWM", "VmRSS:\t100 kB\n", memory{}, true},
		{"unexpected unit", "VmRSS:\t100 MB\nVmHWM:\t100 kB\n", memory{}, true},
		{"not a number", "VmRSS:\tx kB\nVmHWM:\t100 kB\n", memory{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatus([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseStatTicks(t *testing.T) {
	// Fields after the name: state ppid pgrp session tty tpgid flags minflt
	// cminflt majflt cmajflt utime(14) stime(15) cutime cstime ...
	tail := " S 1 2 3 0 -1 4194560 100 0 0 0 %s %s 7 8 20 0 7 0 12345\n"
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{"plain", "4242 (agent)" + sprintf(tail, "31", "11"), 42, false},
		{"name with spaces and parens", "4242 (a (b) c)" + sprintf(tail, "5", "6"), 11, false},
		{"children not counted", "1 (x)" + sprintf(tail, "0", "0"), 0, false},
		{"no name", "4242 agent S 1", 0, true},
		{"truncated", "4242 (agent) S 1 2 3", 0, true},
		{"not a number", "4242 (agent)" + sprintf(tail, "x", "1"), 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatTicks([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func sprintf(format string, a, b string) string {
	return strings.Replace(strings.Replace(format, "%s", a, 1), "%s", b, 1)
}

// TestProcSelf reads this test process: memory is plausible and CPU time
// grows when the process burns CPU.
func TestProcSelf(t *testing.T) {
	m, err := readMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSSkB <= 0 || m.HWMkB < m.RSSkB || m.AnonkB <= 0 || m.FilekB <= 0 || m.AnonkB+m.FilekB > m.RSSkB {
		t.Fatalf("implausible memory %+v", m)
	}
	before, err := readCPUTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	hz := clockTick()
	// Burn at least 5 ticks of CPU.
	x := 0
	for t0 := time.Now(); time.Since(t0) < time.Duration(6*int64(time.Second)/hz); {
		for i := range 10000 {
			x += i
		}
	}
	after, err := readCPUTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 3 {
		t.Fatalf("CPU ticks went from %d to %d after ~6 ticks of busy work (x=%d)", before, after, x)
	}
}

func TestPercentile(t *testing.T) {
	seq := func(n int) []time.Duration {
		d := make([]time.Duration, n)
		for i := range d {
			d[i] = time.Duration(n-i) * time.Millisecond // reversed: must not need sorting
		}
		return d
	}
	tests := []struct {
		name string
		d    []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", []time.Duration{7}, 99, 7},
		{"median of 100", seq(100), 50, 50 * time.Millisecond},
		{"p99 of 100", seq(100), 99, 99 * time.Millisecond},
		{"p99 of 200", seq(200), 99, 198 * time.Millisecond},
		{"p99 of 20 is the max", seq(20), 99, 20 * time.Millisecond},
		{"median of 5", seq(5), 50, 3 * time.Millisecond},
		{"p100", seq(10), 100, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]time.Duration(nil), tt.d...)
			if got := percentile(tt.d, tt.p); got != tt.want {
				t.Fatalf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
			for i := range in {
				if in[i] != tt.d[i] {
					t.Fatal("percentile modified its input")
				}
			}
		})
	}
}

func TestCPUPercent(t *testing.T) {
	tests := []struct {
		ticks, hz int64
		wall      time.Duration
		want      float64
	}{
		{12, 100, 120 * time.Second, 0.1}, // 0.12 s over 120 s
		{0, 100, time.Minute, 0},
		{100, 100, time.Second, 100}, // one full core
		{5, 0, time.Second, 0},       // no tick rate: no figure
		{5, 100, 0, 0},
	}
	for _, tt := range tests {
		got := cpuPercent(tt.ticks, tt.hz, tt.wall)
		if d := got - tt.want; d > 1e-9 || d < -1e-9 {
			t.Errorf("cpuPercent(%d, %d, %s) = %v, want %v", tt.ticks, tt.hz, tt.wall, got, tt.want)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 14
go_memstats_heap_inuse_bytes 1.884160e+06
orthanc_gcp_agent_failures_total{reason="orthanc_unreachable"} 3
orthanc_gcp_agent_pushes_total 50
`
	m, err := parseMetrics(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"go_goroutines": 14, "go_memstats_heap_inuse_bytes": 1884160, "orthanc_gcp_agent_pushes_total": 50}
	if len(m) != len(want) {
		t.Fatalf("got %v, want %v", m, want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if _, err := parseMetrics(strings.NewReader("x NaNish\n")); err == nil {
		t.Error("a bad value was accepted")
	}
}

func TestHasAll(t *testing.T) {
	tests := []struct {
		names, want []string
		ok          bool
	}{
		{[]string{"a", "b", "other"}, []string{"b", "a"}, true},
		{[]string{"a"}, []string{"a", "b"}, false},
		{nil, nil, true},
		{nil, []string{"a"}, false},
	}
	for _, tt := range tests {
		if got := hasAll(tt.names, tt.want); got != tt.ok {
			t.Errorf("hasAll(%v, %v) = %v", tt.names, tt.want, got)
		}
	}
}

func TestLinkage(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	static := filepath.Join(dir, "static")
	cmd := exec.Command("go", "build", "-o", static, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	notELF := filepath.Join(dir, "text")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, want string
		wantErr    bool
	}{
		{static, "static", false},
		{"/bin/sh", "dynamic", false}, // Debian's dash needs ld.so
		{notELF, "", true},
	}
	for _, tt := range tests {
		got, err := linkage(tt.path)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("linkage(%s) = %q, %v; want %q (error %v)", tt.path, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestClockAdvance(t *testing.T) {
	var c clock
	before := time.Now()
	c.Advance(51 * time.Minute)
	c.Advance(51 * time.Minute)
	got := c.Now().Sub(before)
	if got < 102*time.Minute || got > 102*time.Minute+time.Minute {
		t.Fatalf("clock is %s ahead, want 102m", got)
	}
}

// TestRun is the whole program at a small scale: the four builds, the two
// agent processes against two real Orthancs, a restart, and the in-process
// cycles, with the figures checked for what must hold.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	o := options{settle: time.Second, window: 2 * time.Second, checkInterval: time.Second,
		restarts: 1, restartCheckInterval: time.Second, cycles: 5, cycles50: 2, repush: 2}
	r, err := run(ctx, o, "-test")
	if err != nil {
		t.Fatal(err)
	}

	if len(r.builds) != 4 {
		t.Fatalf("%d builds, want 4", len(r.builds))
	}
	for _, b := range r.builds {
		if b.size < 1<<20 {
			t.Errorf("%s: %d bytes is not an agent binary", b.cmdline, b.size)
		}
		if strings.HasPrefix(b.cmdline, "CGO_ENABLED=0") && b.link != "static" {
			t.Errorf("%s is %s, want static", b.cmdline, b.link)
		}
	}
	if r.builds[1].size >= r.builds[0].size || r.builds[3].size >= r.builds[2].size {
		t.Errorf("stripping did not shrink the binary: %+v", r.builds)
	}

	if len(r.idle) != 2 || r.idle[0].stores != 1 || r.idle[1].stores != 50 {
		t.Fatalf("idle results %+v", r.idle)
	}
	for _, x := range r.idle {
		if x.end.RSSkB <= 1024 || x.end.HWMkB < x.end.RSSkB {
			t.Errorf("%d stores: implausible memory %+v", x.stores, x.end)
		}
		if x.window < o.window || x.lifeTicks < x.windowTicks || x.pushes < float64(x.stores) {
			t.Errorf("%d stores: window %s, ticks %d of %d, pushes %v", x.stores, x.window, x.windowTicks, x.lifeTicks, x.pushes)
		}
	}

	rs := r.restart
	if len(rs.latency) != 1 || rs.pushes < 50 {
		t.Fatalf("restart: %+v", rs)
	}
	// The agent checks every second: recovery cannot beat 0 nor
	// reasonably exceed a few intervals.
	if rs.latency[0] <= 0 || rs.latency[0] > 5*time.Second {
		t.Errorf("restart recovery took %s", rs.latency[0])
	}

	for _, c := range []cycleResult{r.c1, r.c50} {
		if len(c.total) != c.iterations || c.mints != c.stores*c.iterations ||
			len(c.put) != c.stores*c.iterations || len(c.tokens) != c.iterations || len(c.brokerStores) != c.iterations {
			t.Errorf("%d-store cycles: %d totals, %d mints, %d PUTs, %d token calls for %d iterations",
				c.stores, len(c.total), c.mints, len(c.put), len(c.tokens), c.iterations)
		}
		for i, d := range c.total {
			if d <= c.tokens[i] {
				t.Errorf("cycle %d (%s) is not longer than its token call (%s)", i, d, c.tokens[i])
			}
		}
	}
	if len(r.repush.total) != 2 || len(r.repush.put) != 100 || len(r.repush.tokens) != 0 {
		t.Errorf("re-push: %d cycles, %d PUTs, %d token calls", len(r.repush.total), len(r.repush.put), len(r.repush.tokens))
	}

	md := r.markdown()
	for _, want := range []string{
		"Command: `go run ./bench/agent -test`", "### Binary size", "### Steady memory and idle CPU",
		"### Orthanc restart", "### One refresh cycle", "| 50 | 1s | 1 |", "scaled", "Targets:",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	if strings.Contains(md, "NaN") || strings.Contains(md, "%!") {
		t.Errorf("markdown has a formatting error:\n%s", md)
	}
}

func TestTargetsMet(t *testing.T) {
	idle := func(rssKB, ticks int64) idleResult {
		return idleResult{end: memory{RSSkB: rssKB, HWMkB: rssKB}, windowTicks: ticks, window: 120 * time.Second}
	}
	tests := []struct {
		name             string
		idle             []idleResult
		rss, rssMiB, cpu bool
	}{
		{"well within", []idleResult{idle(10*1024, 1), idle(12*1024, 2)}, true, true, true},
		{"exactly 15,000,000 bytes is within", []idleResult{idle(15_000_000/1024, 0)}, true, true, true},
		{"14.6 MiB: over 15 MB, within 15 MiB", []idleResult{idle(10*1024, 1), idle(14950, 2)}, false, true, true},
		{"over 15 MiB", []idleResult{idle(15*1024+1, 2)}, false, false, true},
		{"0.1 % of CPU is not under 0.1 %", []idleResult{idle(1024, 12)}, true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &results{hz: 100, idle: tt.idle}
			rss, rssMiB, cpu := r.targetsMet()
			if rss != tt.rss || rssMiB != tt.rssMiB || cpu != tt.cpu {
				t.Fatalf("targetsMet = %v, %v, %v; want %v, %v, %v", rss, rssMiB, cpu, tt.rss, tt.rssMiB, tt.cpu)
			}
		})
	}
}

func TestSplitEnv(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"GOMEMLIMIT=8MiB", []string{"GOMEMLIMIT=8MiB"}},
		{" GOGC=50 , GOMEMLIMIT=8MiB,", []string{"GOGC=50", "GOMEMLIMIT=8MiB"}},
	}
	for _, tt := range tests {
		got := splitEnv(tt.in)
		if strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
			t.Errorf("splitEnv(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
