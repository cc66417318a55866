// Command fleet measures what one broker instance costs as the fleet grows:
// policies of 10, 1,000 and 10,000 agents with 3 own stores (accounts) each,
// the cmd/broker binary pinned to one core (GOMAXPROCS=1 and taskset) as a
// stand-in for one Cloud Run vCPU, the Google fakes of testbed/fakegcp
// upstream (a token endpoint that checks every JWT-bearer signature). It
// writes its figures to the "fleet" section of BENCHMARKS.md.
//
//	go build -o bin/broker ./cmd/broker
//	go run ./bench/fleet -broker-bin bin/broker -out BENCHMARKS.md
//
// Per size it measures, each on a fresh broker process:
//   - start → first token, -starts times per binary (binaries taking
//     turns): one start on this shared machine can be off by a third, so
//     the table gives the median and the range;
//   - a herd: every agent asks for its three
//     tokens within one second (an outage is over, the instance is new):
//     the slowest agent's wait, errors, upstream mints per account (counted
//     at the fake) and the broker's CPU per mint; then the broker's RSS,
//     every agent having fetched its tokens once;
//   - re-reads (BROKER_REFRESH=1s): the broker's CPU per re-read of an
//     unchanged policy, and with one agent's fragment changed before every
//     re-read, and the p99 of a steady 100 requests/s inside re-reads and
//     outside them.
//
// With -broker-bin a,b only the starts and the herd are measured, for each
// binary in turn on the same fleet (before/after comparisons).
package main

import (
	"bufio"
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
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
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/bench/report"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/assertion"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
)

// storesPerAgent is the fleet shape: each site has 3 own stores.
const storesPerAgent = 3

type options struct {
	bins       []string
	policyMode string // "dir", "gs" or "file"
	layout     string // "agent" or "site" (fragment forms)
	core       int
	trickle    time.Duration
	rate       int
	reloads    time.Duration
	herdWindow time.Duration
	inFlight   int
	memLimit   string
	starts     int
}

func main() {
	out := flag.String("out", "", "BENCHMARKS.md to update (empty: print only)")
	bins := flag.String("broker-bin", "", "built cmd/broker binary; several, comma-separated, measure only the herd, each binary on the same fleet (A/B)")
	sizeList := flag.String("sizes", "10,1000,10000", "fleet sizes (agents)")
	mode := flag.String("policy", "dir", `policy form: "dir" (a BROKER_CONFIG directory of fragments), "gs" (the same fragments as objects under a gs:// prefix, served by the fake Cloud Storage in this process, not the broker's) or "file" (the same policy as one document)`)
	layout := flag.String("layout", "agent", `fragments (dir, gs): "agent" (base.json, one per agent, one per account) or "site" (base.json and one per site holding its agent and its accounts, as the runbook recommends for pipelines)`)
	section := flag.String("section", "fleet", "the BENCHMARKS.md section (<!-- bench:NAME:start -->) -out writes")
	core := flag.Int("core", 1, "CPU the broker is pinned to (taskset -c)")
	trickle := flag.Duration("trickle", 20*time.Second, "length of the steady-rate run during re-reads")
	rate := flag.Int("rate", 100, "steady request rate (requests/s) during re-reads")
	reloads := flag.Duration("reload-window", 10*time.Second, "how long re-read CPU is counted (BROKER_REFRESH=1s)")
	memLimit := flag.String("gomemlimit", "", "GOMEMLIMIT for the broker (empty: none)")
	starts := flag.Int("starts", 5, "times each binary is started (binaries alternating) to time start → first token; the table gives the median and the range, as one start on a shared machine can be off by a third")
	note := flag.String("note", "", "a sentence added to the section (say what the binaries are)")
	inFlight := flag.Int("concurrency", 80, "requests in flight to the broker at most, as Cloud Run's max_instance_request_concurrency (the Terraform module's 80) lets through to one instance; the rest wait in arrival order, their wait counted (0: no cap)")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if *bins == "" {
		log.Fatal("-broker-bin is required: go build -o bin/broker ./cmd/broker")
	}
	if *mode != "dir" && *mode != "file" && *mode != "gs" {
		log.Fatalf("-policy: %q is not dir, gs or file", *mode)
	}
	if *starts < 1 {
		log.Fatal("-starts: at least 1")
	}
	if *layout != "agent" && *layout != "site" {
		log.Fatalf("-layout: %q is neither agent nor site", *layout)
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		log.Fatal("taskset not found (util-linux): the broker must be pinned to one core")
	}
	pinAway(*core)
	o := options{bins: strings.Split(*bins, ","), policyMode: *mode, layout: *layout, core: *core, trickle: *trickle, rate: *rate, reloads: *reloads, herdWindow: time.Second, inFlight: *inFlight, memLimit: *memLimit, starts: *starts}
	var sizes []int
	for _, f := range strings.Split(*sizeList, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			log.Fatalf("-sizes: %q is not a number of agents", f)
		}
		sizes = append(sizes, n)
	}

	cloud, err := fakegcp.StartCloud("broker@fleet.iam.gserviceaccount.com", "fleet")
	if err != nil {
		log.Fatal(err)
	}
	defer cloud.Close()
	var results []sizeResult
	for _, n := range sizes {
		r, err := measureSize(cloud, n, o)
		if err != nil {
			log.Fatalf("%d agents: %v", n, err)
		}
		results = append(results, r)
	}
	text := render(results, o)
	if *note != "" {
		text += "\n" + *note + "\n"
	}
	fmt.Print(text)
	if *out != "" {
		if err := report.WriteSection(*out, *section, text); err != nil {
			log.Fatal(err)
		}
	}
}

// sizeResult is one fleet size's figures; herds has one entry per binary.
type sizeResult struct {
	agents, policyFiles int
	policyBytes         int64
	starts              [][]time.Duration // by binary: each start's first token, sorted
	herds               []herdResult
	rssKiB, hwmKiB      int64
	unchangedCPU        time.Duration // per re-read
	changedCPU          time.Duration // per re-read with one agent fragment changed
	reloadsSeen         int
	p99In, p99Out       time.Duration
	nIn, nOut           int
	trickleErrors       int
}

type herdResult struct {
	bin        string
	slowest    time.Duration
	p50        time.Duration
	errors     int
	firstErr   string
	mints      int // upstream mints during the herd
	minted     map[int]int
	cpu        time.Duration // broker CPU over the herd
	perMint    time.Duration
	elapsed    time.Duration
	firstToken time.Duration
	rssKiB     int64
	hwmKiB     int64
}

// fleet is one size's files, keys and the agents' signing keys.
type fleet struct {
	n       int
	dir     string
	keys    []ed25519.PrivateKey
	keyIDs  []string // by account index i*3+j
	aud     string
	port    int
	cfg     string // BROKER_CONFIG
	base    map[string]any
	agents  map[string]any
	files   int
	size    int64
	agentFn func(i int) string // the file that holds agent i (dir mode)
	layout  string
	accts   map[string]any                 // by account name
	put     func(name string, data []byte) // writes a fragment (gs mode)
	fragOf  func(i int) string             // the object that holds agent i (gs mode)
	env     []string                       // for the broker
}

func measureSize(cloud *fakegcp.Cloud, n int, o options) (sizeResult, error) {
	log.Printf("%d agents: writing keys and policy (%s, %s layout)", n, o.policyMode, o.layout)
	f, err := writeFleet(cloud, n, o.policyMode, o.layout)
	if err != nil {
		return sizeResult{}, err
	}
	defer os.RemoveAll(f.dir)
	r := sizeResult{agents: n, policyFiles: f.files, policyBytes: f.size, starts: make([][]time.Duration, len(o.bins))}
	for range o.starts {
		for i, bin := range o.bins {
			d, err := startOnce(f, bin, o)
			if err != nil {
				return r, err
			}
			r.starts[i] = append(r.starts[i], d)
		}
	}
	for i, bin := range o.bins {
		slices.Sort(r.starts[i])
		log.Printf("%d agents, %s: start → first token %s over %d starts", n, filepath.Base(bin), spread(r.starts[i]), o.starts)
	}
	for _, bin := range o.bins {
		h, err := herd(cloud, f, bin, o)
		if err != nil {
			return r, err
		}
		log.Printf("%d agents, %s: first token %s, herd slowest %s, %d errors, %d mints, %.2f ms CPU/mint, RSS %d MiB %s",
			n, filepath.Base(bin), ms(h.firstToken), ms(h.slowest), h.errors, h.mints, float64(h.perMint)/1e6, h.rssKiB/1024, h.firstErr)
		r.herds = append(r.herds, h)
	}
	if len(o.bins) > 1 {
		return r, nil
	}
	if err := reloads(cloud, f, o.bins[0], o, &r); err != nil {
		return r, err
	}
	return r, nil
}

// writeFleet writes n agents with 3 accounts each: one key file per
// account (a few RSA keys reused under distinct key ids and emails, so the
// fake counts each account's grants apart), and the policy as a directory
// of fragments (a directory or a gs:// prefix; laid out by agent and
// account, or by site) or as one file.
func writeFleet(cloud *fakegcp.Cloud, n int, mode, layout string) (*fleet, error) {
	dir, err := os.MkdirTemp("", "bench-fleet-")
	if err != nil {
		return nil, err
	}
	f := &fleet{n: n, dir: dir, layout: layout}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f.port = lis.Addr().(*net.TCPAddr).Port
	lis.Close()
	f.aud = fmt.Sprintf("http://127.0.0.1:%d", f.port)
	var pool []*rsa.PrivateKey
	for range 8 {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		pool = append(pool, k)
	}
	keyDir := filepath.Join(dir, "keys")
	polDir := filepath.Join(dir, "policy.d")
	for _, d := range []string{keyDir, polDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
	}
	base := map[string]any{"Audience": f.aud, "BaseUrl": cloud.DICOMweb.URL() + "/v1/"}
	accounts := map[string]any{}
	agents := map[string]any{}
	bucket, prefix := "fleet-policy", fmt.Sprintf("policy-%s-%d/", layout, n)
	if mode == "gs" {
		cloud.Storage.CreateBucket(bucket)
		f.put = func(name string, data []byte) { cloud.Storage.Put(bucket, prefix+name, data) }
		f.env = []string{"BROKER_STORAGE_ENDPOINT=" + cloud.Storage.URL()}
	}
	fragments := mode == "dir" || mode == "gs"
	write := func(name string, doc any) error {
		data, _ := json.Marshal(doc)
		f.size += int64(len(data))
		f.files++
		if f.put != nil {
			f.put(name, data)
			return nil
		}
		return os.WriteFile(filepath.Join(polDir, name), data, 0o600)
	}
	for i := range n {
		pub, priv, err := agentkey.Generate()
		if err != nil {
			return nil, err
		}
		f.keys = append(f.keys, priv)
		var names []string
		for j := range storesPerAgent {
			name := fmt.Sprintf("site%d-store%d", i, j)
			names = append(names, name)
			email := fmt.Sprintf("site%d-store%d@fleet.iam.gserviceaccount.com", i, j)
			cred, keyID, err := cloud.Tokens.NewServiceAccountKeyFrom(email, pool[(i*storesPerAgent+j)%len(pool)])
			if err != nil {
				return nil, err
			}
			f.keyIDs = append(f.keyIDs, keyID)
			keyPath := filepath.Join(keyDir, name+".json")
			if err := os.WriteFile(keyPath, cred, 0o600); err != nil {
				return nil, err
			}
			acct := map[string]any{"Project": "fleet", "Location": "europe-west4", "Dataset": fmt.Sprintf("site%d", i), "DicomStore": fmt.Sprintf("store%d", j), "ServiceAccountSecret": keyPath}
			accounts[name] = acct
			if fragments && layout == "agent" {
				if err := write("account-"+name+".json", map[string]any{"Accounts": map[string]any{name: acct}}); err != nil {
					return nil, err
				}
			}
		}
		agent := map[string]any{"PublicKey": agentkey.FormatPublicKey(pub), "Accounts": names}
		agents[agentID(i)] = agent
		f.accts = accounts
		if fragments {
			if err := write(f.fragName(i), f.fragDoc(i, agent)); err != nil {
				return nil, err
			}
		}
	}
	f.base, f.agents = base, agents
	if fragments {
		if err := write("base.json", base); err != nil {
			return nil, err
		}
		f.cfg = polDir + "/"
		f.agentFn = func(i int) string { return filepath.Join(polDir, f.fragName(i)) }
		if mode == "gs" {
			f.cfg = "gs://" + bucket + "/" + prefix
			f.agentFn = nil
			f.fragOf = f.fragName
		}
		return f, nil
	}
	doc := map[string]any{"Audience": base["Audience"], "BaseUrl": base["BaseUrl"], "Accounts": accounts, "Agents": agents}
	data, _ := json.Marshal(doc)
	f.cfg = filepath.Join(dir, "policy.json")
	f.files, f.size = 1, int64(len(data))
	return f, os.WriteFile(f.cfg, data, 0o600)
}

// pinAway runs this process (load generator and fakes) on every CPU but
// the broker's, by re-executing itself under taskset, so the broker's core
// is its own (as far as the machine's other tenants allow).
func pinAway(brokerCore int) {
	if os.Getenv("BENCH_FLEET_PINNED") != "" || runtime.NumCPU() < 2 {
		return
	}
	var others []string
	for c := range runtime.NumCPU() {
		if c != brokerCore {
			others = append(others, strconv.Itoa(c))
		}
	}
	cmd := exec.Command("taskset", append([]string{"-c", strings.Join(others, ","), os.Args[0]}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), "BENCH_FLEET_PINNED=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			os.Exit(ee.ExitCode())
		}
		log.Fatal(err)
	}
	os.Exit(0)
}

func agentID(i int) string { return fmt.Sprintf("site%d", i) }

// fragName is the fragment that holds agent i.
func (f *fleet) fragName(i int) string {
	if f.layout == "site" {
		return "site-" + agentID(i) + ".json"
	}
	return "agent-" + agentID(i) + ".json"
}

// fragDoc is that fragment: the agent, and with the site layout its accounts.
func (f *fleet) fragDoc(i int, agent any) map[string]any {
	doc := map[string]any{"Agents": map[string]any{agentID(i): agent}}
	if f.layout == "site" {
		accts := map[string]any{}
		for j := range storesPerAgent {
			name := fmt.Sprintf("site%d-store%d", i, j)
			accts[name] = f.accts[name]
		}
		doc["Accounts"] = accts
	}
	return doc
}

// changeAgent rewrites agent i's entry with one of its stores granted or
// not (toggled by on): a real change of one agent, written where the
// policy lives (its fragment, or the whole file).
func (f *fleet) changeAgent(i int, on bool) error {
	names := []string{}
	for j := range storesPerAgent {
		if j == storesPerAgent-1 && !on {
			break
		}
		names = append(names, fmt.Sprintf("site%d-store%d", i, j))
	}
	a := f.agents[agentID(i)].(map[string]any)
	a["Accounts"] = names
	if f.fragOf != nil {
		data, _ := json.Marshal(f.fragDoc(i, a))
		f.put(f.fragOf(i), data)
		return nil
	}
	if f.agentFn != nil {
		data, _ := json.Marshal(f.fragDoc(i, a))
		return writeAtomic(f.dir, f.agentFn(i), data)
	}
	data, err := os.ReadFile(f.cfg)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return err
	}
	doc["Agents"].(map[string]any)[agentID(i)] = a
	data, _ = json.Marshal(doc)
	return writeAtomic(f.dir, f.cfg, data)
}

// writeAtomic replaces path as an operator's pipeline would (write aside
// in tmpDir, outside the policy directory, then rename), so the broker
// never reads half a file.
func writeAtomic(tmpDir, path string, data []byte) error {
	tmp := filepath.Join(tmpDir, "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// broker is one running broker process.
type broker struct {
	cmd   *exec.Cmd
	pid   int
	start time.Time
	mu    sync.Mutex
	loads []time.Time // when each "policy loaded" line was read
}

func startBroker(f *fleet, bin string, o options, refresh string) (*broker, error) {
	cmd := exec.Command("taskset", "-c", strconv.Itoa(o.core), bin)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1", "PORT="+strconv.Itoa(f.port), "BROKER_LISTEN_HOST=127.0.0.1",
		"BROKER_CONFIG="+f.cfg, "BROKER_RATE_LIMIT=0", "BROKER_REFRESH="+refresh, "HOME="+f.dir)
	cmd.Env = append(cmd.Env, f.env...)
	if o.memLimit != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+o.memLimit)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	b := &broker{cmd: cmd}
	b.start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	// taskset execs the broker in place: the pid is the broker's.
	b.pid = cmd.Process.Pid
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if bytes.Contains(line, []byte(`"policy loaded"`)) {
				b.mu.Lock()
				b.loads = append(b.loads, time.Now())
				b.mu.Unlock()
			} else if bytes.Contains(line, []byte(`"ERROR"`)) {
				log.Printf("broker: %.300s", line)
			}
		}
	}()
	return b, nil
}

func (b *broker) stop() {
	b.cmd.Process.Kill()
	b.cmd.Wait()
}

func (b *broker) loadTimes() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.loads)
}

// request is one agent's POST /v1/tokens, signed ahead of time.
type request struct {
	agent  int
	stores []string
	raw    []byte
}

func (f *fleet) sign(i int, stores []string) (request, error) {
	x, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return request{}, err
	}
	tok, err := assertion.Sign(f.keys[i], agentID(i), f.aud, time.Now(), assertion.MaxLifetime, x.PublicKey())
	if err != nil {
		return request{}, err
	}
	body, _ := json.Marshal(wire.TokenRequest{Stores: stores})
	host := strings.TrimPrefix(f.aud, "http://")
	raw := fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", wire.PathTokens, host, tok, len(body), body)
	return request{agent: i, stores: stores, raw: raw}, nil
}

func storesOf(i int) []string {
	var s []string
	for j := range storesPerAgent {
		s = append(s, fmt.Sprintf("site%d-store%d", i, j))
	}
	return s
}

// send sends one request on conn (a new connection when nil) and checks
// that every store asked for came back as a token.
func send(addr string, conn net.Conn, br *bufio.Reader, req request) (time.Duration, net.Conn, *bufio.Reader, error) {
	t0 := time.Now()
	var err error
	if conn == nil {
		conn, err = net.DialTimeout("tcp", addr, 30*time.Second)
		if err != nil {
			return 0, nil, nil, err
		}
		br = bufio.NewReader(conn)
	}
	conn.SetDeadline(time.Now().Add(300 * time.Second))
	if _, err := conn.Write(req.raw); err != nil {
		conn.Close()
		return 0, nil, nil, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return 0, nil, nil, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if resp.StatusCode != 200 {
		return d, conn, br, fmt.Errorf("%s: %.200s", resp.Status, body)
	}
	var tr wire.TokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		return d, conn, br, err
	}
	if len(tr.Errors) > 0 || len(tr.Tokens) != len(req.stores) {
		return d, conn, br, fmt.Errorf("%d tokens, errors %+v", len(tr.Tokens), tr.Errors)
	}
	return d, conn, br, nil
}

// herd starts a broker, times its first token, then has every agent ask for
// its three tokens within one second.
func herd(cloud *fakegcp.Cloud, f *fleet, bin string, o options) (herdResult, error) {
	h := herdResult{bin: bin}
	reqs := make([]request, f.n)
	for i := range f.n {
		var err error
		if reqs[i], err = f.sign(i, storesOf(i)); err != nil {
			return h, err
		}
	}
	first, err := f.sign(0, storesOf(0)[:1])
	if err != nil {
		return h, err
	}
	before := cloud.Tokens.MintedByKeyCounts()
	b, err := startBroker(f, bin, o, "1h")
	if err != nil {
		return h, err
	}
	defer b.stop()
	if h.firstToken, err = firstToken(f, b, first); err != nil {
		return h, err
	}
	addr := strings.TrimPrefix(f.aud, "http://")
	// The herd: agent i sends at i/n of the window.
	lat := make([]time.Duration, f.n)
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	mid := cloud.Tokens.MintedByKeyCounts()
	cpu0, err := cpuTime(b.pid)
	if err != nil {
		return h, err
	}
	// Cloud Run lets at most its concurrency through to an instance; the
	// rest wait (in arrival order) and their wait is part of their time.
	var slots chan struct{}
	if o.inFlight > 0 {
		slots = make(chan struct{}, o.inFlight)
	}
	t0 := time.Now()
	for i := range f.n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ask := t0.Add(o.herdWindow * time.Duration(i) / time.Duration(f.n))
			time.Sleep(time.Until(ask))
			if slots != nil {
				slots <- struct{}{}
				defer func() { <-slots }()
			}
			_, conn, _, err := send(addr, nil, nil, reqs[i])
			if conn != nil {
				conn.Close()
			}
			lat[i] = time.Since(ask)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Sprintf("agent %d: %v", i, err))
			}
		}()
	}
	wg.Wait()
	h.elapsed = time.Since(t0)
	cpu1, err := cpuTime(b.pid)
	if err != nil {
		return h, err
	}
	after := cloud.Tokens.MintedByKeyCounts()
	h.minted = map[int]int{}
	for _, id := range f.keyIDs {
		h.minted[after[id]-before[id]]++
		h.mints += after[id] - mid[id] // the first token's mint was before the herd
	}
	h.errors = int(failed.Load())
	if e := firstErr.Load(); e != nil {
		h.firstErr = e.(string)
	}
	slices.Sort(lat)
	h.slowest, h.p50 = lat[len(lat)-1], lat[len(lat)/2]
	h.cpu = cpu1 - cpu0
	if h.mints > 0 {
		h.perMint = h.cpu / time.Duration(h.mints)
	}
	runtime.GC()
	m, err := readMemory(b.pid)
	if err != nil {
		return h, err
	}
	h.rssKiB, h.hwmKiB = m.rss, m.hwm
	return h, nil
}

// reloads measures re-read CPU and the p99 of a steady rate in and outside
// re-reads, on a broker re-reading every second.
func reloads(cloud *fakegcp.Cloud, f *fleet, bin string, o options, r *sizeResult) error {
	b, err := startBroker(f, bin, o, "1s")
	if err != nil {
		return err
	}
	defer b.stop()
	addr := strings.TrimPrefix(f.aud, "http://")
	// The trickle's agents fetch once first, so the steady rate is served
	// from the token cache, as a fleet in its stride is.
	// At most 20 requests per agent: at 10,000 agents each agent's share of
	// the replay cache is 52 assertions (524,288 ÷ 10,000), and a longer
	// trickle from 100 agents is refused as a flood (replay_cache_full).
	trickleAgents := max(1, min(f.n-1, max(100, int(o.trickle.Seconds())*o.rate/20)))
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		req, _ := f.sign(0, storesOf(0))
		_, conn, _, err := send(addr, nil, nil, req)
		if conn != nil {
			conn.Close()
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("reload broker not serving: %v", err)
		}
	}
	for i := range trickleAgents {
		req, _ := f.sign(i, storesOf(i))
		_, conn, _, err := send(addr, nil, nil, req)
		if conn != nil {
			conn.Close()
		}
		if err != nil {
			return fmt.Errorf("warming agent %d: %v", i, err)
		}
	}
	// Unchanged re-reads: the broker does nothing else meanwhile.
	time.Sleep(1500 * time.Millisecond)
	c0, _ := cpuTime(b.pid)
	n0 := len(b.loadTimes())
	t0 := time.Now()
	time.Sleep(o.reloads)
	c1, _ := cpuTime(b.pid)
	el := time.Since(t0)
	n1 := len(b.loadTimes())
	ticks := el.Seconds() // BROKER_REFRESH=1s
	r.unchangedCPU = time.Duration(float64(c1-c0) / ticks)
	r.reloadsSeen = n1 - n0
	// One agent's fragment changed before every re-read; the changed agent
	// is not one the trickle uses.
	changed := f.n - 1
	stop := make(chan struct{})
	var changes atomic.Int64
	go func() {
		on := false
		for {
			if err := f.changeAgent(changed, on); err != nil {
				log.Printf("change agent: %v", err)
			}
			changes.Add(1)
			on = !on
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	c0, _ = cpuTime(b.pid)
	t0 = time.Now()
	time.Sleep(o.reloads)
	c1, _ = cpuTime(b.pid)
	r.changedCPU = time.Duration(float64(c1-c0) / time.Since(t0).Seconds())
	// The steady rate while the changes go on: each request is "in" when it
	// overlaps a re-read, taken as the changed re-read's CPU time (at
	// least 10 ms) before each "policy loaded" line.
	window := max(r.changedCPU, 10*time.Millisecond)
	type sample struct {
		sent time.Time
		d    time.Duration
	}
	total := int(o.trickle.Seconds() * float64(o.rate))
	reqs := make([]request, total)
	for k := range total {
		i := k % trickleAgents
		if reqs[k], err = f.sign(i, storesOf(i)); err != nil {
			return err
		}
	}
	samples := make([]sample, total)
	var errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for k := range total {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := start.Add(time.Second * time.Duration(k) / time.Duration(o.rate))
			time.Sleep(time.Until(at))
			sent := time.Now()
			d, conn, _, err := send(addr, nil, nil, reqs[k])
			if conn != nil {
				conn.Close()
			}
			if err != nil {
				errs.Add(1)
				log.Printf("trickle: %v", err)
			}
			samples[k] = sample{sent, d}
		}()
	}
	wg.Wait()
	close(stop)
	r.trickleErrors = int(errs.Load())
	loads := b.loadTimes()
	var in, out []time.Duration
	for _, s := range samples {
		end := s.sent.Add(s.d)
		overlap := false
		for _, l := range loads {
			if s.sent.Before(l) && end.After(l.Add(-window)) {
				overlap = true
				break
			}
		}
		if overlap {
			in = append(in, s.d)
		} else {
			out = append(out, s.d)
		}
	}
	r.nIn, r.nOut = len(in), len(out)
	r.p99In, r.p99Out = p99(in), p99(out)
	log.Printf("%d agents: re-read CPU unchanged %.1f ms, one agent changed %.1f ms (%d loads logged), p99 in re-reads %s (%d) outside %s (%d)",
		f.n, float64(r.unchangedCPU)/1e6, float64(r.changedCPU)/1e6, r.reloadsSeen, ms(r.p99In), r.nIn, ms(r.p99Out), r.nOut)
	return nil
}

func p99(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return d[min(len(d)-1, len(d)*99/100)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/1e6) }

// spread is the median and range of sorted durations: "1,016 ms (940–1,210)".
func spread(ds []time.Duration) string {
	if len(ds) == 1 {
		return ms(ds[0])
	}
	return fmt.Sprintf("%s (%.0f–%.0f)", ms(ds[len(ds)/2]), float64(ds[0])/1e6, float64(ds[len(ds)-1])/1e6)
}

// startOnce starts a broker, times its first token and stops it.
func startOnce(f *fleet, bin string, o options) (time.Duration, error) {
	first, err := f.sign(0, storesOf(0)[:1])
	if err != nil {
		return 0, err
	}
	b, err := startBroker(f, bin, o, "1h")
	if err != nil {
		return 0, err
	}
	defer b.stop()
	return firstToken(f, b, first)
}

// firstToken sends agent 0's request until it is served, and returns the
// time since the broker was started. A new connection each time: the
// broker listens only once its policy is loaded.
func firstToken(f *fleet, b *broker, first request) (time.Duration, error) {
	addr := strings.TrimPrefix(f.aud, "http://")
	for {
		_, conn, _, err := send(addr, nil, nil, first)
		if conn != nil {
			conn.Close()
		}
		if err == nil {
			return time.Since(b.start), nil
		}
		if time.Since(b.start) > 60*time.Second {
			return 0, fmt.Errorf("no first token within 60 s: %v", err)
		}
		if strings.Contains(err.Error(), "401") { // the jti was spent by a request that failed later
			if first, err = f.sign(0, storesOf(0)[:1]); err != nil {
				return 0, err
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func render(rs []sizeResult, o options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Fleet: one broker instance from 10 to 10,000 sites\n\n")
	var args []string
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " '\"") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		args = append(args, a)
	}
	fmt.Fprintf(&b, "Command: `go run ./bench/fleet %s`, %s, %s.\n\n", strings.Join(args, " "), runtime.Version(), time.Now().UTC().Format("2006-01-02"))
	if o.memLimit != "" {
		fmt.Fprintf(&b, "The broker runs with `GOMEMLIMIT=%s`. ", o.memLimit)
	}
	fmt.Fprintf(&b, "The `cmd/broker` binary in its own process pinned to one core (`taskset -c %d`, `GOMAXPROCS=1`: one Cloud Run vCPU), the load generator and the Google fakes (`testbed/fakegcp`, whose token endpoint checks every JWT-bearer signature) on the other core. ", o.core)
	form := map[string]string{"dir": "a directory of fragments", "gs": "fragments under a gs:// prefix of the fake Cloud Storage (fake-gcs-server, in the load generator's process: its CPU is not the broker's)", "file": "one file"}[o.policyMode]
	if o.policyMode != "file" {
		form += map[string]string{"agent": " (one per agent, one per account, `base.json` with Audience/BaseUrl)", "site": " (one per site holding its agent and its accounts, `base.json` with Audience/BaseUrl)"}[o.layout]
	}
	fmt.Fprintf(&b, "Each agent has %d own stores, each store its own service-account key file; the policy is %s. ", storesPerAgent, form)
	inFlight := fmt.Sprintf("at most %d in flight (Cloud Run's concurrency in the Terraform module; the others wait their turn and the wait counts)", o.inFlight)
	if o.inFlight <= 0 {
		inFlight = "all of them in flight at once (no concurrency cap in front of the broker)"
	}
	fmt.Fprintf(&b, "*Herd*: a new instance, every agent asks for its %d tokens within one second, each on its own connection, %s; ", storesPerAgent, inFlight)
	fmt.Fprintf(&b, "*CPU per mint* is the broker's user+system time (`/proc`) over the herd divided by the upstream mints counted at the fake, so it includes verifying the agents' assertions and sealing the tokens. ")
	fmt.Fprintf(&b, "*Re-read CPU* is the broker's CPU over %s with `BROKER_REFRESH=1s` per second, idle but for the re-reads; *changed* rewrites one agent's entry before every re-read. ", o.reloads)
	fmt.Fprintf(&b, "*p99 in/out of re-reads*: a steady %d requests/s (cached tokens, %d agents) during %s of changed re-reads; a request is *in* when it overlaps the changed re-read's CPU time before a `policy loaded` line.\n\n", o.rate, max(100, int(o.trickle.Seconds())*o.rate/20), o.trickle)
	if len(o.bins) > 1 {
		fmt.Fprintf(&b, "| agents | binary | start → first token | herd: slowest agent | p50 | errors | mints per account | broker CPU | CPU per mint | RSS after |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, r := range rs {
			for i, h := range r.herds {
				fmt.Fprintf(&b, "| %d | `%s` | %s | %s | %s | %d | %s | %.1f s | **%.2f ms** | %d MiB |\n", r.agents, filepath.Base(h.bin), spread(r.starts[i]), secs(h.slowest), secs(h.p50), h.errors, mintHist(h.minted), h.cpu.Seconds(), float64(h.perMint)/1e6, h.rssKiB/1024)
			}
		}
		return b.String()
	}
	fmt.Fprintf(&b, "| agents (accounts) | policy | start → first token | herd: slowest agent | herd: broker CPU (its share of the wall time) | errors | mints per account | CPU per mint | RSS after herd (peak) | re-read CPU unchanged | one agent changed | p99 in / out of re-reads |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		h := r.herds[0]
		fmt.Fprintf(&b, "| %d (%d) | %d files, %.1f MB | %s | %s | %s (%.0f %%) | %d | %s | %.2f ms | %d MiB (%d) | %.1f ms | %.1f ms | %s / %s (%d / %d requests) |\n",
			r.agents, r.agents*storesPerAgent, r.policyFiles, float64(r.policyBytes)/1e6, spread(r.starts[0]), secs(h.slowest), secs(h.cpu), 100*h.cpu.Seconds()/h.elapsed.Seconds(), h.errors+r.trickleErrors, mintHist(h.minted),
			float64(h.perMint)/1e6, h.rssKiB/1024, h.hwmKiB/1024, float64(r.unchangedCPU)/1e6, float64(r.changedCPU)/1e6, ms(r.p99In), ms(r.p99Out), r.nIn, r.nOut)
	}
	for _, r := range rs {
		if h := r.herds[0]; h.errors > 0 {
			fmt.Fprintf(&b, "\nAt %d agents the first herd error: %.300s\n", r.agents, h.firstErr)
		}
	}
	return b.String()
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

// mintHist says how many accounts were minted how often: "1 × 30000".
func mintHist(m map[int]int) string {
	var keys []int
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d × %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
