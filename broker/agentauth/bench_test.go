package agentauth

import (
	"crypto/ed25519"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// benchTokens signs n distinct headers (each jti is usable once) outside
// the timer.
func benchTokens(b *testing.B, a agent, n int) []string {
	b.Helper()
	hs := make([]string, n)
	for i := range hs {
		hs[i] = "Bearer " + a.sign(b, t0)
	}
	return hs
}

// BenchmarkVerify is the whole check of one header: scheme, parse, alg,
// key lookup, signature, claims, replay cache.
func BenchmarkVerify(b *testing.B) {
	a := newAgent(b, "clinic-a")
	dir := newDir(a)
	opts := func(n int) Options {
		return Options{Now: func() time.Time { return t0 }, ReplayCapacity: n + 1, PerAgentReplayCapacity: n + 1}
	}

	b.Run("single", func(b *testing.B) {
		hs := benchTokens(b, a, b.N)
		v := NewVerifier(opts(b.N))
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			if _, err := v.Verify(dir, hs[i]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		hs := benchTokens(b, a, b.N)
		v := NewVerifier(opts(b.N))
		var next atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := v.Verify(dir, hs[next.Add(1)-1]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkBareVerify is crypto/ed25519.Verify alone on one assertion's
// signing input: the floor under BenchmarkVerify, and the yardstick of the
// broker benchmark (bench/broker).
func BenchmarkBareVerify(b *testing.B) {
	a := newAgent(b, "clinic-a")
	tok := a.sign(b, t0)
	i := strings.LastIndexByte(tok, '.')
	msg := []byte(tok[:i])
	sig := ed25519.Sign(a.priv, msg)
	b.Run("single", func(b *testing.B) {
		for range b.N {
			if !ed25519.Verify(a.pub, msg, sig) {
				b.Fatal("verify failed")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !ed25519.Verify(a.pub, msg, sig) {
					b.Error("verify failed")
					return
				}
			}
		})
	})
}
