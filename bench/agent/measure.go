package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/brokerclient"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/reconcile"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/orthancproc"
)

// ---- binary size ----

// buildResult is one way of building ./cmd/agent.
type buildResult struct {
	cmdline string // as a user would type it
	size    int64
	link    string // "static" or "dynamic"
	path    string
}

// buildVariants builds ./cmd/agent four ways into dir: plain and stripped
// (-trimpath -ldflags="-s -w"), each with the toolchain's default cgo
// setting and with CGO_ENABLED=0.
func buildVariants(ctx context.Context, root, dir string) ([]buildResult, error) {
	variants := []struct {
		cgo0  bool
		strip bool
	}{{false, false}, {false, true}, {true, false}, {true, true}}
	var out []buildResult
	for i, v := range variants {
		path := filepath.Join(dir, fmt.Sprintf("agent-%d", i))
		args := []string{"build"}
		shown := "go build"
		if v.strip {
			args = append(args, "-trimpath", "-ldflags=-s -w")
			shown += ` -trimpath -ldflags="-s -w"`
		}
		args = append(args, "-o", path, "./cmd/agent")
		shown += " ./cmd/agent"
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		cmd.Env = os.Environ()
		if v.cgo0 {
			cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
			shown = "CGO_ENABLED=0 " + shown
		}
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%s: %v\n%s", shown, err, b)
		}
		st, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		link, err := linkage(path)
		if err != nil {
			return nil, err
		}
		out = append(out, buildResult{cmdline: shown, size: st.Size(), link: link, path: path})
	}
	return out, nil
}

// ---- steady RSS and idle CPU ----

// idleResult is one agent process measured while idle.
type idleResult struct {
	stores        int
	toHealthy     time.Duration // exec -> first healthy /healthz
	settled       memory        // after the settle period
	end           memory        // after the CPU window
	window        time.Duration // wall time between the two CPU samples
	windowTicks   int64         // utime+stime used in the window
	lifeTicks     int64         // utime+stime since exec, at the end of the window
	life          time.Duration // exec -> end of the window
	heapInuse     float64       // go_memstats_heap_inuse_bytes after the window
	goSys         float64       // go_memstats_sys_bytes
	goroutines    float64
	pushes        float64 // orthanc_gcp_agent_pushes_total after the window
	checkInterval time.Duration
}

// measureIdle starts one agent process per site at once (each with its own
// Orthanc, so neither sees the other's entries), waits until each is
// healthy and has pushed every store, lets them run settle, then samples
// CPU time over window. The processes are stopped on return.
func measureIdle(ctx context.Context, e *env, bin string, counts []int, checkInterval, settle, window time.Duration) ([]idleResult, error) {
	procs := make([]*agentProc, len(counts))
	defer func() {
		for _, p := range procs {
			if p != nil && !p.exited() {
				_ = p.stop()
			}
		}
	}()
	res := make([]idleResult, len(counts))
	for i, n := range counts {
		s := e.sites[n]
		cfg, listen, err := e.writeAgentConfig(s, checkInterval, "idle")
		if err != nil {
			return nil, err
		}
		if procs[i], err = startAgent(bin, cfg, listen, filepath.Join(e.dir, s.agentID+"-idle.log"), e.dir, e.agentEnv); err != nil {
			return nil, err
		}
		res[i] = idleResult{stores: n, checkInterval: checkInterval}
	}
	for i, n := range counts {
		d, err := procs[i].waitHealthy(ctx, 60*time.Second)
		if err != nil {
			return nil, fmt.Errorf("%d-store agent: %w", n, err)
		}
		res[i].toHealthy = d
		s := e.sites[n]
		got, err := managedBy(ctx, s.orthanc, s.agentID)
		if err != nil {
			return nil, err
		}
		if got != n {
			return nil, fmt.Errorf("%d-store agent is healthy but Orthanc holds %d of its entries", n, got)
		}
	}
	log.Printf("idle: agents healthy; settling %s, then a %s CPU window", settle, window)
	if err := sleepCtx(ctx, settle); err != nil {
		return nil, err
	}
	start := make([]int64, len(counts))
	for i, p := range procs {
		m, err := readMemory(p.pid())
		if err != nil {
			return nil, err
		}
		res[i].settled = m
		if start[i], err = readCPUTicks(p.pid()); err != nil {
			return nil, err
		}
	}
	t0 := time.Now()
	if err := sleepCtx(ctx, window); err != nil {
		return nil, err
	}
	for i, p := range procs {
		t, err := readCPUTicks(p.pid())
		if err != nil {
			return nil, err
		}
		res[i].window = time.Since(t0)
		res[i].windowTicks = t - start[i]
		res[i].lifeTicks = t
		res[i].life = time.Since(p.started)
		if res[i].end, err = readMemory(p.pid()); err != nil {
			return nil, err
		}
	}
	// Only now talk to the agents again, so the window was undisturbed.
	for i, p := range procs {
		ok, err := p.healthy(ctx)
		if !ok {
			return nil, fmt.Errorf("%d-store agent unhealthy after the window: %v (log %s)", counts[i], err, p.logPath)
		}
		m, err := p.metrics(ctx)
		if err != nil {
			return nil, err
		}
		res[i].heapInuse, res[i].goSys = m["go_memstats_heap_inuse_bytes"], m["go_memstats_sys_bytes"]
		res[i].goroutines, res[i].pushes = m["go_goroutines"], m["orthanc_gcp_agent_pushes_total"]
	}
	for i, p := range procs {
		if err := p.stop(); err != nil {
			return nil, fmt.Errorf("%d-store agent: %w", counts[i], err)
		}
	}
	return res, nil
}

// ---- Orthanc restart -> entries back ----

// restartResult is the recovery of one agent process over several Orthanc
// restarts.
type restartResult struct {
	stores        int
	checkInterval time.Duration
	latency       []time.Duration // Orthanc answering again -> every managed entry listed
	downtime      []time.Duration // first failed poll -> Orthanc answering again
	pushes        float64         // pushes_total increase over all restarts
}

// pollEvery is how often the restart watcher lists Orthanc's servers.
const pollEvery = 20 * time.Millisecond

// measureRestarts runs the agent binary with checkInterval against the
// n-store site, restarts that Orthanc `restarts` times (the agent is not
// told) and times each recovery by polling GET /dicom-web/servers.
func measureRestarts(ctx context.Context, e *env, bin string, n, restarts int, checkInterval time.Duration) (restartResult, error) {
	s := e.sites[n]
	r := restartResult{stores: n, checkInterval: checkInterval}
	cfg, listen, err := e.writeAgentConfig(s, checkInterval, "restart")
	if err != nil {
		return r, err
	}
	p, err := startAgent(bin, cfg, listen, filepath.Join(e.dir, s.agentID+"-restart.log"), e.dir, e.agentEnv)
	if err != nil {
		return r, err
	}
	defer func() {
		if !p.exited() {
			_ = p.stop()
		}
	}()
	if _, err := p.waitHealthy(ctx, 60*time.Second); err != nil {
		return r, err
	}
	m0, err := p.metrics(ctx)
	if err != nil {
		return r, err
	}
	user, pass := s.orthanc.User()
	w := &watcher{url: s.orthanc.URL + orthancproc.DICOMwebRoot + "servers", user: user, pass: pass,
		client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}}
	for i := range restarts {
		// A random pause puts the restart at a random phase of the
		// agent's check cadence.
		if err := sleepCtx(ctx, time.Duration(rand.Float64()*float64(checkInterval))); err != nil {
			return r, err
		}
		lat, down, err := w.restart(ctx, s.orthanc, s.stores)
		if err != nil {
			return r, fmt.Errorf("restart %d: %w (agent log %s)", i+1, err, p.logPath)
		}
		log.Printf("restart %d/%d: Orthanc down %s, entries back %s after it answered", i+1, restarts, ms(down), ms(lat))
		r.latency, r.downtime = append(r.latency, lat), append(r.downtime, down)
	}
	m1, err := p.metrics(ctx)
	if err != nil {
		return r, err
	}
	r.pushes = m1["orthanc_gcp_agent_pushes_total"] - m0["orthanc_gcp_agent_pushes_total"]
	if r.pushes < float64(n*restarts) {
		return r, fmt.Errorf("the agent pushed %.0f entries over %d restarts of %d stores; want at least %d", r.pushes, restarts, n, n*restarts)
	}
	if err := p.stop(); err != nil {
		return r, err
	}
	return r, nil
}

// watcher polls one Orthanc's server list on fresh connections (a pooled
// one would die with the old process and blur the "answering again" time).
type watcher struct {
	url, user, pass string
	client          *http.Client
}

// list returns the server names, or an error if Orthanc does not answer.
func (w *watcher) list(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(w.user, w.pass)
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var names []string
	return names, json.NewDecoder(resp.Body).Decode(&names)
}

// restart restarts o and returns how long after it first answered again
// every name in want was listed, and how long it did not answer.
func (w *watcher) restart(ctx context.Context, o *orthancproc.Instance, want []string) (latency, down time.Duration, err error) {
	names, err := w.list(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("before the restart: %w", err)
	}
	if !hasAll(names, want) {
		return 0, 0, errors.New("before the restart: not every managed entry is there")
	}
	var wg sync.WaitGroup
	var restartErr error
	wg.Add(1)
	go func() { defer wg.Done(); restartErr = o.Restart() }()
	defer wg.Wait()

	var downAt, upAt time.Time
	deadline := time.Now().Add(90 * time.Second)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		names, err := w.list(ctx)
		at := time.Now()
		switch {
		case err != nil:
			if downAt.IsZero() {
				downAt = at
			}
			upAt = time.Time{} // not up (again) yet
		case downAt.IsZero():
			// The old process still answers while it shuts down.
		default:
			if upAt.IsZero() {
				upAt = at
			}
			if hasAll(names, want) {
				wg.Wait()
				if restartErr != nil {
					return 0, 0, restartErr
				}
				return at.Sub(upAt), upAt.Sub(downAt), nil
			}
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-tick.C:
		}
	}
	wg.Wait()
	if restartErr != nil {
		return 0, 0, restartErr
	}
	return 0, 0, fmt.Errorf("entries not back within 90 s (down seen: %v, up seen: %v)", !downAt.IsZero(), !upAt.IsZero())
}

// ---- one refresh cycle, in process ----

// timedBroker times the agent's broker calls.
type timedBroker struct {
	bc             *brokerclient.Client
	stores, tokens []time.Duration
}

func (b *timedBroker) Stores(ctx context.Context) ([]brokerclient.Store, error) {
	t := time.Now()
	s, err := b.bc.Stores(ctx)
	b.stores = append(b.stores, time.Since(t))
	return s, err
}

func (b *timedBroker) Tokens(ctx context.Context, names []string) (*brokerclient.Tokens, error) {
	t := time.Now()
	r, err := b.bc.Tokens(ctx, names)
	b.tokens = append(b.tokens, time.Since(t))
	return r, err
}

// timedOrthanc times the agent's Orthanc calls.
type timedOrthanc struct {
	*orthanc.Client // every other method of reconcile.Orthanc, untimed
	list, put       []time.Duration
}

func (o *timedOrthanc) ListServers(ctx context.Context) (map[string]orthanc.Server, error) {
	t := time.Now()
	s, err := o.Client.ListServers(ctx)
	o.list = append(o.list, time.Since(t))
	return s, err
}

func (o *timedOrthanc) PutServer(ctx context.Context, name string, d orthanc.Definition) error {
	t := time.Now()
	err := o.Client.PutServer(ctx, name, d)
	o.put = append(o.put, time.Since(t))
	return err
}

// cycleResult holds the distributions of one in-process measurement.
type cycleResult struct {
	stores, iterations   int
	total                []time.Duration
	brokerStores, tokens []time.Duration // GET /v1/stores, POST /v1/tokens
	list, put            []time.Duration // GET servers?expand, PUT servers/{name}
	mints                int             // upstream mints at the fake token endpoint
}

// cycleAgent is the agent's reconcile loop in process, with the real broker
// and Orthanc clients wrapped in timers, on the shared shifted clock.
type cycleAgent struct {
	rec *reconcile.Reconciler
	bc  *brokerclient.Client
	tb  *timedBroker
	to  *timedOrthanc
}

func newCycleAgent(e *env, s *site) (*cycleAgent, error) {
	user, pass := s.orthanc.User()
	bc, err := brokerclient.New(brokerclient.Options{URL: e.brokerURL, AgentID: s.agentID, Key: s.key, Timeout: 30 * time.Second, Now: e.clk.Now})
	if err != nil {
		return nil, err
	}
	hosts, err := urlrule.NewAllowList(e.allowedHosts)
	if err != nil {
		return nil, err
	}
	oc, err := orthanc.New(orthanc.Options{URL: s.orthanc.URL, DicomWebRoot: orthancproc.DICOMwebRoot, Username: user, Password: pass}, hosts)
	if err != nil {
		return nil, err
	}
	a := &cycleAgent{bc: bc, tb: &timedBroker{bc: bc}, to: &timedOrthanc{Client: oc}}
	a.rec = reconcile.New(reconcile.Options{
		Broker: a.tb, Orthanc: a.to, Now: e.clk.Now,
		Settings: reconcile.Settings{AgentID: s.agentID, ServerOptions: serverOptions,
			RefreshMargin: 10 * time.Minute, CheckInterval: 10 * time.Second},
	})
	return a, nil
}

// refreshAdvance moves the shared clock past every refresh time (a 1 h
// token is refreshed RefreshMargin plus at most 10 % jitter, so 49-50 min,
// after it was issued) and past the broker's reuse limit (a cached token
// with under 15 min left is not handed out), so each SyncBroker is a real
// refresh: the broker mints upstream and the agent pushes a new token.
const refreshAdvance = 51 * time.Minute

// measureRefresh times Reconciler.SyncBroker, the agent's refresh cycle
// (GET /v1/stores, POST /v1/tokens, GET servers?expand, PUT per store),
// with every store due each time.
func measureRefresh(ctx context.Context, e *env, s *site, iterations int) (cycleResult, error) {
	n := len(s.stores)
	r := cycleResult{stores: n, iterations: iterations}
	a, err := newCycleAgent(e, s)
	if err != nil {
		return r, err
	}
	for i := -1; i < iterations; i++ { // i == -1: warm-up, not recorded
		e.clk.Advance(refreshAdvance)
		// Refreshes are ~50 min apart, far beyond any keep-alive: each
		// one opens a new connection to the broker (Orthanc's client
		// never keeps one).
		a.bc.CloseIdleConnections()
		mints0 := e.cloud.Tokens.MintedByKey(e.keyID)
		a.tb.stores, a.tb.tokens, a.to.list, a.to.put = nil, nil, nil, nil
		t := time.Now()
		err := a.rec.SyncBroker(ctx)
		d := time.Since(t)
		if err != nil {
			return r, fmt.Errorf("refresh %d: %w", i, err)
		}
		mints := e.cloud.Tokens.MintedByKey(e.keyID) - mints0
		if len(a.to.put) != n || mints != n || len(a.tb.tokens) != 1 {
			return r, fmt.Errorf("refresh %d was not a full refresh: %d PUTs, %d upstream mints, %d token calls for %d stores",
				i, len(a.to.put), mints, len(a.tb.tokens), n)
		}
		if st := a.rec.Status(); !st.Healthy {
			return r, fmt.Errorf("refresh %d: agent unhealthy: %s", i, st.Reason)
		}
		if i < 0 {
			continue
		}
		r.total = append(r.total, d)
		r.brokerStores = append(r.brokerStores, a.tb.stores...)
		r.tokens = append(r.tokens, a.tb.tokens...)
		r.list = append(r.list, a.to.list...)
		r.put = append(r.put, a.to.put...)
		r.mints += mints
	}
	return r, nil
}

// measureRepush times Reconciler.CheckOrthanc after every managed entry
// was deleted behind the agent's back (what an Orthanc restart does): one
// GET servers?expand and a PUT per store from the cached tokens, no broker
// call. This is the "one cycle" of the restart bound.
func measureRepush(ctx context.Context, e *env, s *site, iterations int) (cycleResult, error) {
	n := len(s.stores)
	r := cycleResult{stores: n, iterations: iterations}
	a, err := newCycleAgent(e, s)
	if err != nil {
		return r, err
	}
	if err := a.rec.SyncBroker(ctx); err != nil {
		return r, err
	}
	calls0 := len(a.tb.stores) + len(a.tb.tokens)
	for i := range iterations {
		for _, name := range s.stores {
			if err := s.orthanc.DoContext(ctx, http.MethodDelete, orthancproc.DICOMwebRoot+"servers/"+name, nil, nil); err != nil {
				return r, err
			}
		}
		a.to.list, a.to.put = nil, nil
		t := time.Now()
		err := a.rec.CheckOrthanc(ctx)
		d := time.Since(t)
		if err != nil {
			return r, fmt.Errorf("re-push %d: %w", i, err)
		}
		if len(a.to.put) != n {
			return r, fmt.Errorf("re-push %d: %d PUTs for %d missing entries", i, len(a.to.put), n)
		}
		r.total = append(r.total, d)
		r.list = append(r.list, a.to.list...)
		r.put = append(r.put, a.to.put...)
	}
	if calls := len(a.tb.stores) + len(a.tb.tokens); calls != calls0 {
		return r, fmt.Errorf("re-push called the broker %d times", calls-calls0)
	}
	return r, nil
}

// sleepCtx sleeps d unless ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// goVersion is the toolchain that builds the agent (`go env GOVERSION`).
func goVersion(ctx context.Context, root string) string {
	cmd := exec.CommandContext(ctx, "go", "env", "GOVERSION", "CGO_ENABLED")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(out))
	if len(f) == 2 {
		return f[0] + ", CGO_ENABLED=" + f[1] + " by default"
	}
	return strings.Join(f, " ")
}

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run from inside the module (go env GOMOD is empty)")
	}
	return filepath.Dir(mod), nil
}
