package api

import (
	"crypto/ed25519"
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
)

// An agent listed with PublicKeys is let in by either key (a key roll-over:
// the old key keeps working until it is dropped from the policy); a third
// key of the same id is not.
func TestEitherListedKeyAuthenticates(t *testing.T) {
	old, next, other := newSpec(t, "clinic-a", false), newSpec(t, "clinic-a", false), newSpec(t, "clinic-a", false)
	line := func(a agentSpec) string { return agentkey.FormatPublicKey(a.priv.Public().(ed25519.PublicKey)) }
	doc, _ := json.Marshal(map[string]any{
		"Audience": testAudience,
		"Accounts": map[string]any{"store-a": map[string]any{"Project": "p", "Location": "l", "Dataset": "d", "DicomStore": "a", "ServiceAccountSecret": "/nonexistent/a.json"}},
		"Agents":   map[string]any{"clinic-a": map[string]any{"PublicKeys": []string{line(old), line(next)}, "Accounts": []string{"store-a"}}},
	})
	p, err := policy.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, nil)
	h.srv.Policy = func() *policy.Policy { return p }
	for _, tt := range []struct {
		name string
		who  agentSpec
		want int
	}{{"old key", old, 200}, {"next key", next, 200}, {"unlisted key", other, 401}} {
		rec := httptest.NewRecorder()
		h.srv.ServeHTTP(rec, newTokenRequest(tt.who.header(t, time.Now()), `{"stores":["store-a"]}`))
		if rec.Code != tt.want {
			t.Errorf("%s: %d, want %d: %s", tt.name, rec.Code, tt.want, rec.Body)
		}
	}
}
