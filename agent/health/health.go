// Package health serves the agent's /healthz (the reconcile loop's
// snapshot as JSON, 200 only while every managed store has a pushed,
// unexpired token) and /metrics (Prometheus, fed through the loop's
// Recorder), and reads /healthz back for "agent status".
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/reconcile"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
)

// Status is the /healthz body: the reconcile loop's snapshot.
type Status = reconcile.Status

// ReasonOther counts a failure whose reason is not one of
// reconcile.Reasons; the label then says nothing it was given.
const ReasonOther = "other"

// Metrics holds the agent's Prometheus collectors in their own registry.
// It is the reconcile loop's Recorder.
type Metrics struct {
	Registry *prometheus.Registry

	pushes, deletes prometheus.Counter
	resubmitted     prometheus.Counter
	failures        *prometheus.CounterVec
	brokerSuccess   prometheus.Gauge
	orthancUp       prometheus.Gauge
	keyInfo         *prometheus.GaugeVec
	known           map[string]bool
}

var _ reconcile.Recorder = (*Metrics)(nil)

// NewMetrics creates the collectors, with a zero for every failure reason.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		pushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orthanc_gcp_agent_pushes_total",
			Help: "DICOMweb server entries written to Orthanc (PUT).",
		}),
		deletes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orthanc_gcp_agent_deletes_total",
			Help: "Managed DICOMweb server entries deleted from Orthanc (store no longer granted).",
		}),
		resubmitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "orthanc_gcp_agent_jobs_resubmitted_total",
			Help: "Failed DICOMweb STOW-RS uploads (the store refused the token) sent again as new Orthanc jobs.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orthanc_gcp_agent_failures_total",
			Help: "Failed broker or Orthanc operations, by reason.",
		}, []string{"reason"}),
		brokerSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orthanc_gcp_agent_last_broker_success_timestamp_seconds",
			Help: "Unix time of the last successful broker call (0: none yet).",
		}),
		orthancUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "orthanc_gcp_agent_orthanc_reachable",
			Help: "1 if the last Orthanc call succeeded, else 0.",
		}),
		keyInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "orthanc_gcp_agent_key_info",
			Help: "1 for the kind of key the agent signs with: file (Ed25519 in Broker.KeyFile) or tpm (inside the host's TPM).",
		}, []string{"kind"}),
		known: map[string]bool{},
	}
	for _, r := range append(reconcile.Reasons(), ReasonOther) {
		m.known[r] = true
		m.failures.WithLabelValues(r) // export zeros so rate() works from the start
	}
	m.Registry.MustRegister(m.pushes, m.deletes, m.resubmitted, m.failures, m.brokerSuccess, m.orthancUp, m.keyInfo,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Push counts one PUT to Orthanc.
func (m *Metrics) Push() { m.pushes.Inc() }

// Delete counts one deleted entry.
func (m *Metrics) Delete() { m.deletes.Inc() }

// Resubmitted counts one failed upload sent again.
func (m *Metrics) Resubmitted() { m.resubmitted.Inc() }

// Failure counts one failure; an unknown reason is counted as ReasonOther.
func (m *Metrics) Failure(reason string) {
	if !m.known[reason] {
		reason = ReasonOther
	}
	m.failures.WithLabelValues(reason).Inc()
}

// BrokerSuccess records a successful broker call at t.
func (m *Metrics) BrokerSuccess(t time.Time) {
	m.brokerSuccess.Set(float64(t.UnixNano()) / 1e9)
}

// SetKeyKind records the kind of the agent's key ("file" or "tpm"): the
// one series of orthanc_gcp_agent_key_info, with the value 1.
func (m *Metrics) SetKeyKind(kind string) {
	if kind == "" {
		kind = "unknown"
	}
	m.keyInfo.Reset()
	m.keyInfo.WithLabelValues(kind).Set(1)
}

// OrthancReachable records whether Orthanc answered.
func (m *Metrics) OrthancReachable(ok bool) {
	if ok {
		m.orthancUp.Set(1)
	} else {
		m.orthancUp.Set(0)
	}
}

var (
	expiryDesc = prometheus.NewDesc("orthanc_gcp_agent_token_expiry_seconds",
		"Seconds until the store's cached token expires (negative: expired).", []string{"store"}, nil)
	givenUpDesc = prometheus.NewDesc("orthanc_gcp_agent_jobs_given_up_total",
		"Failed DICOMweb STOW-RS uploads given up (the store refused the token again after the last re-send, "+
			"or Orthanc refused the new job): they must be sent again by hand.", nil, nil)
	resubmitStateDesc = prometheus.NewDesc("orthanc_gcp_agent_resubmit_state",
		"1 for the state of re-sending failed uploads (enabled, disabled, unavailable: DICOMweb plugin too old, "+
			"unknown: plugin version not read yet, error: paused), 0 for the others.", []string{"state"}, nil)
)

// ResubmitStates are the values of orthanc_gcp_agent_resubmit_state's
// state label: the first word of Status.Resubmit.
var ResubmitStates = []string{"enabled", "disabled", "unavailable", "unknown", "error"}

// resubmitState is the word of ResubmitStates that Status.Resubmit starts
// with ("enabled (DICOMweb 1.20)": "enabled"), or "" for none.
func resubmitState(s string) string {
	for _, w := range ResubmitStates {
		if rest, ok := strings.CutPrefix(s, w); ok && (rest == "" || rest[0] == ' ' || rest[0] == ':') {
			return w
		}
	}
	return ""
}

// statusCollector derives metrics from the status snapshot at scrape
// time: seconds-until-expiry per store (current without a ticking
// goroutine), and the state and give-ups of re-sending failed uploads.
type statusCollector struct {
	status func() Status
	now    func() time.Time
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- expiryDesc
	ch <- givenUpDesc
	ch <- resubmitStateDesc
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	s := c.status()
	for _, st := range s.Stores {
		if st.TokenExpiresAt == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue,
			st.TokenExpiresAt.Sub(now).Seconds(), st.Store)
	}
	// Counted since the agent started, like jobs_resubmitted_total.
	ch <- prometheus.MustNewConstMetric(givenUpDesc, prometheus.CounterValue, float64(s.ResubmitGivenUp))
	state := resubmitState(s.Resubmit)
	for _, w := range ResubmitStates {
		v := 0.0
		if w == state {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(resubmitStateDesc, prometheus.GaugeValue, v, w)
	}
}

// Handler serves /healthz and /metrics. status must return a fresh
// snapshot; Handler evaluates it at the request time given by now, and
// derives the per-store seconds-until-expiry gauge and the resubmit
// metrics from it at scrape time.
func Handler(status func() Status, m *Metrics, now func() time.Time) http.Handler {
	fromStatus := prometheus.NewRegistry()
	fromStatus.MustRegister(&statusCollector{status: status, now: now})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		s := status()
		s.Evaluate(now())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !s.Healthy {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(prometheus.Gatherers{m.Registry, fromStatus}, promhttp.HandlerOpts{}))
	return mux
}

// StatusURL turns a Listen address into the URL of /healthz, mapping a
// wildcard host to loopback.
func StatusURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", fmt.Errorf("address %q is not host:port", addr)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz", nil
}

// Fetch reads a running agent's status from its Listen address. A 503
// answer is not an error: its body is the status.
func Fetch(ctx context.Context, addr string) (*Status, error) {
	u, err := StatusURL(addr)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent at %s is not answering: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return nil, fmt.Errorf("agent at %s answered HTTP %d", addr, resp.StatusCode)
	}
	var s Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&s); err != nil {
		return nil, errors.New("agent status is not the expected JSON")
	}
	return &s, nil
}

// WriteTable prints s for people: a summary line, then one row per store
// (store, Orthanc server name, state, token expires in, last push, last error).
// Every text of s is printed through logtext.Printable: it came from Orthanc,
// the broker or a configuration (or from whatever answers on the port), and
// a control character in it must not drive the terminal or fake a line.
func WriteTable(w io.Writer, s *Status, now time.Time) error {
	pr := logtext.Printable
	health := "healthy"
	if !s.Healthy {
		health = "UNHEALTHY (" + pr(s.Reason) + ")"
	}
	broker := "down"
	if s.Broker.Up {
		broker = "up"
	}
	if s.Broker.LastSuccess != nil {
		broker += ", last success " + ago(now, *s.Broker.LastSuccess)
	}
	orth := "unreachable"
	if s.Orthanc.Reachable {
		orth = "reachable"
	}
	key := ""
	if s.KeyKind != "" {
		key = "; key " + pr(s.KeyKind)
	}
	fmt.Fprintf(w, "agent %s: %s; broker %s; Orthanc %s%s\n", pr(s.AgentID), health, broker, orth, key)
	if s.Broker.LastError != "" {
		fmt.Fprintf(w, "broker error: %s\n", pr(s.Broker.LastError))
	}
	if s.Orthanc.LastError != "" {
		fmt.Fprintf(w, "Orthanc error: %s\n", pr(s.Orthanc.LastError))
	}
	if line := ResubmitLine(s); line != "" {
		fmt.Fprintln(w, line)
	}
	stores := append([]reconcile.StoreStatus(nil), s.Stores...)
	sort.Slice(stores, func(i, j int) bool { return stores[i].Store < stores[j].Store })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STORE\tORTHANC SERVER\tSTATE\tTOKEN EXPIRES IN\tLAST PUSH\tLAST ERROR")
	for _, st := range stores {
		exp := "-"
		if st.TokenExpiresAt != nil {
			d := st.TokenExpiresAt.Sub(now).Truncate(time.Second)
			if d <= 0 {
				exp = "expired"
			} else {
				exp = d.String()
			}
		}
		push := "-"
		if st.LastPush != nil {
			push = ago(now, *st.LastPush)
		}
		errText := st.LastError
		if errText == "" {
			errText = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", pr(st.Store), pr(st.Server), pr(st.State), exp, push, pr(errText))
	}
	return tw.Flush()
}

// ResubmitLine is the status table's line about failed uploads sent
// again, e.g. "failed uploads: resubmit enabled (DICOMweb 1.20);
// resubmitted 2, waiting 0, given up 0" or "failed uploads: resubmit
// unavailable: DICOMweb 1.7 < 1.18". It is "" for an agent that does not
// report it. Its texts are escaped as WriteTable's are.
func ResubmitLine(s *Status) string {
	if s.Resubmit == "" {
		return ""
	}
	line := "failed uploads: resubmit " + logtext.Printable(s.Resubmit)
	if strings.HasPrefix(s.Resubmit, "enabled") || s.Resubmitted > 0 || s.ResubmitGivenUp > 0 {
		line += fmt.Sprintf("; resubmitted %d, waiting %d, given up %d", s.Resubmitted, s.ResubmitWaiting, s.ResubmitGivenUp)
	}
	if s.ResubmitError != "" && !strings.HasSuffix(s.Resubmit, s.ResubmitError) {
		line += "; last error: " + logtext.Printable(s.ResubmitError)
	}
	return line
}

func ago(now, t time.Time) string {
	d := now.Sub(t).Truncate(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}
