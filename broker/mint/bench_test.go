package mint

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
)

// BenchmarkMintServiceAccountKey mints through the JWT-bearer grant against
// the fakes' token endpoint on loopback (which checks the RSA signature),
// the path every upstream mint of a key account takes. cpu-µs/mint is this
// process's user+system CPU per mint: the minter and the fake endpoint
// together; the fake's share is one RSA verify (~0.05 ms) and its HTTP
// handling. One RSA-2048 signature alone is about 1.1–1.4 ms here.
func BenchmarkMintServiceAccountKey(b *testing.B) {
	ts := fakegcp.NewTokenServer()
	if err := ts.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer ts.Close()
	const ref = "sm://projects/p/secrets/key/versions/1"
	key, _, err := ts.NewServiceAccountKey("bench@p.iam.gserviceaccount.com")
	if err != nil {
		b.Fatal(err)
	}
	p, err := policy.Parse([]byte(fmt.Sprintf(`{"Audience":"https://broker.example","Accounts":{
		"sa":{"Project":"p","Location":"l","Dataset":"d","DicomStore":"s","ServiceAccountSecret":%q}}}`, ref)))
	if err != nil {
		b.Fatal(err)
	}
	m := &Minter{Secrets: memSecrets{ref: key}}
	a := p.Account("sa")
	ctx := context.Background()
	if _, err := m.Mint(ctx, a); err != nil { // warm: connection, caches
		b.Fatal(err)
	}
	cpu0 := processCPU(b)
	b.ResetTimer()
	for range b.N {
		if _, err := m.Mint(ctx, a); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/mint")
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
