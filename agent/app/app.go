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
	"sync/atomic"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/brokerclient"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/config"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/health"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/keys"
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
	// broker is the loop's broker client of the configuration in force;
	// it holds the agent's key, which a rotation can change.
	broker atomic.Pointer[rotatingBroker]
	// rotated is the key a rotation made the agent's, if any.
	rotated atomic.Pointer[keys.Key]
}

// New builds the agent from cfg. now may be nil (time.Now).
func New(cfg *config.Config, log *slog.Logger, now func() time.Time) (*Agent, error) {
	if now == nil {
		now = time.Now
	}
	a := &Agent{cfg: cfg, log: log, now: now, metrics: health.NewMetrics()}
	u, err := a.update(cfg)
	if err != nil {
		return nil, err
	}
	logWarnings(log, cfg)
	// The loop records into the metrics; the health server shows both.
	a.rec = reconcile.New(reconcile.Options{
		Broker: u.Broker, Orthanc: u.Orthanc, Settings: u.Settings, Recorder: a.metrics, Log: log, Now: now,
	})
	return a, nil
}

// update builds the parts a configuration makes, and makes its broker
// client (with its key) the agent's.
func (a *Agent) update(cfg *config.Config) (reconcile.Update, error) {
	u, rb, err := build(cfg, a.now, a.log, a.keyRotated)
	if err != nil {
		return u, err
	}
	a.broker.Store(rb)
	a.metrics.SetKeyKind(rb.Key().Kind)
	return u, nil
}

// keyRotated records a rotation: the new key's kind for status and
// metrics, and the key for RotatedKey.
func (a *Agent) keyRotated(_, cur *keys.Key) {
	a.rotated.Store(cur)
	a.metrics.SetKeyKind(cur.Kind)
}

// KeyKind is the kind of the key the agent signs with now (keys.KindFile
// or keys.KindTPM).
func (a *Agent) KeyKind() string { return a.broker.Load().Key().Kind }

// RotatedKey is the key a rotation (see rotatingBroker) made the agent's
// since it started, or nil.
func (a *Agent) RotatedKey() *keys.Key { return a.rotated.Load() }

func build(cfg *config.Config, now func() time.Time, log *slog.Logger, onRotate func(old, cur *keys.Key)) (reconcile.Update, *rotatingBroker, error) {
	// The one gate for where a token may go: the Orthanc client enforces
	// it on every push and the loop asks the client's own. A configuration
	// without a usable list stops the start (or the reload) here.
	hosts, err := urlrule.NewAllowList(cfg.AllowedDicomWebHosts)
	if err != nil {
		return reconcile.Update{}, nil, fmt.Errorf("config: AllowedDicomWebHosts: %w", err)
	}
	oc, err := orthanc.New(orthanc.Options{
		URL: cfg.OrthancURL, DicomWebRoot: cfg.DicomWebRoot,
		Username: cfg.OrthancUsername, Password: cfg.OrthancPassword,
	}, hosts)
	if err != nil {
		return reconcile.Update{}, nil, err
	}
	key := &keys.Key{Signer: cfg.Key, Kind: cfg.KeyKind, Public: cfg.KeyPublic}
	if key.Kind == "" || key.Public == "" {
		key = keys.FromSigner(cfg.Key) // a configuration not from config.Load
	}
	rb, err := newRotatingBroker(brokerclient.Options{
		URL: cfg.BrokerURL, AgentID: cfg.AgentID,
		CAFile: cfg.CAFile, Timeout: cfg.BrokerTimeout, Now: now,
	}, key, cfg.KeyFile, cfg.TpmDevice, cfg.AgentID, cfg.Accounts, log, onRotate)
	if err != nil {
		return reconcile.Update{}, nil, err
	}
	return reconcile.Update{Broker: rb, Orthanc: oc, Settings: reconcile.Settings{
		AgentID: cfg.AgentID, Accounts: cfg.Accounts, ServerOptions: cfg.ServerOptions,
		RefreshMargin: cfg.RefreshMargin, CheckInterval: cfg.CheckInterval, StoresInterval: cfg.StoresInterval,
		ResubmitFailedJobs: cfg.ResubmitFailedJobs, ResubmitStatePath: StatePath(cfg),
	}}, rb, nil
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

// Handler serves /healthz from the loop's snapshot (with the kind of the
// agent's key) and /metrics from the metrics the loop records into.
func (a *Agent) Handler() http.Handler { return health.Handler(a.status, a.metrics, a.now) }

func (a *Agent) status() reconcile.Status {
	s := a.rec.Status()
	s.KeyKind = a.KeyKind()
	return s
}

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
				u, err := a.update(cfg)
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
		"key_kind", a.KeyKind(), "resubmit_failed_jobs", a.cfg.ResubmitFailedJobs, "state_file", StatePath(a.cfg))
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
