package soak

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// Result is a judged run.
type Result struct {
	Seed     uint64
	Duration time.Duration

	Calls, Failed, Unavoidable int
	// UnavoidableDown failed while the site Orthanc was down (doc.go rule
	// 1), UnavoidableRepush just after, on an entry not re-pushed yet (rule 2).
	UnavoidableDown, UnavoidableRepush int
	// FailedCalls is, for each failed call that no fault made unavoidable,
	// its full report (several lines, see describeFailure): what, when,
	// what each hop answered, the faults around it, its entry in Orthanc
	// and the logs around it (never a token).
	FailedCalls []string
	// UnavoidableCalls says in one line each which call failed unavoidably
	// and under which rule.
	UnavoidableCalls []string

	Rotations, RequiredRotations int
	FaultCounts                  [numKinds]int
	// Timeline is one line per fault carried out.
	Timeline []string
	// Missed counts the Aligned faults that met no token request.
	Missed int

	LongestGap time.Duration
	// GapDetail says where the longest gap was ("" without a gap).
	GapDetail string

	// FrontRefused counts the cloud front's 401 and 403 answers.
	FrontRefused int
	// Leaks names the files in which a token value was found.
	Leaks []string
	// Harness lists problems of the run itself (a part that would not
	// come back, an interruption).
	Harness []string
	// LogDir holds the run's logs and report when they were kept ("" when
	// removed: a passing run without Config.LogDir).
	LogDir string
}

// Problems lists why the run fails (none: it passes).
func (r *Result) Problems() []string {
	var p []string
	if r.Failed > 0 {
		p = append(p, fmt.Sprintf("%d calls failed that no fault made unavoidable", r.Failed))
	}
	if r.Rotations < r.RequiredRotations {
		p = append(p, fmt.Sprintf("%d token rotations, fewer than the %d a run of %s must have", r.Rotations, r.RequiredRotations, r.Duration))
	}
	if r.LongestGap > GapBound {
		p = append(p, fmt.Sprintf("a store went %s without a valid token in Orthanc's entry (bound %s): %s", fmtGap(r.LongestGap), GapBound, r.GapDetail))
	}
	for _, k := range Kinds() {
		if r.FaultCounts[k] == 0 {
			p = append(p, fmt.Sprintf("no %s was carried out", k))
		}
	}
	if r.FrontRefused > 0 {
		p = append(p, fmt.Sprintf("the cloud DICOMweb front refused %d requests (401/403: a token that was not valid reached it)", r.FrontRefused))
	}
	for _, l := range r.Leaks {
		p = append(p, "a token value appears in "+l)
	}
	return append(p, r.Harness...)
}

// Pass reports whether the run passed.
func (r *Result) Pass() bool { return len(r.Problems()) == 0 }

// Report is the closing block (see testbed/soak's doc and the Makefile).
func (r *Result) Report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "soak: seed=%d duration=%s\n", r.Seed, r.Duration)
	fmt.Fprintf(&b, "calls: %d made, %d failed\n", r.Calls, r.Failed)
	fmt.Fprintf(&b, "unavoidable: %d (calls that failed because the site Orthanc itself was down or restarting: %d while it was, "+
		"%d within %s after it answered again, on a DICOMweb server entry its restart erased and the agent had not re-pushed yet)\n",
		r.Unavoidable, r.UnavoidableDown, r.UnavoidableRepush, RepushGrace)
	fmt.Fprintf(&b, "token rotations: %d\n", r.Rotations)
	var parts []string
	for _, k := range Kinds() {
		parts = append(parts, fmt.Sprintf("%s %d", k.label(), r.FaultCounts[k]))
	}
	fmt.Fprintf(&b, "faults: %s\n", strings.Join(parts, ", "))
	fmt.Fprintf(&b, "longest without a valid token: %s\n", fmtGap(r.LongestGap))
	return b.String()
}

// Text is everything the soak prints at the end: the fault timeline, the
// unavoidable failures in a line each, every avoidable failure in full,
// the verdict with its problems, the closing block (Report) and where the
// logs are.
func (r *Result) Text() string {
	var b strings.Builder
	b.WriteString("Fault timeline:\n")
	for _, l := range r.Timeline {
		b.WriteString("  " + l + "\n")
	}
	if len(r.UnavoidableCalls) > 0 {
		b.WriteString("Unavoidable failures:\n")
		for _, l := range r.UnavoidableCalls {
			b.WriteString("  " + l + "\n")
		}
	}
	if len(r.FailedCalls) > 0 {
		b.WriteString("Avoidable failures, in full:\n")
		for _, l := range r.FailedCalls {
			b.WriteString(indent(l, "  ") + "\n")
		}
	}
	if problems := r.Problems(); len(problems) > 0 {
		b.WriteString("FAILED:\n")
		for _, p := range problems {
			b.WriteString("  " + p + "\n")
		}
	} else {
		fmt.Fprintf(&b, "PASSED: no avoidable failure, %d rotations (at least %d), every fault kind (%d of the broker kills and token endpoint faults met no token request), longest gap within %s\n",
			r.Rotations, r.RequiredRotations, r.Missed, GapBound)
	}
	b.WriteString(r.Report())
	if r.LogDir != "" {
		fmt.Fprintf(&b, "logs: %s\n", r.LogDir)
	}
	return b.String()
}

func indent(s, p string) string { return p + strings.ReplaceAll(s, "\n", "\n"+p) }

// fmtGap rounds to 100 ms ("0s" for none).
func fmtGap(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }

// fmtOffset is an offset from the start of the run, to 100 ms.
func fmtOffset(d time.Duration) string {
	if d < 0 {
		return "-" + fmtOffset(-d)
	}
	return d.Round(100 * time.Millisecond).String()
}

var (
	tokenShape  = regexp.MustCompile(`ya29\.[A-Za-z0-9._~+/=-]{8,}`)
	bearerShape = regexp.MustCompile(`(?i)bearer\s+[A-Za-z0-9._~+/=-]{8,}`)
)

// redact replaces anything shaped like a token or a bearer credential.
func redact(s string) string {
	s = tokenShape.ReplaceAllString(s, "[token redacted]")
	return bearerShape.ReplaceAllString(s, "Bearer [redacted]")
}

// judge turns what the run recorded into a Result.
func (r *runner) judge() *Result {
	r.mu.Lock()
	calls := append([]Call(nil), r.calls...)
	done := append([]Done(nil), r.done...)
	down := append([]interval(nil), r.down...)
	samples := append([]sample(nil), r.samples...)
	harness := append([]string(nil), r.harness...)
	r.mu.Unlock()

	res := &Result{Seed: r.cfg.Seed, Duration: r.cfg.Duration, RequiredRotations: RequiredRotations(r.cfg.Duration), Harness: harness}
	res.Calls = len(calls)
	for _, c := range calls {
		brief := func(why string) string {
			return fmt.Sprintf("call %d %s %s at +%s (took %s), %s: %v", c.Cycle, c.Op, c.Store, fmtOffset(r.offset(c.Start)),
				c.End.Sub(c.Start).Round(time.Millisecond), why, c.Err)
		}
		switch classify(c, down) {
		case classDown:
			res.Unavoidable++
			res.UnavoidableDown++
			res.UnavoidableCalls = append(res.UnavoidableCalls, brief("while the site Orthanc was down"))
		case classRepush:
			res.Unavoidable++
			res.UnavoidableRepush++
			res.UnavoidableCalls = append(res.UnavoidableCalls, brief("on an entry the restart erased"))
		case classFailed:
			res.Failed++
			res.FailedCalls = append(res.FailedCalls, r.describeFailure(c, done, down, samples))
		}
	}
	for _, d := range done {
		line := fmt.Sprintf("+%-8s %-22s %s", fmtOffset(r.offset(d.Start)), d.Kind, d.Describe())
		if d.Settling >= time.Second {
			line += fmt.Sprintf("; held %s for the system to settle", d.Settling.Round(100*time.Millisecond))
		}
		if d.Err != nil {
			line += "; FAILED: " + redact(d.Err.Error())
		} else {
			res.FaultCounts[d.Kind]++
			line += fmt.Sprintf("; over after %s", d.End.Sub(d.Start).Round(100*time.Millisecond)) + prefixed(", ", d.Detail)
			if d.Missed {
				res.Missed++
				line += " (met no token request)"
			}
		}
		res.Timeline = append(res.Timeline, line)
	}

	var names []string
	for _, st := range r.s.Stores() {
		names = append(names, st.Name)
	}
	for _, g := range gaps(samples, names, down) {
		if g.length > res.LongestGap {
			res.LongestGap = g.length
			state := "until +" + fmtOffset(r.offset(g.to))
			if g.ongoing {
				state = "still at the end"
			}
			res.GapDetail = fmt.Sprintf("%s from +%s %s (%s)%s", g.store, fmtOffset(r.offset(g.from)), state, g.reason, r.nearestFault(done, g.from))
		}
	}

	rot, err := r.rotations()
	if err != nil {
		res.Harness = append(res.Harness, "count token rotations: "+err.Error())
	}
	res.Rotations = rot

	for _, st := range r.s.Stores() {
		counts := r.s.Front.Statuses(st.Path)
		res.FrontRefused += counts[401] + counts[403]
	}
	res.Leaks = r.scanLeaks()
	return res
}

// nearestFault names the fault a moment falls in, or the last one before it.
func (r *runner) nearestFault(done []Done, t time.Time) string {
	var last *Done
	for i := range done {
		d := &done[i]
		if !t.Before(d.Start) && !t.After(d.End) {
			return fmt.Sprintf(" [during the %s that started at +%s]", d.Kind, fmtOffset(r.offset(d.Start)))
		}
		if d.End.Before(t) {
			last = d
		}
	}
	if last == nil {
		return " [before any fault]"
	}
	return fmt.Sprintf(" [%s after the %s that ended at +%s]", t.Sub(last.End).Round(100*time.Millisecond), last.Kind, fmtOffset(r.offset(last.End)))
}

// pushLine is the part of the agent's "pushed token to Orthanc" log line
// the soak reads (the token's fingerprint only; the agent never logs a token).
type pushLine struct {
	Time   time.Time `json:"time"`
	Msg    string    `json:"msg"`
	Server string    `json:"server"`
}

// rotations counts the pushes since the run started of a token the store's
// entry had not had before, from the agent's log.
func (r *runner) rotations() (int, error) {
	data, err := os.ReadFile(r.s.AgentLogPath)
	if err != nil {
		return 0, err
	}
	return countRotations(data, r.t0, r.end)
}

// countRotations counts, in an agent log, the pushes made in [from, to) of
// a token the store's entry had not had before; the first push of each
// store is not a rotation, and neither is a push of the same token again.
func countRotations(data []byte, from, to time.Time) (int, error) {
	seen := map[string]map[string]bool{}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"pushed token to Orthanc"`)) {
			continue
		}
		var pl pushLine
		var all map[string]json.RawMessage
		if json.Unmarshal(line, &pl) != nil || pl.Msg != "pushed token to Orthanc" || json.Unmarshal(line, &all) != nil {
			continue
		}
		var fp string
		if json.Unmarshal(all[wire.FingerprintKey], &fp) != nil || fp == "" {
			return 0, fmt.Errorf("an agent push line has no %s", wire.FingerprintKey)
		}
		if seen[pl.Server] == nil {
			seen[pl.Server] = map[string]bool{}
		}
		if seen[pl.Server][fp] {
			continue // the same token again (Orthanc restarted)
		}
		first := len(seen[pl.Server]) == 0
		seen[pl.Server][fp] = true
		if !first && !pl.Time.Before(from) && pl.Time.Before(to) {
			n++
		}
	}
	return n, sc.Err()
}

// scanLeaks looks for token values (every one the broker handed out, and
// anything shaped like one) in every log of the run.
func (r *runner) scanLeaks() []string {
	files := []string{r.s.BrokerLogPath, r.s.AgentLogPath, r.s.Site.LogPath, r.s.CloudOrthanc.LogPath,
		r.s.FakesLogPath, r.s.FrontLogPath, r.s.TapLogPath}
	tokens, err := r.s.DistinctTokens()
	if err != nil {
		return []string{"cannot list the tokens handed out: " + err.Error()}
	}
	var out []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		found := tokenShape.Match(data)
		for _, t := range tokens {
			if found {
				break
			}
			found = bytes.Contains(data, []byte(t))
		}
		if found {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}
