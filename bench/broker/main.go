// Command broker is the broker's loopback load generator. It runs the
// cmd/broker binary as its own process against the Google fakes (served by
// this process), measures cached token issuance at 1, 16 and 64 concurrent
// agents, the bare ed25519.Verify throughput and CPU cost of this machine
// next to each run (the physical bound of a design that verifies one
// assertion per request), and the time from starting the cmd/broker binary
// to its first token. It writes the figures to a section of BENCHMARKS.md.
//
//	go run ./bench/broker -broker-bin bin/broker -out BENCHMARKS.md
//
// With -broker-bin a,b the binaries are measured in alternation in the same
// run, for before/after comparisons on a noisy machine.
package main

import (
	"bufio"
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
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
	"syscall"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/bench/report"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
)

func main() {
	out := flag.String("out", "", "BENCHMARKS.md to update (empty: print only)")
	bins := flag.String("broker-bin", "", "built cmd/broker binary; several, comma-separated, are measured in alternation (A/B comparisons in one run)")
	requests := flag.Int("requests", 20000, "requests per concurrency level (a quarter at 1 agent); each broker process accepts at most 10,000 per agent and 524,288 in all within 7 min (its replay cache)")
	runs := flag.Int("runs", 3, "repetitions; each starts a fresh broker process and re-measures the verify bound next to it")
	starts := flag.Int("starts", 7, "broker process starts to time")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the load generator")
	levelList := flag.String("levels", "1,16,64", "concurrency levels (agents, at most 64)")
	flag.Parse()
	log.SetFlags(0)

	if *bins == "" {
		log.Fatal("-broker-bin is required: go build -o bin/broker ./cmd/broker")
	}
	binList := strings.Split(*bins, ",")
	s, err := setup(64)
	if err != nil {
		log.Fatal(err)
	}
	defer s.close()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}

	var levels []int
	for _, f := range strings.Split(*levelList, ",") {
		var c int
		if _, err := fmt.Sscan(f, &c); err != nil || c < 1 || c > 64 {
			log.Fatalf("-levels: %q is not a number of agents from 1 to 64", f)
		}
		levels = append(levels, c)
	}
	// results[bin][level] holds one result per run; bounds one per run.
	results := make([][][]result, len(binList))
	for i := range results {
		results[i] = make([][]result, len(levels))
	}
	var bounds []bound
	for run := range *runs {
		for bi, bin := range binList {
			// The bound is measured right before and right after this
			// broker's run, and the two averaged, so that a load change
			// on the machine during the run shifts both sides alike.
			before := verifyBound(time.Second)
			if err := s.startBroker(bin); err != nil {
				log.Fatal(err)
			}
			var rs []result
			for _, c := range levels {
				n := *requests
				if c == 1 {
					n = *requests / 4
				}
				r, err := s.run(c, n)
				if err != nil {
					s.stopBroker()
					log.Fatal(err)
				}
				rs = append(rs, r)
			}
			s.stopBroker()
			after := verifyBound(time.Second)
			bd := bound{rate: (before.rate + after.rate) / 2, cpu: (before.cpu + after.cpu) / 2}
			bounds = append(bounds, bd)
			for li, r := range rs {
				r.verifyCPU = bd.cpu
				results[bi][li] = append(results[bi][li], r)
				log.Printf("run %d %s c=%d: %.0f tokens/s p50 %s p99 %s, broker %.0f µs CPU/token (%.0f system) = %.2f × verify (%.1f µs: %.1f before, %.1f after)",
					run+1, filepath.Base(bin), levels[li], r.rate, ms(r.p50), ms(r.p99), us(r.brokerCPU), us(r.brokerSys), r.ratio(), us(bd.cpu), us(before.cpu), us(after.cpu))
			}
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "## Broker: cached token issuance on loopback\n\n")
	via := " (via `make bench`)"
	if len(binList) > 1 {
		via = ""
	}
	fmt.Fprintf(&b, "Command: `%s`%s, %s, GOMAXPROCS=%d, %s.\n\n", "go run ./bench/broker "+strings.Join(os.Args[1:], " "), via, runtime.Version(), runtime.GOMAXPROCS(0), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "The broker is the `cmd/broker` binary in its own process (file policy, audit lines to a pipe); the load generator is a second process on the same 2 cores, with one keep-alive connection per agent and assertions signed before timing starts (agents sign on their own hosts). ")
	fmt.Fprintf(&b, "%d runs; each starts a fresh broker and measures the bare `ed25519.Verify` bound (1 s) just before and just after it, taking the mean of the two. Figures are the median of the runs with the range in brackets. ", *runs)
	fmt.Fprintf(&b, "*Broker CPU per token* is the broker process's user+system time (`/proc`) over the requests; *verify CPU* is this process's CPU time (`getrusage`) per bare `ed25519.Verify` on %d goroutines, so the ratio of the two does not depend on how busy the machine was; tokens/s and the share of the bound are wall-clock figures and do.\n\n", runtime.GOMAXPROCS(0))
	for bi, bin := range binList {
		if len(binList) > 1 {
			fmt.Fprintf(&b, "`%s`:\n\n", bin)
		}
		fmt.Fprintf(&b, "| concurrent agents | requests | tokens/s | p50 | p99 | vs verify-only bound | broker CPU per token | ÷ verify CPU |\n|---|---|---|---|---|---|---|---|\n")
		for li, c := range levels {
			rs := results[bi][li]
			n := *requests
			if c == 1 {
				n = *requests / 4
			}
			share := make([]float64, len(rs))
			for i, r := range rs {
				share[i] = 100 * r.rate / bounds[i*len(binList)+bi].rate
			}
			fmt.Fprintf(&b, "| %d | %d | %s | %s | %s | %s | %s | **%s** |\n", c, n,
				spread(rs, func(r result) float64 { return r.rate }, "%.0f", ""),
				spread(rs, func(r result) float64 { return float64(r.p50) / 1e6 }, "%.2f", " ms"),
				spread(rs, func(r result) float64 { return float64(r.p99) / 1e6 }, "%.2f", " ms"),
				spreadOf(share, "%.0f", " %%"),
				spread(rs, func(r result) float64 { return us(r.brokerCPU) }, "%.0f", " µs"),
				spread(rs, result.ratio, "%.2f", " ×"))
		}
		fmt.Fprintf(&b, "\n")
	}
	rates, cpus := make([]float64, len(bounds)), make([]float64, len(bounds))
	for i, bd := range bounds {
		rates[i], cpus[i] = bd.rate, us(bd.cpu)
	}
	fmt.Fprintf(&b, "Bare `ed25519.Verify` of one message on %d goroutines, same runs: **%s verifies/s** (the bound), **%s of CPU per verify**.\n",
		runtime.GOMAXPROCS(0), spreadOf(rates, "%.0f", ""), spreadOf(cpus, "%.1f", " µs"))
	fmt.Fprintf(&b, "That is `crypto/ed25519`'s verify, the one the broker makes (through golang-jwt) and the yardstick of the target.\n")
	last := results[len(binList)-1][len(levels)-1]
	lastShare := make([]float64, len(last))
	for i, r := range last {
		lastShare[i] = 100 * r.rate / bounds[i*len(binList)+len(binList)-1].rate
	}
	fmt.Fprintf(&b, "At %d concurrent agents the broker (`%s`) spent **%s** the CPU of a bare verify per token (target ≤ 3 ×), reached **%s** of the bound in tokens/s, with p99 **%s**.\n",
		levels[len(levels)-1], filepath.Base(binList[len(binList)-1]), spread(last, result.ratio, "%.2f", " ×"), spreadOf(lastShare, "%.0f", " %%"),
		spread(last, func(r result) float64 { return float64(r.p99) / 1e6 }, "%.2f", " ms"))
	fmt.Fprintf(&b, "Upstream mints during the whole load: %d (one per broker start; every other request was answered from the cache).\n", s.cloud.Tokens.MintedByKey(s.keyID))

	if *starts > 0 {
		bin := binList[len(binList)-1]
		d, err := startToFirstToken(bin, s, *starts)
		if err != nil {
			log.Fatal(err)
		}
		slices.Sort(d)
		fmt.Fprintf(&b, "\n### Broker start → first token\n\n`%s` started as a process with a file policy, the key in a file, the fakes' token endpoint; timed from exec to the first `POST /v1/tokens` answered 200 (polling every 2 ms), %d starts: min %s, **median %s**, max %s (target < 150 ms). The first token includes one RSA-2048 JWT-bearer mint.\n",
			filepath.Base(bin), len(d), ms(d[0]), ms(d[len(d)/2]), ms(d[len(d)-1]))
		log.Printf("start to first token: median %s", ms(d[len(d)/2]))
	}
	fmt.Print(b.String())
	if *out != "" {
		if err := report.WriteSection(*out, "broker", b.String()); err != nil {
			log.Fatal(err)
		}
	}
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// spread formats the median of f over rs with the range: "123 [110–130]".
func spread(rs []result, f func(result) float64, format, unit string) string {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return spreadOf(v, format, unit)
}

func spreadOf(v []float64, format, unit string) string {
	v = slices.Clone(v)
	slices.Sort(v)
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	if len(v) == 1 {
		return fmt.Sprintf(format+unit, med)
	}
	return fmt.Sprintf(format+unit+" ["+format+"–"+format+"]", med, v[0], v[len(v)-1])
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

type setupState struct {
	cloud      *fakegcp.Cloud
	dir        string
	keyID      string
	policyPath string
	keys       []ed25519.PrivateKey
	url        string
	port       int
	proc       *exec.Cmd
}

func (s *setupState) close() {
	s.stopBroker()
	s.cloud.Close()
	os.RemoveAll(s.dir)
}

// setup starts the Google fakes and writes a policy for agents agents.
func setup(agents int) (*setupState, error) {
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
	s.port = lis.Addr().(*net.TCPAddr).Port
	lis.Close()
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
	return s, nil
}

// startBroker starts bin as the broker under test on s.url and warms its
// token cache. A fresh process per run also starts a fresh replay cache
// (agentauth caps it at 524,288 jtis in all).
func (s *setupState) startBroker(bin string) error {
	// The broker as deployed: its own process, audit lines to a pipe (Cloud
	// Run reads stdout the same way), rate limiting off for the load.
	s.proc = exec.Command(bin)
	s.proc.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", s.port), "BROKER_LISTEN_HOST=127.0.0.1",
		"BROKER_CONFIG="+s.policyPath, "BROKER_RATE_LIMIT=0", "HOME="+s.dir)
	if v := os.Getenv("BENCH_BROKER_GOMAXPROCS"); v != "" {
		s.proc.Env = append(s.proc.Env, "GOMAXPROCS="+v)
	}
	s.proc.Stdout, s.proc.Stderr = io.Discard, os.Stderr
	if err := s.proc.Start(); err != nil {
		s.proc = nil
		return err
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		resp, err := http.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			s.stopBroker()
			return fmt.Errorf("broker did not start: %v", err)
		}
	}
	if _, err := s.run(1, 1); err != nil { // warm the token cache
		s.stopBroker()
		return err
	}
	return nil
}

func (s *setupState) stopBroker() {
	if s.proc != nil {
		s.proc.Process.Kill()
		s.proc.Wait()
		s.proc = nil
	}
}

type result struct {
	rate     float64
	p50, p99 time.Duration
	// brokerCPU is the broker process's user+system CPU per request,
	// brokerSys the system part of it.
	brokerCPU, brokerSys time.Duration
	// verifyCPU is the CPU of one bare ed25519.Verify measured just
	// before this broker process ran.
	verifyCPU time.Duration
}

// ratio is broker CPU per token over bare verify CPU.
func (r result) ratio() float64 { return float64(r.brokerCPU) / float64(r.verifyCPU) }

// cpuTimes reads a process's user and system CPU time from /proc (clock
// ticks of 10 ms: use it over many requests only).
func cpuTimes(pid int) (user, sys time.Duration, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	var utime, stime int64
	fmt.Sscan(f[11], &utime)
	fmt.Sscan(f[12], &stime)
	return time.Duration(utime) * 10 * time.Millisecond, time.Duration(stime) * 10 * time.Millisecond, nil
}

// run sends n POST /v1/tokens from c agents, each on its own keep-alive
// connection, and reports throughput and latency percentiles.
func (s *setupState) run(c, n int) (result, error) {
	per := (n + c - 1) / c
	now := time.Now()
	signed := make([][]string, c)
	for w := range c {
		for range per {
			// A fresh X25519 key per request, as agents make (before the
			// timing starts: agents do it on their own hosts).
			x, err := ecdh.X25519().GenerateKey(rand.Reader)
			if err != nil {
				return result{}, err
			}
			tok, err := assertion.Sign(s.keys[w], fmt.Sprintf("agent-%d", w), s.url, now, assertion.MaxLifetime, x.PublicKey())
			if err != nil {
				return result{}, err
			}
			signed[w] = append(signed[w], tok)
		}
	}
	lat := make([][]time.Duration, c)
	var failed atomic.Int64
	var firstErr atomic.Value // string: what the first failure was
	fail := func(what string) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, what)
	}
	var wg sync.WaitGroup
	user0, sys0, _ := cpuTimes(s.proc.Process.Pid)
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
					fail(err.Error())
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					fail(err.Error())
					return
				}
				rb, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				lat[w] = append(lat[w], time.Since(t0))
				if resp.StatusCode != 200 {
					fail(fmt.Sprintf("%s: %.200s", resp.Status, rb))
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if f := failed.Load(); f > 0 {
		return result{}, fmt.Errorf("%d of %d requests failed at concurrency %d; the first: %v", f, per*c, c, firstErr.Load())
	}
	user1, sys1, _ := cpuTimes(s.proc.Process.Pid)
	all := slices.Concat(lat...)
	slices.Sort(all)
	return result{
		rate:      float64(len(all)) / elapsed.Seconds(),
		p50:       all[len(all)/2],
		p99:       all[len(all)*99/100],
		brokerCPU: (user1 + sys1 - user0 - sys0) / time.Duration(len(all)),
		brokerSys: (sys1 - sys0) / time.Duration(len(all)),
	}, nil
}

// bound is bare ed25519.Verify on all cores: throughput (wall clock) and
// CPU time per verify (getrusage of this process, which does nothing else
// meanwhile).
type bound struct {
	rate float64
	cpu  time.Duration
}

func verifyBound(d time.Duration) bound {
	pub, priv, _ := ed25519.GenerateKey(nil)
	msg := []byte("eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJhZ2VudC0wIn0")
	sig := ed25519.Sign(priv, msg)
	var total atomic.Int64
	var wg sync.WaitGroup
	cpu0 := selfCPU()
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
	elapsed := time.Since(start)
	cpu := selfCPU() - cpu0
	return bound{rate: float64(total.Load()) / elapsed.Seconds(), cpu: cpu / time.Duration(total.Load())}
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		log.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
		x, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		tok, err := assertion.Sign(s.keys[0], "agent-0", url, time.Now(), assertion.MaxLifetime, x.PublicKey())
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
					tok, _ = assertion.Sign(s.keys[0], "agent-0", url, time.Now(), assertion.MaxLifetime, x.PublicKey())
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
