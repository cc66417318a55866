package reconcile

import (
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/brokerclient"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// A new token that expires in the same second as the pushed one is still a
// new token (found by the soak: Orthanc kept the old one).
func TestPushReasonComparesTheTokenNotJustItsExpiry(t *testing.T) {
	exp := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	const url = "https://healthcare.googleapis.com/v1/x/dicomWeb/"
	st := &store{name: "a", token: &brokerclient.Token{AccessToken: "ya29.new", ExpiresAt: exp, DicomWebURL: url}}
	entry := func(token string, expiry time.Time) orthanc.Server {
		return orthanc.Server{Name: "a", URL: url, Properties: map[string]string{
			orthanc.TokenProperty: wire.Fingerprint(token), orthanc.ExpiryProperty: orthanc.FormatExpiry(expiry)}}
	}
	for _, tc := range []struct {
		name   string
		srv    orthanc.Server
		exists bool
		want   string
	}{
		{"missing", orthanc.Server{}, false, "missing"},
		{"same token", entry("ya29.new", exp), true, ""},
		{"other token, same expiry second", entry("ya29.old", exp), true, "token_changed"},
		{"same token, other expiry", entry("ya29.new", exp.Add(time.Second)), true, "token_changed"},
		{"entry without a fingerprint (older agent)", orthanc.Server{Name: "a", URL: url, Properties: map[string]string{orthanc.ExpiryProperty: orthanc.FormatExpiry(exp)}}, true, "token_changed"},
	} {
		if got := (&Reconciler{}).pushReason(st, tc.srv, tc.exists); got != tc.want {
			t.Errorf("%s: pushReason = %q, want %q", tc.name, got, tc.want)
		}
	}
}
