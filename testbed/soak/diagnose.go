package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/health"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/stack"
)

// What a failed call's report shows (see doc.go, "What a failure shows").
const (
	// logBefore and logAfter bound the log lines shown around a failed call.
	logBefore = 10 * time.Second
	logAfter  = 2 * time.Second
	// faultsBefore: faults that ended this long before a failed call
	// started are listed with it.
	faultsBefore = time.Minute
	// maxLinesPerSource caps the lines shown from each log (the last ones
	// of the window are kept).
	maxLinesPerSource = 40
	maxLineLen        = 600
)

// failureDetail is what the soak gathers the moment a call fails, while the
// state that made it fail may still be there.
type failureDetail struct {
	// site is the site Orthanc's answer (status and body, or the
	// transport error) to the request that failed.
	site string
	// jobs are the site Orthanc's failed DICOMweb jobs of the call's kind
	// created while it ran: what Orthanc met at the cloud hop.
	jobs []string
	// agent is the agent's /healthz view of the store just after.
	agent string
}

// job is the part of GET /jobs?expand the soak reads.
type job struct {
	ID               string
	Type             string
	State            string
	CreationTime     string
	ErrorCode        int
	ErrorDescription string
	Content          json.RawMessage
}

// jobContent is the part of a DICOMweb job's content that says why it failed.
type jobContent struct {
	FunctionErrorCode    int
	FunctionErrorDetails string
}

func (j job) content() jobContent {
	var c jobContent
	_ = json.Unmarshal(j.Content, &c)
	return c
}

// created parses Orthanc's CreationTime ("20261207T095241.656017", the
// Orthanc process's local time, which is this process's too).
func (j job) created() (time.Time, bool) {
	t, err := time.ParseInLocation("20060102T150405.999999", j.CreationTime, time.Local)
	return t, err == nil
}

func (j job) String() string {
	var content bytes.Buffer
	if json.Compact(&content, j.Content) != nil {
		content.Reset()
	}
	return clip(redact(fmt.Sprintf("job %s %s %s created %s: ErrorCode %d %q, Content %s",
		j.ID, j.Type, j.State, j.CreationTime, j.ErrorCode, j.ErrorDescription, content.String())))
}

// jobType is the DICOMweb job type of an operation ("" for QIDO: no job).
func jobType(op Op) string {
	return map[Op]string{OpSTOW: "DicomWebStowClient", OpWADO: "DicomWebWadoRetrieveClient"}[op]
}

// siteJobs reads the site Orthanc's jobs (nil when it does not answer).
func (r *runner) siteJobs() []job {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var jobs []job
	if r.s.Site.DoContext(ctx, http.MethodGet, "/jobs?expand", nil, &jobs) != nil {
		return nil
	}
	return jobs
}

// gather records what the failed call c met, at once.
func (r *runner) gather(c *Call, jobs []job) {
	d := &failureDetail{}
	var he *orthancproc.HTTPError
	var je *stack.JobError
	switch {
	case errors.As(c.Err, &je):
		d.site = fmt.Sprintf("the %s job %s ended in Failure: ErrorCode %d %q, Content %s", je.Op, je.ID, je.ErrorCode,
			je.ErrorDescription, oneLine(je.Content))
	case errors.As(c.Err, &he):
		d.site = fmt.Sprintf("HTTP %d to %s %s: %s", he.Status, he.Method, he.Path, oneLine(he.Body))
	default:
		d.site = "no error status from Orthanc; the call failed with: " + oneLine(c.Err.Error())
	}
	if typ := jobType(c.Op); typ != "" {
		for _, j := range jobs {
			t, ok := j.created()
			if j.Type == typ && ok && !t.Before(c.Start.Add(-time.Second)) && !t.After(c.End.Add(time.Second)) {
				d.jobs = append(d.jobs, j.String())
			}
		}
	}
	// Briefly: the call loop waits for this, and a stalled agent must not
	// hold the next calls back long.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if st, err := r.agentStatus(ctx); err != nil {
		d.agent = "no answer: " + oneLine(err.Error())
	} else {
		d.agent = describeStore(st, c.Store)
	}
	c.detail = d
}

// describeStore is the agent's view of one store and of its connections.
func describeStore(st *health.Status, store string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "healthy=%v broker up=%v", st.Healthy, st.Broker.Up)
	if st.Broker.LastError != "" {
		fmt.Fprintf(&b, " (%s)", st.Broker.LastError)
	}
	fmt.Fprintf(&b, ", orthanc reachable=%v", st.Orthanc.Reachable)
	if st.Orthanc.LastError != "" {
		fmt.Fprintf(&b, " (%s)", st.Orthanc.LastError)
	}
	for _, ss := range st.Stores {
		if ss.Store != store {
			continue
		}
		fmt.Fprintf(&b, "; %s: state %s, pushed=%v", ss.Store, ss.State, ss.Pushed)
		if ss.LastPush != nil {
			fmt.Fprintf(&b, ", last push %s", ss.LastPush.Format(time.RFC3339Nano))
		}
		if ss.TokenExpiresAt != nil {
			fmt.Fprintf(&b, ", token expires %s", ss.TokenExpiresAt.Format(time.RFC3339))
		}
		if ss.NextRefresh != nil {
			fmt.Fprintf(&b, ", next refresh %s", ss.NextRefresh.Format(time.RFC3339Nano))
		}
		if ss.LastError != "" {
			fmt.Fprintf(&b, ", last error %q", ss.LastError)
		}
	}
	return clip(redact(b.String()))
}

// describeFailure is the full report of a failed call: what it was, when,
// what each hop answered, which faults were active or had recently ended,
// the store's entry in Orthanc around it and every log's lines around it.
func (r *runner) describeFailure(c Call, done []Done, down []interval, samples []sample) string {
	var b strings.Builder
	at := func(t time.Time) string {
		return "+" + fmtOffset(r.offset(t)) + " (" + t.UTC().Format("15:04:05.000") + ")"
	}
	fmt.Fprintf(&b, "call %d %s %s from %s to %s (%s): %v\n", c.Cycle, c.Op, c.Store, at(c.Start), at(c.End),
		c.End.Sub(c.Start).Round(time.Millisecond), c.Err)

	b.WriteString("  hops:\n")
	if d := c.detail; d != nil {
		fmt.Fprintf(&b, "    site Orthanc: %s\n", d.site)
		for _, j := range d.jobs {
			fmt.Fprintf(&b, "    site Orthanc %s\n", j)
		}
		if len(d.jobs) == 0 && jobType(c.Op) != "" {
			b.WriteString("    site Orthanc: no job of this call's kind created while it ran\n")
		}
	}
	if st := r.s.Store(c.Store); st != nil {
		evs := r.s.Front.Events(st.Path, c.Start.Add(-time.Second), c.End.Add(time.Second))
		if len(evs) == 0 {
			b.WriteString("    cloud front (fake Healthcare API): no request for this store while the call ran\n")
		}
		for _, ev := range evs {
			fp := ev.Fingerprint
			if fp == "" {
				fp = "none"
			}
			fmt.Fprintf(&b, "    cloud front: %s %s %s -> HTTP %d after %s (bearer fingerprint %s)\n", at(ev.Start), ev.Method,
				clip(ev.Path), ev.Status, ev.End.Sub(ev.Start).Round(time.Millisecond), fp)
		}
	}
	if d := c.detail; d != nil {
		fmt.Fprintf(&b, "  agent just after: %s\n", d.agent)
	}

	b.WriteString("  faults active or recently ended:\n")
	n := 0
	for _, f := range done {
		if f.End.Before(c.Start.Add(-faultsBefore)) || f.Start.After(c.End.Add(logAfter)) {
			continue
		}
		n++
		rel := "active while it ran"
		switch {
		case f.End.Before(c.Start):
			rel = fmt.Sprintf("ended %s before it started", c.Start.Sub(f.End).Round(time.Millisecond))
		case f.Start.After(c.End):
			rel = fmt.Sprintf("started %s after it ended", f.Start.Sub(c.End).Round(time.Millisecond))
		}
		fmt.Fprintf(&b, "    %s from %s to %s: %s; %s\n", f.Kind, at(f.Start), at(f.End), f.Describe(), rel)
	}
	for _, iv := range down {
		if iv.to.Before(c.Start.Add(-faultsBefore)) || iv.from.After(c.End) {
			continue
		}
		fmt.Fprintf(&b, "    site Orthanc down (stop asked to ready) from %s to %s\n", at(iv.from), at(iv.to))
	}
	if n == 0 {
		fmt.Fprintf(&b, "    none in the %s before it\n", faultsBefore)
	}

	b.WriteString("  its entry in the site Orthanc (samples):\n")
	for _, l := range r.entrySamples(c, samples) {
		fmt.Fprintf(&b, "    %s\n", l)
	}

	from, to := c.Start.Add(-logBefore), c.End.Add(logAfter)
	st := r.s.Store(c.Store)
	storeWords := []string{`"` + c.Store + `"`}
	if st != nil {
		storeWords = append(storeWords, st.ServiceAccount, st.Path)
	}
	sources := []struct {
		name, path string
		keep       func(line string) bool
	}{
		{"agent", r.s.AgentLogPath, func(l string) bool {
			return containsAny(l, storeWords) || !strings.Contains(l, `"level":"INFO"`) || containsAny(l, agentEvents)
		}},
		{"broker", r.s.BrokerLogPath, func(l string) bool {
			return containsAny(l, storeWords) || !containsAny(l, []string{`"severity":"INFO"`})
		}},
		{"broker tap (agent to broker)", r.s.TapLogPath, func(string) bool { return true }},
		{"google fakes", r.s.FakesLogPath, func(l string) bool { return containsAny(l, storeWords) || !strings.Contains(l, "token minted") }},
		{"site Orthanc", r.s.Site.LogPath, func(string) bool { return true }},
		{"cloud Orthanc", r.s.CloudOrthanc.LogPath, func(string) bool { return true }},
	}
	for _, src := range sources {
		lines, omitted := logWindow(src.path, from, to, src.keep)
		fmt.Fprintf(&b, "  %s log from %s to %s", src.name, at(from), at(to))
		if omitted > 0 {
			fmt.Fprintf(&b, " (last %d lines; %d earlier ones left out)", len(lines), omitted)
		}
		if len(lines) == 0 {
			b.WriteString(": nothing\n")
			continue
		}
		b.WriteString(":\n")
		for _, l := range lines {
			fmt.Fprintf(&b, "    %s\n", l)
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// entrySamples describes the store's entry in the samples from the last one
// before the call to the first one after it.
func (r *runner) entrySamples(c Call, samples []sample) []string {
	idx := -1
	for i, sm := range r.s.Stores() {
		if sm.Name == c.Store {
			idx = i
		}
	}
	if idx < 0 {
		return nil
	}
	first, last := -1, -1
	for i, sm := range samples {
		if sm.at.Before(c.Start) {
			first = i
		}
		if !sm.at.Before(c.End) && last < 0 {
			last = i
		}
	}
	if first < 0 {
		first = 0
	}
	if last < 0 {
		last = len(samples) - 1
	}
	var out []string
	for i := first; i <= last && i < len(samples); i++ {
		sm := samples[i]
		state := "no entry of the agent's"
		switch {
		case sm.err != "":
			state = "Orthanc did not answer: " + sm.err
		case sm.expiry[idx] != "":
			state = fmt.Sprintf("valid=%v, token fingerprint %s, expiry %s", sm.valid[idx], sm.fp[idx], sm.expiry[idx])
		}
		out = append(out, fmt.Sprintf("+%s: %s", fmtOffset(r.offset(sm.at)), clip(state)))
	}
	if len(out) > 30 {
		out = append([]string{fmt.Sprintf("(%d samples; first and last 10)", len(out))}, append(out[:10:10], out[len(out)-10:]...)...)
	}
	return out
}

// agentEvents are the agent's INFO lines about its connections and its own
// life, shown with a failed call whatever store they name.
var agentEvents = []string{"Orthanc reachable again", "broker reachable again", "agent started", "configuration reloaded",
	"shutting down", "health and metrics listening"}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// orthancLine is the start of an Orthanc log line: "W1207 09:52:41.656017 ".
var orthancLine = regexp.MustCompile(`^[IWEFT](\d{4} \d{2}:\d{2}:\d{2}\.\d{6}) `)

// startMarker is orthancproc's line at each start of Orthanc.
var startMarker = regexp.MustCompile(`^=== orthancproc: .* (\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z) ===$`)

// lineTime reads a log line's time: a JSON line's "time", an Orthanc line's
// prefix (local time, year taken from ref), an orthancproc marker.
func lineTime(line string, ref time.Time) (time.Time, bool) {
	if strings.HasPrefix(line, "{") {
		var v struct {
			Time time.Time `json:"time"`
		}
		if json.Unmarshal([]byte(line), &v) == nil && !v.Time.IsZero() {
			return v.Time, true
		}
		return time.Time{}, false
	}
	if m := orthancLine.FindStringSubmatch(line); m != nil {
		t, err := time.ParseInLocation("2006 0102 15:04:05.000000", fmt.Sprintf("%d %s", ref.Year(), m[1]), time.Local)
		return t, err == nil
	}
	if m := startMarker.FindStringSubmatch(line); m != nil {
		t, err := time.Parse(time.RFC3339, m[1])
		return t, err == nil
	}
	return time.Time{}, false
}

// secretLine matches log lines that could carry a credential; they are
// withheld (orthancproc does the same for its error messages).
var secretLine = regexp.MustCompile(`(?i)authorization|bearer|password`)

// logWindow returns the lines of a log whose time is in [from, to] and
// that keep accepts (at most maxLinesPerSource, the last ones), and how
// many more there were. A line without a time of its own belongs with the
// line before it.
func logWindow(path string, from, to time.Time, keep func(string) bool) (lines []string, omitted int) {
	f, err := os.Open(path)
	if err != nil {
		return []string{"(" + err.Error() + ")"}, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	in := false
	for sc.Scan() {
		line := sc.Text()
		if t, ok := lineTime(line, from); ok {
			in = !t.Before(from) && !t.After(to)
		}
		if !in || !keep(line) {
			continue
		}
		if secretLine.MatchString(line) && !strings.HasPrefix(line, "{") {
			line = "(line withheld: may contain a credential)"
		}
		lines = append(lines, clip(redact(line)))
	}
	if len(lines) > maxLinesPerSource {
		omitted = len(lines) - maxLinesPerSource
		lines = lines[omitted:]
	}
	return lines, omitted
}

func oneLine(s string) string { return clip(strings.Join(strings.Fields(redact(s)), " ")) }

func clip(s string) string {
	if len(s) > maxLineLen {
		return s[:maxLineLen] + "…"
	}
	return s
}
