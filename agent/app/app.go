// Package app wires a validated configuration into the agent's parts (the
// broker client, the Orthanc client, the reconcile loop and the health
// server) for the "run" and "once" commands.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/brokerclient"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/config"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/health"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/reconcile"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/resubmit"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
)

// Agent is one configured agent.
type Agent struct {
	cfg     *config.Config
	log     *slog.Logger
	now     func() time.Time
	metrics *health.Metrics
	rec     *reconcile.Reconciler
	ln      net.Listener
}

// New builds the agent from cfg. now may be nil (time.Now).
func New(cfg *config.Config, log *slog.Logger, now func() time.Time) (*Agent, error) {
	if now == nil {
		now = time.Now
	}
	u, err := update(cfg, now)
	if err != nil {
		return nil, err
	}
	logWarnings(log, cfg)
	// The loop records into the metrics; the health server shows both.
	m := health.NewMetrics()
	rec := reconcile.New(reconcile.Options{
		Broker: u.Broker, Orthanc: u.Orthanc, Settings: u.Settings, Recorder: m, Log: log, Now: now,
	})
	return &Agent{cfg: cfg, log: log, now: now, metrics: m, rec: rec}, nil
}

func update(cfg *config.Config, now func() time.Time) (reconcile.Update, error) {
	// The one gate for where a token may go: the Orthanc client enforces
	// it on every push and the loop asks the client's own. A configuration
	// without a usable list stops the start (or the reload) here.
	hosts, err := urlrule.NewAllowList(cfg.AllowedDicomWebHosts)
	if err != nil {
		return reconcile.Update{}, fmt.Errorf("config: AllowedDicomWebHosts: %w", err)
	}
	oc, err := orthanc.New(orthanc.Options{
		URL: cfg.OrthancURL, DicomWebRoot: cfg.DicomWebRoot,
		Username: cfg.OrthancUsername, Password: cfg.OrthancPassword,
	}, hosts)
	if err != nil {
		return reconcile.Update{}, err
	}
	bc, err := brokerclient.New(brokerclient.Options{
		URL: cfg.BrokerURL, AgentID: cfg.AgentID, Key: cfg.Key,
		CAFile: cfg.CAFile, Timeout: cfg.BrokerTimeout, Now: now,
	})
	if err != nil {
		return reconcile.Update{}, err
	}
	return reconcile.Update{Broker: bc, Orthanc: oc, Settings: reconcile.Settings{
		AgentID: cfg.AgentID, Accounts: cfg.Accounts, ServerOptions: cfg.ServerOptions,
		RefreshMargin: cfg.RefreshMargin, CheckInterval: cfg.CheckInterval, StoresInterval: cfg.StoresInterval,
		ResubmitFailedJobs: cfg.ResubmitFailedJobs, ResubmitStatePath: StatePath(cfg),
	}}, nil
}

// StatePath is the file in which the agent records the failed uploads it
// sent again: StateDirectory/resubmitted-jobs.json ("" without a
// StateDirectory, which config.Resolve always sets).
func StatePath(cfg *config.Config) string {
	if cfg.StateDirectory == "" {
		return ""
	}
	return filepath.Join(cfg.StateDirectory, resubmit.StateFileName)
}

// logWarnings logs each of the configuration's warnings once.
func logWarnings(log *slog.Logger, cfg *config.Config) {
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
}

// Handler serves /healthz from the loop's snapshot and /metrics from the
// metrics the loop records into.
func (a *Agent) Handler() http.Handler { return health.Handler(a.rec.Status, a.metrics, a.now) }

// Once does one sync; see reconcile.Reconciler.Once.
func (a *Agent) Once(ctx context.Context) error { return a.rec.Once(ctx) }

// Listen opens the health/metrics address (none if Listen is empty) and
// returns the bound address, so a port of 0 can be discovered.
func (a *Agent) Listen() (net.Addr, error) {
	if a.cfg.Listen == "" || a.ln != nil {
		if a.ln != nil {
			return a.ln.Addr(), nil
		}
		return nil, nil
	}
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return nil, err
	}
	a.ln = ln
	return ln.Addr(), nil
}

// Run serves health and metrics and runs the loop until ctx is done. Each
// value from reload makes it re-read the configuration with load; a bad
// new configuration is logged and the running one kept.
func (a *Agent) Run(ctx context.Context, reload <-chan struct{}, load func() (*config.Config, error)) error {
	if _, err := a.Listen(); err != nil {
		return err
	}
	var srv *http.Server
	serveErr := make(chan error, 1)
	if a.ln != nil {
		srv = &http.Server{
			Handler:           a.Handler(),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
		}
		go func() { serveErr <- srv.Serve(a.ln) }()
		a.log.Info("health and metrics listening", "addr", a.ln.Addr().String())
	}

	loopCtx, cancel := context.WithCancel(ctx)
	// Run waits for the reload goroutine so nothing logs after "agent
	// stopped" (a Windows service's event log is closed by then).
	reloadDone := make(chan struct{})
	go func() {
		defer close(reloadDone)
		for {
			select {
			case <-loopCtx.Done():
				return
			case <-reload:
				cfg, err := load()
				if err != nil {
					a.log.Error("configuration reload refused; keeping the running one", "error", err.Error())
					continue
				}
				if cfg.Listen != a.cfg.Listen {
					a.log.Warn("a new Listen address takes effect only after a restart", "listen", a.cfg.Listen)
				}
				u, err := update(cfg, a.now)
				if err != nil {
					a.log.Error("configuration reload refused; keeping the running one", "error", err.Error())
					continue
				}
				logWarnings(a.log, cfg)
				a.rec.Reload(u)
			}
		}
	}()

	a.log.Info("agent started", "agent_id", a.cfg.AgentID, "broker", a.cfg.BrokerURL, "orthanc", a.cfg.OrthancURL,
		"resubmit_failed_jobs", a.cfg.ResubmitFailedJobs, "state_file", StatePath(a.cfg))
	runErr := make(chan error, 1)
	go func() { runErr <- a.rec.Run(loopCtx) }()
	var err error
	select {
	case err = <-runErr:
	case err = <-serveErr:
		cancel()
		<-runErr
	}
	if srv != nil {
		shutCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		_ = srv.Shutdown(shutCtx)
	}
	cancel()
	<-reloadDone
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	a.log.Info("agent stopped")
	return err
}
