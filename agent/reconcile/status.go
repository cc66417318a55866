package reconcile

import (
	"strings"
	"time"
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

// Status is the loop's snapshot, as the health page serves it (the JSON
// body of /healthz) and "agent status" reads it back.
type Status struct {
	Healthy bool `json:"healthy"`
	// Reason says why the agent is unhealthy (empty when healthy).
	Reason  string        `json:"reason,omitempty"`
	AgentID string        `json:"agent_id"`
	Time    time.Time     `json:"time"`
	Broker  BrokerStatus  `json:"broker"`
	Orthanc OrthancStatus `json:"orthanc"`
	Stores  []StoreStatus `json:"stores"`
	// KeyKind is the kind of key the agent signs with: "file" (Ed25519 in
	// Broker.KeyFile) or "tpm" (inside the host's TPM). Empty from an
	// agent that predates it.
	KeyKind string `json:"key_kind,omitempty"`

	// Resubmit says whether failed uploads are sent again: "enabled
	// (DICOMweb 1.20)", "unavailable: DICOMweb 1.7 < 1.18", "disabled
	// (ResubmitFailedJobs is false)", "unknown: …" or "error: …"
	// (resubmit.Status.State). Empty from an agent that predates it.
	Resubmit string `json:"resubmit,omitempty"`
	// ResubmitError is the last failure of an enabled watcher.
	ResubmitError string `json:"resubmit_error,omitempty"`
	// Resubmitted counts the failed uploads sent again since the agent
	// started (the orthanc_gcp_agent_jobs_resubmitted_total counter), and
	// ResubmitGivenUp those given up (orthanc_gcp_agent_jobs_given_up_total,
	// which /metrics derives from it); ResubmitWaiting is how many wait for
	// a fresh token now.
	Resubmitted     int `json:"resubmitted"`
	ResubmitWaiting int `json:"resubmit_waiting"`
	ResubmitGivenUp int `json:"resubmit_given_up"`
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
