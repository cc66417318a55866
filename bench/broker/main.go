// Command broker is the broker's loopback load generator. It runs the
// cmd/broker binary as its own process against the Google fakes (served by
// this process), measures cached token issuance at 1, 16 and 64 concurrent
// agents, the bare ed25519.Verify
// throughput of this machine in the same run (the physical bound of a
// design that verifies one assertion per request), and the time from
// starting the cmd/broker binary to its first token. It writes the figures
// to a section of BENCHMARKS.md.
//
//	go run ./bench/broker -broker-bin bin/broker -out BENCHMARKS.md
package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/bench/report"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
)

func main() {
	out := flag.String("out", "", "BENCHMARKS.md to update (empty: print only)")
	bin := flag.String("broker-bin", "", "built cmd/broker binary, for the start-to-first-token figure")
	requests := flag.Int("requests", 20000, "requests per concurrency level")
	starts := flag.Int("starts", 7, "broker process starts to time")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the load phase")
	flag.Parse()
	log.SetFlags(0)

	if *bin == "" {
		log.Fatal("-broker-bin is required: go build -o bin/broker ./cmd/broker")
	}
	s, err := setup(*bin, 64)
	if err != nil {
		log.Fatal(err)
	}
	defer s.close()

	var b strings.Builder
	fmt.Fprintf(&b, "## Broker: cached token issuance on loopback\n\n")
	fmt.Fprintf(&b, "Command: `%s` (via `make bench`), %s, GOMAXPROCS=%d, %s.\n\n", "go run ./bench/broker "+strings.Join(os.Args[1:], " "), runtime.Version(), runtime.GOMAXPROCS(0), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "The broker is the `cmd/broker` binary in its own process (file policy, audit lines to a pipe); the load generator is a second process on the same 2 cores, with one keep-alive connection per agent and assertions signed before timing starts (agents sign on their own hosts).\n\n")

	verify := verifyBound(2 * time.Second)
	fmt.Fprintf(&b, "| concurrent agents | requests | tokens/s | p50 | p99 | vs verify-only bound | broker CPU per token |\n|---|---|---|---|---|---|---|\n")
	var at64 result
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	for _, c := range []int{1, 16, 64} {
		n := *requests
		if c == 1 {
			n = *requests / 4
		}
		r, err := s.run(c, n)
		if err != nil {
			log.Fatal(err)
		}
		if c == 64 {
			at64 = r
		}
		fmt.Fprintf(&b, "| %d | %d | %.0f | %s | %s | %.0f %% | %.0f µs |\n", c, n, r.rate, ms(r.p50), ms(r.p99), 100*r.rate/verify, float64(r.brokerCPU)/1e3)
		log.Printf("c=%d: %.0f tokens/s p50 %s p99 %s", c, r.rate, ms(r.p50), ms(r.p99))
	}
	fmt.Fprintf(&b, "\nBare `ed25519.Verify` of one message on %d goroutines, same run: **%.0f verifies/s** (the bound), i.e. %.0f µs of CPU per verify.\n", runtime.GOMAXPROCS(0), verify, float64(runtime.GOMAXPROCS(0))*1e6/verify)
	fmt.Fprintf(&b, "At 64 concurrent agents the broker reached **%.0f %%** of that bound (target ≥ 50 %%) with p99 **%s** (target < 5 ms).\n", 100*at64.rate/verify, ms(at64.p99))
	fmt.Fprintf(&b, "Upstream mints during the whole load: %d (all requests after the first were answered from the cache).\n", s.cloud.Tokens.MintedByKey(s.keyID))

	{
		d, err := startToFirstToken(*bin, s, *starts)
		if err != nil {
			log.Fatal(err)
		}
		slices.Sort(d)
		fmt.Fprintf(&b, "\n### Broker start → first token\n\n`%s` started as a process with a file policy, the key in a file, the fakes' token endpoint; timed from exec to the first `POST /v1/tokens` answered 200 (polling every 2 ms), %d starts: min %s, **median %s**, max %s (target < 150 ms). The first token includes one RSA-2048 JWT-bearer mint.\n",
			filepath.Base(*bin), len(d), ms(d[0]), ms(d[len(d)/2]), ms(d[len(d)-1]))
		log.Printf("start to first token: median %s", ms(d[len(d)/2]))
	}
	fmt.Print(b.String())
	if *out != "" {
		if err := report.WriteSection(*out, "broker", b.String()); err != nil {
			log.Fatal(err)
		}
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

type setupState struct {
	cloud      *fakegcp.Cloud
	dir        string
	keyID      string
	policyPath string
	keys       []ed25519.PrivateKey
	url        string
	proc       *exec.Cmd
}

func (s *setupState) close() {
	if s.proc != nil {
		s.proc.Process.Kill()
		s.proc.Wait()
	}
	s.cloud.Close()
	os.RemoveAll(s.dir)
}

func setup(bin string, agents int) (*setupState, error) {
	cloud, err := fakegcp.StartCloud("broker@bench.iam.gserviceaccount.com", "bench")
	if err != nil {
		return nil, err
	}
	s := &setupState{cloud: cloud}
	s.dir, err = os.MkdirTemp("", "bench-broker-")
	if err != nil {
		return nil, err
	}
	keyJSON, keyID, err := cloud.Tokens.NewServiceAccountKey("store@bench.iam.gserviceaccount.com")
	if err != nil {
		return nil, err
	}
	s.keyID = keyID
	keyPath := filepath.Join(s.dir, "sa.json")
	if err := os.WriteFile(keyPath, keyJSON, 0o600); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.url = "http://" + lis.Addr().String()
	ag := map[string]any{}
	for i := range agents {
		pub, priv, _ := agentkey.Generate()
		s.keys = append(s.keys, priv)
		ag[fmt.Sprintf("agent-%d", i)] = map[string]any{"PublicKey": agentkey.FormatPublicKey(pub), "Accounts": []string{"store"}}
	}
	pol, _ := json.Marshal(map[string]any{
		"Audience": s.url,
		"BaseUrl":  cloud.DICOMweb.URL() + "/v1/",
		"Accounts": map[string]any{"store": map[string]any{"Project": "bench", "Location": "l", "Dataset": "d", "DicomStore": "s", "ServiceAccountSecret": keyPath}},
		"Agents":   ag,
	})
	s.policyPath = filepath.Join(s.dir, "policy.json")
	if err := os.WriteFile(s.policyPath, pol, 0o600); err != nil {
		return nil, err
	}
	port := lis.Addr().(*net.TCPAddr).Port
	lis.Close()
	// The broker as deployed: its own process, audit lines to a pipe (Cloud
	// Run reads stdout the same way), rate limiting off for the load.
	s.proc = exec.Command(bin)
	s.proc.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port), "BROKER_LISTEN_HOST=127.0.0.1",
		"BROKER_CONFIG="+s.policyPath, "BROKER_RATE_LIMIT=0", "HOME="+s.dir)
	if v := os.Getenv("BENCH_BROKER_GOMAXPROCS"); v != "" {
		s.proc.Env = append(s.proc.Env, "GOMAXPROCS="+v)
	}
	s.proc.Stdout, s.proc.Stderr = io.Discard, os.Stderr
	if err := s.proc.Start(); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, err := http.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("broker did not start: %v", err)
		}
	}
	if _, err := s.run(1, 1); err != nil { // warm the token cache
		return nil, err
	}
	return s, nil
}

type result struct {
	rate     float64
	p50, p99 time.Duration
	// brokerCPU is the broker process's user+system CPU per request.
	brokerCPU time.Duration
}

// cpuTime reads a process's user+system CPU time from /proc (clock ticks
// of 10 ms: use it over many requests only).
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	var utime, stime int64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// run sends n POST /v1/tokens from c agents, each on its own keep-alive
// connection, and reports throughput and latency percentiles.
func (s *setupState) run(c, n int) (result, error) {
	per := (n + c - 1) / c
	now := time.Now()
	signed := make([][]string, c)
	for w := range c {
		for range per {
			tok, err := assertion.Sign(s.keys[w], fmt.Sprintf("agent-%d", w), s.url, now, assertion.MaxLifetime)
			if err != nil {
				return result{}, err
			}
			signed[w] = append(signed[w], tok)
		}
	}
	lat := make([][]time.Duration, c)
	var failed atomic.Int64
	var wg sync.WaitGroup
	cpu0, _ := cpuTime(s.proc.Process.Pid)
	start := time.Now()
	host := strings.TrimPrefix(s.url, "http://")
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A bare keep-alive HTTP/1.1 client, as wrk would be: net/http's
			// client costs several times the bytes it sends, and every
			// cycle it burns here is one the broker under test does not get.
			conn, err := net.Dial("tcp", host)
			if err != nil {
				failed.Add(int64(len(signed[w])))
				return
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			body := `{"stores":["store"]}`
			var req []byte
			for _, tok := range signed[w] {
				req = fmt.Appendf(req[:0], "POST /v1/tokens HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", host, tok, len(body), body)
				t0 := time.Now()
				if _, err := conn.Write(req); err != nil {
					failed.Add(1)
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					failed.Add(1)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat[w] = append(lat[w], time.Since(t0))
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if f := failed.Load(); f > 0 {
		return result{}, fmt.Errorf("%d of %d requests failed at concurrency %d", f, per*c, c)
	}
	cpu1, _ := cpuTime(s.proc.Process.Pid)
	all := slices.Concat(lat...)
	slices.Sort(all)
	return result{
		rate:      float64(len(all)) / elapsed.Seconds(),
		p50:       all[len(all)/2],
		p99:       all[len(all)*99/100],
		brokerCPU: (cpu1 - cpu0) / time.Duration(len(all)),
	}, nil
}

// verifyBound is ed25519.Verify throughput on all cores.
func verifyBound(d time.Duration) float64 {
	pub, priv, _ := ed25519.GenerateKey(nil)
	msg := []byte("eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJhZ2VudC0wIn0")
	sig := ed25519.Sign(priv, msg)
	var total atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := int64(0)
			for time.Now().Before(deadline) {
				for range 100 {
					if !ed25519.Verify(pub, msg, sig) {
						panic("verify failed")
					}
				}
				n += 100
			}
			total.Add(n)
		}()
	}
	wg.Wait()
	return float64(total.Load()) / time.Since(start).Seconds()
}

// startToFirstToken execs the broker binary and times until it serves a
// token.
func startToFirstToken(bin string, s *setupState, n int) ([]time.Duration, error) {
	var out []time.Duration
	for range n {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := lis.Addr().(*net.TCPAddr).Port
		lis.Close()
		url := fmt.Sprintf("http://127.0.0.1:%d", port)
		// The policy's Audience must be this broker's URL.
		var pol map[string]any
		data, _ := os.ReadFile(s.policyPath)
		json.Unmarshal(data, &pol)
		pol["Audience"] = url
		data, _ = json.Marshal(pol)
		path := filepath.Join(s.dir, fmt.Sprintf("policy-%d.json", port))
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
		tok, err := assertion.Sign(s.keys[0], "agent-0", url, time.Now(), assertion.MaxLifetime)
		if err != nil {
			return nil, err
		}
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "PORT="+fmt.Sprint(port), "BROKER_LISTEN_HOST=127.0.0.1", "BROKER_CONFIG="+path, "HOME="+s.dir)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		var d time.Duration
		for time.Since(t0) < 10*time.Second {
			req, _ := http.NewRequest("POST", url+"/v1/tokens", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					d = time.Since(t0)
					break
				}
				if resp.StatusCode == 401 {
					// The assertion's jti was consumed by a request that
					// failed later; sign a fresh one.
					tok, _ = assertion.Sign(s.keys[0], "agent-0", url, time.Now(), assertion.MaxLifetime)
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if d == 0 {
			return nil, fmt.Errorf("broker at %s served no token within 10 s", url)
		}
		out = append(out, d)
	}
	return out, nil
}
