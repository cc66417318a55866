package api

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/agentauth"
)

// BenchmarkTokens is one cached-token POST /v1/tokens through the handler
// (no network): with the real verifier, and with authentication stubbed
// out to show the API's own cost. Audit lines go to a cloudlog handler on
// io.Discard.
func BenchmarkTokens(b *testing.B) {
	for _, tc := range []struct {
		name string
		stub bool
	}{{"verify", false}, {"stub-auth", true}} {
		b.Run(tc.name, func(b *testing.B) {
			h := newHarness(b, io.Discard)
			h.srv.Auth = agentauth.NewVerifier(agentauth.Options{ReplayCapacity: b.N + 1, PerAgentReplayCapacity: b.N + 1})
			if tc.stub {
				h.srv.Auth = stubAuth{}
			}
			reqs := make([]*http.Request, b.N)
			for i := range reqs {
				reqs[i] = newTokenRequest(h.assertion(b), `{"stores":["store-a"]}`)
			}
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				w := &discardWriter{h: make(http.Header)}
				for pb.Next() {
					clear(w.h)
					h.srv.ServeHTTP(w, reqs[next.Add(1)-1])
					if w.status != http.StatusOK {
						b.Errorf("status %d", w.status)
						return
					}
				}
			})
		})
	}
}
