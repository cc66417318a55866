// Package health serves the agent's /healthz (JSON status, 200 only while
// every managed store has a pushed, unexpired token) and /metrics
// (Prometheus), and reads /healthz back for "agent status".
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
)

// Store states shown in StoreStatus.State.
const (
	StateOK         = "ok"          // pushed, unexpired token
	StatePending    = "pending"     // no token pushed yet
	StateExpired    = "expired"     // the pushed token has expired
	StateError      = "error"       // last refresh or push failed
	StateNotGranted = "not_granted" // listed in Accounts but not granted by the broker
	StateConflict   = "conflict"    // Orthanc has an entry of that name the agent does not manage
)

// Status is the JSON body of /healthz.
type Status struct {
	Healthy bool `json:"healthy"`
	// Reason says why the agent is unhealthy (empty when healthy).
	Reason  string        `json:"reason,omitempty"`
	AgentID string        `json:"agent_id"`
	Time    time.Time     `json:"time"`
	Broker  BrokerStatus  `json:"broker"`
	Orthanc OrthancStatus `json:"orthanc"`
	Stores  []StoreStatus `json:"stores"`
}

// BrokerStatus describes the agent's view of the broker.
type BrokerStatus struct {
	// Synced is true once the broker has told the agent its stores.
	Synced      bool       `json:"synced"`
	Up          bool       `json:"up"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	NextCall    *time.Time `json:"next_call,omitempty"`
}

// OrthancStatus describes the agent's view of Orthanc.
type OrthancStatus struct {
	Reachable bool       `json:"reachable"`
	LastCheck *time.Time `json:"last_check,omitempty"`
	LastError string     `json:"last_error,omitempty"`
}

// StoreStatus is one managed store.
type StoreStatus struct {
	Store string `json:"store"`
	// Server is the Orthanc DICOMweb server name (the store's name).
	Server         string     `json:"server"`
	State          string     `json:"state"`
	DicomWebURL    string     `json:"dicomweb_url,omitempty"`
	Pushed         bool       `json:"pushed"`
	TokenExpiresAt *time.Time `json:"token_expires_at,omitempty"`
	NextRefresh    *time.Time `json:"next_refresh,omitempty"`
	LastPush       *time.Time `json:"last_push,omitempty"`
	LastError      string     `json:"last_error,omitempty"`
}

// Usable reports whether Orthanc holds a token for the store that is valid at now.
func (s StoreStatus) Usable(now time.Time) bool {
	return s.Pushed && s.TokenExpiresAt != nil && now.Before(*s.TokenExpiresAt)
}

// Evaluate fills Healthy and Reason: healthy only when the broker has
// named the stores, there is at least one, and each has a pushed,
// unexpired token. It also turns an "ok" store whose token has since
// expired into "expired".
func (s *Status) Evaluate(now time.Time) {
	s.Time = now
	var bad []string
	for i := range s.Stores {
		st := &s.Stores[i]
		if st.State == StateOK && !st.Usable(now) {
			st.State = StateExpired
		}
		if !st.Usable(now) {
			bad = append(bad, st.Store+" "+st.State)
		}
	}
	switch {
	case !s.Broker.Synced:
		s.Healthy, s.Reason = false, "no store list from the broker yet"
	case len(s.Stores) == 0:
		s.Healthy, s.Reason = false, "the broker grants this agent no stores"
	case len(bad) > 0:
		s.Healthy, s.Reason = false, "not usable: "+strings.Join(bad, ", ")
	default:
		s.Healthy, s.Reason = true, ""
	}
}

// Failure reasons counted in orthanc_gcp_agent_failures_total; a fixed
// set so the label can never carry a token or URL.
var FailureReasons = []string{
	"broker_unreachable", "broker_error", "rate_limited", "unauthenticated",
	"forbidden", "rejected", "bad_response", "store_error",
	"orthanc_unreachable", "orthanc_error", "name_conflict", "other",
}

// Metrics holds the agent's Prometheus collectors in their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	pushes, deletes prometheus.Counter
	failures        *prometheus.CounterVec
	brokerSuccess   prometheus.Gauge
	orthancUp       prometheus.Gauge
	known           map[string]bool
}

// NewMetrics creates the collectors. status is read at scrape time for the
// per-store seconds-until-expiry gauge; now is the clock.
func NewMetrics(status func() Status, now func() time.Time) *Metrics {
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
		known: map[string]bool{},
	}
	for _, r := range FailureReasons {
		m.known[r] = true
		m.failures.WithLabelValues(r) // export zeros so rate() works from the start
	}
	m.Registry.MustRegister(m.pushes, m.deletes, m.failures, m.brokerSuccess, m.orthancUp,
		&expiryCollector{status: status, now: now},
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Push counts one PUT to Orthanc.
func (m *Metrics) Push() { m.pushes.Inc() }

// Delete counts one deleted entry.
func (m *Metrics) Delete() { m.deletes.Inc() }

// Failure counts one failure; an unknown reason is counted as "other".
func (m *Metrics) Failure(reason string) {
	if !m.known[reason] {
		reason = "other"
	}
	m.failures.WithLabelValues(reason).Inc()
}

// BrokerSuccess records a successful broker call at t.
func (m *Metrics) BrokerSuccess(t time.Time) {
	m.brokerSuccess.Set(float64(t.UnixNano()) / 1e9)
}

// OrthancReachable records whether Orthanc answered.
func (m *Metrics) OrthancReachable(ok bool) {
	if ok {
		m.orthancUp.Set(1)
	} else {
		m.orthancUp.Set(0)
	}
}

var expiryDesc = prometheus.NewDesc("orthanc_gcp_agent_token_expiry_seconds",
	"Seconds until the store's cached token expires (negative: expired).", []string{"store"}, nil)

// expiryCollector computes seconds-until-expiry at scrape time, so the
// value is current without a ticking goroutine.
type expiryCollector struct {
	status func() Status
	now    func() time.Time
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	for _, s := range c.status().Stores {
		if s.TokenExpiresAt == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue,
			s.TokenExpiresAt.Sub(now).Seconds(), s.Store)
	}
}

// Handler serves /healthz and /metrics. status must return a fresh
// snapshot; Handler evaluates it at the request time given by now.
func Handler(status func() Status, m *Metrics, now func() time.Time) http.Handler {
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
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
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
func WriteTable(w io.Writer, s *Status, now time.Time) error {
	health := "healthy"
	if !s.Healthy {
		health = "UNHEALTHY (" + s.Reason + ")"
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
	fmt.Fprintf(w, "agent %s: %s; broker %s; Orthanc %s\n", s.AgentID, health, broker, orth)
	if s.Broker.LastError != "" {
		fmt.Fprintf(w, "broker error: %s\n", s.Broker.LastError)
	}
	if s.Orthanc.LastError != "" {
		fmt.Fprintf(w, "Orthanc error: %s\n", s.Orthanc.LastError)
	}
	stores := append([]StoreStatus(nil), s.Stores...)
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", st.Store, st.Server, st.State, exp, push, errText)
	}
	return tw.Flush()
}

func ago(now, t time.Time) string {
	d := now.Sub(t).Truncate(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}
