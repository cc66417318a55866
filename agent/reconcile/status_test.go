package reconcile

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time { t := t0.Add(d); return &t }

func TestEvaluate(t *testing.T) {
	ok := StoreStatus{Store: "a", Server: "a", State: StateOK, Pushed: true, TokenExpiresAt: at(time.Hour)}
	tests := []struct {
		name    string
		status  Status
		healthy bool
		reason  string
		states  []string
	}{
		{"starting", Status{}, false, "no store list", nil},
		{"no stores", Status{Broker: BrokerStatus{Synced: true}}, false, "no stores", nil},
		{"all ok", Status{Broker: BrokerStatus{Synced: true}, Stores: []StoreStatus{ok}}, true, "", []string{StateOK}},
		{"ok with broker down", Status{Broker: BrokerStatus{Synced: true, Up: false, LastError: "x"}, Stores: []StoreStatus{ok}}, true, "", []string{StateOK}},
		{"expired since snapshot", Status{Broker: BrokerStatus{Synced: true}, Stores: []StoreStatus{
			{Store: "a", State: StateOK, Pushed: true, TokenExpiresAt: at(-time.Second)}}}, false, "a expired", []string{StateExpired}},
		{"not pushed", Status{Broker: BrokerStatus{Synced: true}, Stores: []StoreStatus{ok,
			{Store: "b", State: StatePending, TokenExpiresAt: at(time.Hour)}}}, false, "b pending", []string{StateOK, StatePending}},
		{"not granted", Status{Broker: BrokerStatus{Synced: true}, Stores: []StoreStatus{ok, {Store: "c", State: StateNotGranted}}}, false, "c not_granted", nil},
		{"conflict", Status{Broker: BrokerStatus{Synced: true}, Stores: []StoreStatus{{Store: "d", State: StateConflict, TokenExpiresAt: at(time.Hour)}}}, false, "d conflict", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.status
			s.Evaluate(t0)
			if s.Healthy != tc.healthy || !strings.Contains(s.Reason, tc.reason) {
				t.Errorf("healthy=%v reason=%q", s.Healthy, s.Reason)
			}
			for i, want := range tc.states {
				if s.Stores[i].State != want {
					t.Errorf("store %d state %s, want %s", i, s.Stores[i].State, want)
				}
			}
		})
	}
}
