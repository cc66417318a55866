// Command agent measures the agent's performance figures and writes them
// to the "agent" section of BENCHMARKS.md:
//
//   - the size of ./cmd/agent built four ways (plain and -trimpath
//     -ldflags="-s -w", with the default cgo setting and CGO_ENABLED=0);
//   - steady RSS (VmRSS, VmHWM from /proc/PID/status) of the agent binary
//     running as its own process with 1 and with 50 stores, each against
//     its own real Orthanc;
//   - idle CPU of those processes (utime+stime from /proc/PID/stat) over a
//     window with the default CheckInterval and 1 h tokens;
//   - Orthanc restart -> every managed entry back, with CheckInterval 1s,
//     over several restarts (GET /dicom-web/servers polled every 20 ms);
//   - p50/p99 of one refresh cycle, the agent's reconcile loop driven in
//     process against the real broker and the real Orthanc, and of one
//     re-push cycle (the restart bound).
//
// The broker runs in this process on loopback with the Google fakes; the
// Orthancs are the Debian packages (apt-get install orthanc
// orthanc-dicomweb). The default run takes about 3 minutes on 2 cores,
// most of it the idle window; -window 10m gives the unscaled figure.
//
//	go run ./bench/agent -out BENCHMARKS.md
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/bench/report"
)

// Targets from the issue. /proc reports KiB; the RSS target is read
// strictly as 15 MB = 15,000,000 bytes (14.3 MiB), and the section says
// when a figure meets it only if MB is read as MiB.
const (
	targetRSSBytes = 15_000_000
	targetIdleCPU  = 0.1 // % of one core
)

type options struct {
	out                  string
	agentBin             string
	settle, window       time.Duration
	checkInterval        time.Duration
	restarts             int
	restartCheckInterval time.Duration
	cycles, cycles50     int
	repush               int
	agentEnv             string
	keep                 bool
}

func main() {
	var o options
	flag.StringVar(&o.out, "out", "", "BENCHMARKS.md to update (empty: print only)")
	flag.StringVar(&o.agentBin, "agent-bin", "", "agent binary for the process figures (default: the CGO_ENABLED=0 -trimpath -s -w build made here)")
	flag.DurationVar(&o.settle, "settle", 30*time.Second, "run time after healthy before the CPU window (a few check intervals)")
	flag.DurationVar(&o.window, "window", 2*time.Minute, "idle CPU window (the issue asks for 10m; scaled for CI)")
	flag.DurationVar(&o.checkInterval, "check-interval", 10*time.Second, "CheckInterval of the idle agents")
	flag.IntVar(&o.restarts, "restarts", 6, "Orthanc restarts to time")
	flag.DurationVar(&o.restartCheckInterval, "restart-check-interval", time.Second, "CheckInterval of the agent during the restarts")
	flag.IntVar(&o.cycles, "cycles", 200, "refresh cycles to time with 1 store")
	flag.IntVar(&o.cycles50, "cycles50", 20, "refresh cycles to time with 50 stores all due")
	flag.IntVar(&o.repush, "repush", 20, "re-push cycles (50 entries missing) to time")
	flag.StringVar(&o.agentEnv, "agent-env", "", "extra environment of the agent processes, comma-separated KEY=VALUE (e.g. GOMEMLIMIT=8MiB)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, configs)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("bench/agent: ")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := run(ctx, o, strings.Join(os.Args[1:], " "))
	if err != nil {
		stop()
		log.Fatal(err) // run has already stopped every process it started
	}
	body := r.markdown()
	fmt.Print(body)
	if o.out != "" {
		if err := report.WriteSection(o.out, "agent", body); err != nil {
			log.Fatal(err)
		}
		log.Printf("wrote the agent section of %s", o.out)
	}
}

// results is everything one run measured.
type results struct {
	opts    options
	args    string
	began   time.Time
	elapsed time.Duration
	goVer   string
	hz      int64
	builds  []buildResult
	binDesc string
	idle    []idleResult // 1 and 50 stores
	restart restartResult
	c1, c50 cycleResult // refresh cycles
	repush  cycleResult
}

// run measures everything; every process it starts is stopped when it
// returns, error or not.
func run(ctx context.Context, o options, args string) (*results, error) {
	r := &results{opts: o, args: args, began: time.Now(), hz: clockTick()}
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	r.goVer = goVersion(ctx, root)
	dir, err := os.MkdirTemp("", "bench-agent-")
	if err != nil {
		return nil, err
	}
	if o.keep {
		log.Printf("work directory (kept): %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	log.Printf("building ./cmd/agent four ways")
	if r.builds, err = buildVariants(ctx, root, dir); err != nil {
		return nil, err
	}
	bin := r.builds[3].path
	r.binDesc = "`" + r.builds[3].cmdline + "`"
	if o.agentBin != "" {
		bin, r.binDesc = o.agentBin, "`"+o.agentBin+"` (-agent-bin)"
	}

	counts := []int{1, 50}
	e, err := newEnv(ctx, dir, counts)
	if err != nil {
		return nil, err
	}
	defer e.close()
	e.agentEnv = splitEnv(o.agentEnv)

	log.Printf("idle: starting the 1- and 50-store agents")
	if r.idle, err = measureIdle(ctx, e, bin, counts, o.checkInterval, o.settle, o.window); err != nil {
		return nil, err
	}
	log.Printf("restart: %d restarts of the 50-store site, CheckInterval %s", o.restarts, o.restartCheckInterval)
	if r.restart, err = measureRestarts(ctx, e, bin, 50, o.restarts, o.restartCheckInterval); err != nil {
		return nil, err
	}
	// From here on the shared clock jumps ahead; no agent process runs.
	log.Printf("cycles: %d refreshes with 1 store, %d with 50, %d re-pushes", o.cycles, o.cycles50, o.repush)
	if r.c1, err = measureRefresh(ctx, e, e.sites[1], o.cycles); err != nil {
		return nil, err
	}
	if r.c50, err = measureRefresh(ctx, e, e.sites[50], o.cycles50); err != nil {
		return nil, err
	}
	if r.repush, err = measureRepush(ctx, e, e.sites[50], o.repush); err != nil {
		return nil, err
	}
	r.elapsed = time.Since(r.began)
	return r, nil
}

// targetsMet reports the two targets over every idle agent: steady
// RSS (VmRSS after the window) within 15 MB, also whether it is within
// 15 MiB, and idle CPU under 0.1 %.
func (r *results) targetsMet() (rssOK, rssMiBOK, cpuOK bool) {
	rssOK, rssMiBOK, cpuOK = true, true, true
	for _, x := range r.idle {
		if x.end.RSSkB*1024 > targetRSSBytes {
			rssOK = false
		}
		if x.end.RSSkB > 15*1024 {
			rssMiBOK = false
		}
		if cpuPercent(x.windowTicks, r.hz, x.window) >= targetIdleCPU {
			cpuOK = false
		}
	}
	return rssOK, rssMiBOK, cpuOK
}

// maxRSS is the largest steady VmRSS of the idle agents, in kB.
func (r *results) maxRSS() int64 {
	var m int64
	for _, x := range r.idle {
		m = max(m, x.end.RSSkB)
	}
	return m
}

// splitEnv parses "K=V,K2=V2" into KEY=VALUE items, dropping empty ones.
func splitEnv(s string) []string {
	var out []string
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			out = append(out, kv)
		}
	}
	return out
}

// markdown renders the BENCHMARKS.md section.
func (r *results) markdown() string {
	o, hz, idle, rs := r.opts, r.hz, r.idle, r.restart
	var b strings.Builder
	cmd := "go run ./bench/agent"
	if r.args != "" {
		cmd += " " + r.args
	}
	fmt.Fprintf(&b, "## Agent: binary size, memory, idle CPU, restart recovery, refresh cycle\n\n")
	fmt.Fprintf(&b, "Command: `%s` (via `make bench`), run from the module root; agent built by %s; bench process %s with GOMAXPROCS=%d; %s; whole run %s.\n\n",
		cmd, r.goVer, runtime.Version(), runtime.GOMAXPROCS(0), r.began.UTC().Format("2006-01-02"), r.elapsed.Round(time.Second))
	fmt.Fprintf(&b, "Set-up: the broker (`broker.New`, file policy, one service-account key for every account) in the bench process on 127.0.0.1 with the Google fakes (`testbed/fakegcp`, 1 h tokens); one real Orthanc 1.10 + DICOMweb plugin per site with Basic auth; the agent binary %s as a separate process with the example configuration of docs/agent.md (`RefreshMargin` 10m, `ServerOptions` HasDelete/ChunkedTransfers/Timeout, Orthanc user and password file, health on 127.0.0.1) and %s. The machine has 2 cores shared with other work.\n\n",
		r.binDesc, runtimeDesc(o.agentEnv))

	b.WriteString("### Binary size\n\n| build (module root) | bytes | MiB | linking |\n|---|---|---|---|\n")
	for _, x := range r.builds {
		fmt.Fprintf(&b, "| `%s` | %d | %.2f | %s |\n", x.cmdline, x.size, float64(x.size)/(1<<20), x.link)
	}
	b.WriteString("\nThe shipped build (docs/agent.md) is the last one: static, stripped.\n\n")

	fmt.Fprintf(&b, "### Steady memory and idle CPU (agent process)\n\n")
	fmt.Fprintf(&b, "The 1-store and the 50-store agent ran at the same time, each against its own Orthanc (the 50-store policy grants 50 accounts; all 50 DICOMweb servers pushed). Each was started, waited for until `/healthz` was healthy (polled every 10 ms) and Orthanc listed all its entries, left running %s (%g check intervals of %s), then measured over a window of **%s**: VmRSS and VmHWM from `/proc/PID/status`, CPU = Δ(utime+stime) from `/proc/PID/stat`. Nothing talked to the agents during the window; the Go figures come from `/metrics` afterwards.\n\n",
		o.settle, float64(o.settle)/float64(o.checkInterval), o.checkInterval, idle[0].window.Round(time.Millisecond))
	b.WriteString("| stores | exec → healthy | VmRSS after settle | **VmRSS after window** (anon + file) | VmHWM (peak) | Go heap in use / runtime total | goroutines | CPU in window | **idle CPU** | CPU since exec |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range idle {
		fmt.Fprintf(&b, "| %d | %s | %s | **%s** = %.2f MB (%s + %s) | %s | %.1f / %.1f MiB | %.0f | %d ticks = %.2f s | **%.3f %%** | %.2f s in %s |\n",
			x.stores, x.toHealthy.Round(time.Millisecond), mib(x.settled.RSSkB), mib(x.end.RSSkB), float64(x.end.RSSkB)*1024/1e6,
			mib(x.end.AnonkB), mib(x.end.FilekB), mib(x.end.HWMkB),
			x.heapInuse/(1<<20), x.goSys/(1<<20), x.goroutines,
			x.windowTicks, float64(x.windowTicks)/float64(hz), cpuPercent(x.windowTicks, hz, x.window),
			float64(x.lifeTicks)/float64(hz), x.life.Round(time.Second))
	}
	res := 100 / float64(hz) / idle[0].window.Seconds()
	fmt.Fprintf(&b, "\nThe window is **scaled**: the issue asks for 10 idle minutes; `-window` sets it (`-window 10m` for the full figure). Idle CPU %% = CPU seconds ÷ wall seconds × 100, of one core. In the window each agent made about %.0f Orthanc checks (`GET /dicom-web/servers?expand`) and %.0f store-list calls to the broker (`GET /v1/stores`, one EdDSA assertion each); token refreshes (one per store every ~50 min with 1 h tokens) fall outside it and are costed below. `/proc` counts whole clock ticks of 1/%d s, so each figure is ±1 tick = ±%.4f %% over this window.\n\n",
		idle[0].window.Seconds()/o.checkInterval.Seconds(), idle[0].window.Seconds()/60, hz, res)
	rssOK, rssMiBOK, cpuOK := r.targetsMet()
	rssText := verdict(rssOK)
	if !rssOK && rssMiBOK {
		rssText = fmt.Sprintf("NOT met** as 15 MB = 15,000,000 bytes: the largest is %s = %.2f MB; **met only if MB is read as MiB", mib(r.maxRSS()), float64(r.maxRSS())*1024/1e6)
	}
	fmt.Fprintf(&b, "Targets: steady RSS (VmRSS after the window) ≤ 15 MB: **%s**; idle CPU < 0.1 %%: **%s**. File pages are the mapped binary (shared, reclaimable); anonymous pages are the agent's own heap, stacks and runtime.\n\n", rssText, verdict(cpuOK))

	sortedLat := slices.Clone(rs.latency)
	slices.Sort(sortedLat)
	lat, down, rps := summarize(rs.latency), summarize(rs.downtime), summarize(r.repush.total)
	bound := rs.checkInterval + rps.max
	fmt.Fprintf(&b, "### Orthanc restart → all managed entries back (agent process)\n\n")
	fmt.Fprintf(&b, "The agent binary with `CheckInterval` %s managed the 50-store site. Orthanc was restarted %d times (`orthancproc.Instance.Restart`: SIGTERM, wait for exit, start on the same ports; entries made over REST are forgotten, as with Orthanc's default `ServersInDatabase: false`), each after a random pause of up to one check interval so restarts fall at random phases of the agent's cadence. The bench polled `GET /dicom-web/servers` every %s on fresh connections and timed from the first answer of the new Orthanc to the first answer listing all 50 managed servers (±%s polling resolution).\n\n",
		rs.checkInterval, len(rs.latency), pollEvery, pollEvery)
	b.WriteString("| stores | CheckInterval | restarts | min | median | p99 | max | Orthanc not answering (median) | pushes |\n|---|---|---|---|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| %d | %s | %d | %s | **%s** | %s | **%s** | %s | %.0f (%d × %d expected) |\n\n",
		rs.stores, rs.checkInterval, lat.n, ms(lat.min), ms(lat.p50), ms(lat.p99), ms(lat.max), ms(down.p50), rs.pushes, len(rs.latency), rs.stores)
	fmt.Fprintf(&b, "All samples: %s. Expected bound: CheckInterval + one re-push cycle = %s + %s (slowest re-push of 50 entries below) = **%s**, plus up to %s for the poll to see it; the slowest recovery took %s: **%s**.\n\n",
		joinMs(sortedLat), rs.checkInterval, ms(rps.max), ms(bound), pollEvery, ms(lat.max), within(lat.max <= bound+pollEvery))

	fmt.Fprintf(&b, "### One refresh cycle (agent loop in process)\n\n")
	fmt.Fprintf(&b, "`agent/reconcile.Reconciler` built as `agent/app` builds it (real `brokerclient` and `orthanc` clients, wrapped only to time each call) against the broker above and the sites' Orthancs. Before each cycle a clock shared by the in-process broker and agent moves %s ahead, so every store is due (a 1 h token is refreshed 10–11 min before expiry) and the broker's cached token has under 15 min left: the broker mints upstream (RSA-2048 JWT-bearer grant at the fake token endpoint, on wall time) and the agent PUTs the new token. The idle connection to the broker is closed before each cycle (real refreshes are ~50 min apart); the Orthanc client never keeps one. A cycle is one `SyncBroker`: `GET /v1/stores`, one `POST /v1/tokens` for the due stores, `GET /dicom-web/servers?expand`, a `PUT` per store. One warm-up cycle is not counted; each cycle was checked to mint and push exactly once per store. The broker shares the bench process and its %d cores, so its work is in these figures.\n\n",
		refreshAdvance, runtime.GOMAXPROCS(0))
	b.WriteString("| stores | cycles | step | p50 | p99 | max |\n|---|---|---|---|---|---|\n")
	for _, c := range []cycleResult{r.c1, r.c50} {
		rows := []struct {
			name string
			d    []time.Duration
		}{
			{"**whole cycle**", c.total},
			{"GET /v1/stores", c.brokerStores},
			{"POST /v1/tokens (broker mints " + fmt.Sprint(c.stores) + ")", c.tokens},
			{"GET servers?expand", c.list},
			{"PUT servers/{name} (each)", c.put},
		}
		for _, row := range rows {
			s := summarize(row.d)
			fmt.Fprintf(&b, "| %d | %d | %s | %s | %s | %s |\n", c.stores, c.iterations, row.name, ms(s.p50), ms(s.p99), ms(s.max))
		}
	}
	fmt.Fprintf(&b, "| %d | %d | re-push cycle: 50 entries missing, `CheckOrthanc` (GET list + 50 PUTs from cached tokens, no broker call) | %s | %s | %s |\n\n",
		r.repush.stores, r.repush.iterations, ms(rps.p50), ms(rps.p99), ms(rps.max))
	s1 := summarize(r.c1.total)
	fmt.Fprintf(&b, "One refresh of one store takes **p50 %s, p99 %s** end to end on loopback; in production add the network round trips to the broker (TLS) and the broker's round trip to Google.\n", ms(s1.p50), ms(s1.p99))
	return b.String()
}

func runtimeDesc(agentEnv string) string {
	d := fmt.Sprintf("Go runtime defaults (clean environment: GOMAXPROCS = %d cores, no GOGC/GOMEMLIMIT in the environment, so the agent applies its own 10 MiB soft memory limit from cmd/agent)", runtime.NumCPU())
	if env := splitEnv(agentEnv); len(env) > 0 {
		d += " plus `" + strings.Join(env, " ") + "` (-agent-env)"
	}
	return d
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func within(ok bool) string {
	if ok {
		return "within the bound"
	}
	return "OVER the bound"
}

func joinMs(d []time.Duration) string {
	s := make([]string, len(d))
	for i, v := range d {
		s[i] = ms(v)
	}
	return strings.Join(s, ", ")
}
