package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/stack"
)

// Settings of the system under soak; doc.go explains the choice.
const (
	Stores = 16
	// TokenLifetime is the lifetime of store-a's tokens; each next store's
	// live LifetimeStep longer (store-p's 110 s), so stores that a fault made
	// refresh together drift apart again.
	TokenLifetime = 80 * time.Second
	LifetimeStep  = 2 * time.Second
	RefreshMargin = 35 * time.Second
	CheckInterval = time.Second
	// BrokerRefresh is BROKER_REFRESH: the broker re-reads its policy and
	// secrets this often, so Secret Manager outages meet real re-reads and
	// a rotated key is picked up either by a re-read or by Google's refusal.
	BrokerRefresh = 30 * time.Second
	SamplePeriod  = 200 * time.Millisecond
	CallPause     = 300 * time.Millisecond
	CallTimeout   = time.Minute
	// RepushGrace is how long after a site Orthanc restart a call may fail
	// unavoidably because the entry is not there yet (see doc.go, rule 2).
	RepushGrace = CheckInterval + time.Second
	// GapBound is the most "longest without a valid token" may be.
	GapBound = 3 * time.Second
	// RotationsPerTenMinutes is the least number of token rotations a
	// 10-minute run must see; shorter and longer runs scale it.
	RotationsPerTenMinutes = 100
)

// RequiredRotations is the least number of rotations a run of d must see.
func RequiredRotations(d time.Duration) int {
	return int(math.Ceil(RotationsPerTenMinutes * d.Seconds() / 600))
}

// Config is one run.
type Config struct {
	Duration time.Duration
	Seed     uint64
	// Bin are prebuilt broker and agent binaries (empty: built by the stack).
	Bin stack.Binaries
	// Dir receives the stack's files (keys, configurations, Orthanc
	// storage, logs); empty: a temporary directory, removed after the run
	// (its logs are copied to the log directory first).
	Dir string
	// LogDir is where the run's logs are kept (see doc.go, "Logs"): a new
	// directory soak-SEED-TIME in it receives every log and report.txt,
	// whatever the verdict. Empty: a new directory under os.TempDir(),
	// kept only when the run fails.
	LogDir string
	// Log receives progress lines (nil: none).
	Log io.Writer
}

// interval is a span of wall-clock time.
type interval struct{ from, to time.Time }

func (iv interval) overlaps(a, b time.Time) bool { return !b.Before(iv.from) && !a.After(iv.to) }

// runner is one run's state.
type runner struct {
	cfg   Config
	s     *stack.Stack
	t0    time.Time
	end   time.Time
	plan  []Fault
	logMu sync.Mutex

	// progress is soak.log in the log directory: the progress lines again.
	progress io.Writer

	mu      sync.Mutex
	calls   []Call
	done    []Done
	down    []interval // site Orthanc restarts: from the stop request until ready
	samples []sample
	harness []string // problems of the harness itself (a part that would not come back)
	// jobsSeen are the site Orthanc's failed jobs already attributed to a call.
	jobsSeen map[string]bool
}

func (r *runner) logf(format string, args ...any) {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	prefix := "soak: "
	if !r.t0.IsZero() {
		prefix += "[" + fmtOffset(time.Since(r.t0)) + "] "
	}
	line := prefix + redact(fmt.Sprintf(format, args...))
	for _, w := range []io.Writer{r.cfg.Log, r.progress} {
		if w != nil {
			fmt.Fprintln(w, line)
		}
	}
}

func (r *runner) offset(t time.Time) time.Duration { return t.Sub(r.t0) }

func (r *runner) harnessProblem(format string, args ...any) {
	msg := redact(fmt.Sprintf(format, args...))
	r.mu.Lock()
	r.harness = append(r.harness, msg)
	r.mu.Unlock()
	r.logf("HARNESS: %s", msg)
}

// Run starts the stack, drives the load and the faults for cfg.Duration,
// stops everything and returns the judged result. An error means the run
// could not be made at all (the stack did not start, a bad duration).
func Run(ctx context.Context, cfg Config) (*Result, error) {
	plan, err := Plan(cfg.Seed, cfg.Duration)
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, plan: plan}
	logDir, err := makeLogDir(cfg.LogDir, cfg.Seed, time.Now())
	if err != nil {
		return nil, err
	}
	progress, err := os.OpenFile(filepath.Join(logDir, "soak.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer progress.Close()
	r.progress = progress
	dir, ownDir := cfg.Dir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "orthanc-gcp-soak-"); err != nil {
			return nil, err
		}
		ownDir = true
	}
	r.logf("seed=%d duration=%s: %d faults planned, %d stores, tokens of %s to %s refreshed %s before expiry; files in %s, logs kept in %s",
		cfg.Seed, cfg.Duration, len(plan), Stores, lifetime(0), lifetime(Stores-1), RefreshMargin, dir, logDir)
	for _, f := range plan {
		r.logf("  plan +%-8s %-22s %s", fmtOffset(f.At), f.Kind, f.Describe())
	}
	startCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	s, err := stack.New(startCtx, stack.Options{
		Dir: dir, Bin: cfg.Bin, Stores: Stores,
		TokenLifetime: TokenLifetime, RefreshMargin: RefreshMargin, CheckInterval: CheckInterval,
		BrokerRefresh: BrokerRefresh, SecretManager: true, TapBroker: true,
		ReadyTimeout: time.Minute,
		Logf:         func(format string, args ...any) { r.logf(format, args...) },
	})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("soak: start the stack: %w (files kept in %s, progress lines in %s)", err, dir, logDir)
	}
	r.s = s
	if err := r.stagger(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("soak: spread the stores' refreshes: %w (files kept in %s, progress lines in %s)", err, dir, logDir)
	}
	res := r.run(ctx)
	r.logf("stopping everything")
	if err := s.Close(); err != nil {
		r.logf("stopping: %v", err)
	}
	res.LogDir = logDir
	if err := r.keepLogs(logDir, res); err != nil {
		res.Harness = append(res.Harness, "keep the logs: "+err.Error())
	}
	if ownDir {
		os.RemoveAll(dir)
	}
	if cfg.LogDir == "" && res.Pass() {
		progress.Close()
		os.RemoveAll(logDir)
		res.LogDir = ""
	}
	return res, nil
}

// makeLogDir creates the run's log directory: soak-SEED-TIME in parent, or
// a new temporary directory when parent is empty.
func makeLogDir(parent string, seed uint64, now time.Time) (string, error) {
	name := fmt.Sprintf("soak-%d-%s", seed, now.UTC().Format("20060102T150405Z"))
	if parent == "" {
		return os.MkdirTemp("", "orthanc-gcp-"+name+"-")
	}
	dir := filepath.Join(parent, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("soak: log directory: %w", err)
	}
	return dir, nil
}

// keepLogs copies every log of the stack into dir and writes the report
// (res.Text()) to dir/report.txt.
func (r *runner) keepLogs(dir string, res *Result) error {
	s := r.s
	var errs []error
	for name, from := range map[string]string{
		"agent.log": s.AgentLogPath, "broker.log": s.BrokerLogPath, "fakes.log": s.FakesLogPath,
		"front.log": s.FrontLogPath, "tap.log": s.TapLogPath,
		"orthanc-site.log": s.Site.LogPath, "orthanc-cloud.log": s.CloudOrthanc.LogPath,
	} {
		data, err := os.ReadFile(from)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name), data, 0o600)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, os.WriteFile(filepath.Join(dir, "report.txt"), []byte(res.Text()), 0o600))
	return errors.Join(errs...)
}

func (r *runner) run(ctx context.Context) *Result {
	r.t0 = time.Now()
	r.end = r.t0.Add(r.cfg.Duration)
	runCtx, cancel := context.WithDeadline(ctx, r.end)
	defer cancel()
	r.logf("stack ready: load and faults start now")

	var wg sync.WaitGroup
	wg.Go(func() { r.callLoop(runCtx) })
	wg.Go(func() { r.sampleLoop(runCtx) })
	wg.Go(func() { r.progressLoop(runCtx) })
	wg.Go(func() {
		r.faultLoop(runCtx)
		if ctx.Err() == nil && runCtx.Err() == nil {
			r.logf("every planned fault done; quiet until the end")
		}
	})
	wg.Wait()
	if ctx.Err() != nil {
		r.harnessProblem("interrupted after %s", fmtOffset(time.Since(r.t0)))
	}
	return r.judge()
}

// lifetime is store i's token lifetime.
func lifetime(i int) time.Duration { return TokenLifetime + time.Duration(i)*LifetimeStep }

// meanLead is the agent's mean lead: RefreshMargin plus half its 10 % jitter.
const meanLead = RefreshMargin + RefreshMargin/20

// stagger gives every store its own lifetime (lifetime(i), a per-principal
// lifetime of the fake token endpoint) and spreads the stores' refreshes
// evenly over one refresh period, before the run starts. The stack starts
// every store at once, so left alone all refreshes would come in one burst
// every ~43 s, and a broker kill or token endpoint fault planned between
// bursts would meet no token request. Store i's next token gets i steps of
// extra life, the broker is restarted (its cache emptied) and the agent
// restarted, so it fetches every token anew; then each store keeps
// lifetime(i). The run starts shortly before the first of the new tokens
// is due for refresh. Nothing here is counted in the run.
func (r *runner) stagger(ctx context.Context) error {
	s := r.s
	stores := s.Stores()
	period := lifetime(Stores/2) - meanLead
	step := period/time.Duration(len(stores)) - LifetimeStep
	for i, st := range stores {
		s.Cloud.Tokens.SetLifetimeFor(st.ServiceAccount, lifetime(i)+time.Duration(i)*step)
	}
	defer func() {
		for i, st := range stores {
			s.Cloud.Tokens.SetLifetimeFor(st.ServiceAccount, lifetime(i))
		}
	}()
	if err := s.KillBroker(); err != nil {
		return err
	}
	if err := s.StartBroker(); err != nil {
		return err
	}
	if err := s.StopAgentSignal(syscall.SIGTERM, 5*time.Second); err != nil {
		return err
	}
	minted := time.Now()
	if err := s.StartAgent(); err != nil {
		return err
	}
	if _, err := s.WaitAgentHealthy(ctx, time.Minute); err != nil {
		return err
	}
	for i, st := range stores {
		s.Cloud.Tokens.SetLifetimeFor(st.ServiceAccount, lifetime(i))
	}
	first := minted.Add(TokenLifetime - meanLead)
	r.logf("stores' refreshes spread %s apart; the run starts 5s before the first is due", (step + LifetimeStep).Round(100*time.Millisecond))
	if !sleepUntil(ctx, first.Add(-5*time.Second)) {
		return ctx.Err()
	}
	return nil
}

// progressLoop prints a line a minute.
func (r *runner) progressLoop(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		calls := append([]Call(nil), r.calls...)
		down := append([]interval(nil), r.down...)
		r.mu.Unlock()
		failed, unavoidable := 0, 0
		for _, c := range calls {
			switch cl := classify(c, down); {
			case cl == classFailed:
				failed++
			case cl.unavoidable():
				unavoidable++
			}
		}
		rot, _ := r.rotations()
		r.logf("progress: %d calls made, %d failed, %d unavoidable; %d token rotations", len(calls), failed, unavoidable, rot)
	}
}

// sleepUntil waits until t or ctx's end; it reports whether t was reached.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}
