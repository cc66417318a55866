// Command broker serves the broker API locally and on Cloud Run: the same
// handler (broker.Broker) that function.go serves on Cloud Functions as the
// HTTP function "Broker", at the root path, on $PORT.
//
// It serves through an http.Server of its own rather than funcframework's
// bare http.ListenAndServe, which has no timeouts: a client that opens
// connections and never finishes its headers would hold each one (and its
// goroutine) forever. The server bounds header and body reads, idle
// keep-alive connections and header size, and shuts down gracefully on
// SIGTERM (Cloud Run's stop signal) or SIGINT: it stops accepting, lets
// requests in flight finish for up to shutdownGrace, then closes the broker.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/cloudlog"
)

// serverLimits are the http.Server's bounds.
type serverLimits struct {
	readHeader, read, write, idle time.Duration
	maxHeaderBytes                int
	shutdownGrace                 time.Duration
}

// limits are the production bounds. Request bodies are at most 64 KiB and
// assertions a few hundred bytes, so a client that takes seconds over its
// headers is not a real agent. write covers a mint (its token endpoint
// call is bounded at 30 s) and the answer. Cloud Run allows 10 s between
// SIGTERM and SIGKILL. Tests shorten them (see TestMain).
var limits = serverLimits{
	readHeader:     10 * time.Second,
	read:           30 * time.Second,
	write:          90 * time.Second,
	idle:           120 * time.Second,
	maxHeaderBytes: 32 << 10,
	shutdownGrace:  8 * time.Second,
}

func main() { os.Exit(run()) }

func run() int {
	log := cloudlog.New(os.Stdout, slog.LevelInfo)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	b, err := start(ctx, log)
	if err != nil {
		log.Log(ctx, slog.LevelError+4, "broker cannot start", "error", err.Error())
		fmt.Fprintln(os.Stderr, "broker:", err)
		return 1
	}
	defer b.Close()

	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	// BROKER_LISTEN_HOST (e.g. 127.0.0.1) keeps a laptop broker off the
	// network; Cloud Run needs the default, all interfaces.
	l, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("BROKER_LISTEN_HOST"), port))
	if err != nil {
		log.Log(ctx, slog.LevelError+4, "broker cannot listen", "error", err.Error())
		fmt.Fprintln(os.Stderr, "broker:", err)
		return 1
	}
	srv := newServer(b, log, limits)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	select {
	case err := <-served: // Serve only returns early on a listener failure
		log.Error("broker stopped serving", "error", err.Error())
		return 1
	case <-ctx.Done():
	}
	stop() // a second signal now kills at once
	log.Info("broker shutting down", "grace", limits.shutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), limits.shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("requests still in flight at the end of the grace period were cut", "error", err.Error())
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("broker stopped serving", "error", err.Error())
	}
	log.Info("broker stopped")
	return 0
}

// start builds the broker from the environment; an invalid policy is an
// error naming the account, agent and field, and stops start-up.
func start(ctx context.Context, log *slog.Logger) (*broker.Broker, error) {
	cfg, err := broker.ConfigFromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	cfg.Log = log
	return broker.New(ctx, cfg)
}

// newServer serves h at the root path with the given bounds. The server's
// own complaints (a panic in a handler, a malformed request) go to log as
// Cloud Logging lines.
func newServer(h http.Handler, log *slog.Logger, lim serverLimits) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.readHeader,
		ReadTimeout:       lim.read,
		WriteTimeout:      lim.write,
		IdleTimeout:       lim.idle,
		MaxHeaderBytes:    lim.maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
