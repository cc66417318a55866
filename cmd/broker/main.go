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
//
//	broker                      serve (configured by BROKER_* variables)
//	broker check-policy SOURCE  validate a policy as the broker would, and exit
//
// check-policy reads SOURCE (any BROKER_CONFIG form: sm://…, a file, a
// directory of fragments, gs://BUCKET/PREFIX/), validates it exactly as the
// broker does at start, prints every problem (for fragments, of every bad
// fragment) and exits 0 when the policy is good, 1 when it is not, 2 on a
// usage error. An operator's pipeline runs it before uploading fragments.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/cloudlog"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
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

func main() {
	if len(os.Args) > 1 {
		os.Exit(command(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(run())
}

// Exit statuses of check-policy.
const (
	exitOK       = 0
	exitProblems = 1
	exitUsage    = 2
)

const usage = `usage: broker                      serve (configured by BROKER_* variables)
       broker check-policy SOURCE  validate a policy (sm://…, a file, a directory, gs://BUCKET/PREFIX/)
`

// command runs a subcommand.
func command(args []string, stdout, stderr io.Writer) int {
	switch {
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case args[0] != "check-policy":
		fmt.Fprintf(stderr, "broker: unknown command %q\n%s", logtext.Truncate(args[0], 64), usage)
		return exitUsage
	case len(args) != 2 || args[1] == "":
		fmt.Fprint(stderr, "broker check-policy: want exactly one SOURCE\n"+usage)
		return exitUsage
	}
	return checkPolicy(args[1], stdout, stderr)
}

// checkPolicy validates the policy at source with the same clients and
// code as the broker (the BROKER_*_ENDPOINT variables apply) and prints
// every problem, one a line.
func checkPolicy(source string, stdout, stderr io.Writer) int {
	cfg, _ := broker.ConfigFromEnv(func(k string) string {
		if k == "BROKER_CONFIG" {
			return source
		}
		return os.Getenv(k)
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := broker.CheckPolicy(ctx, cfg, source)
	if err != nil {
		lines := strings.Split(err.Error(), "\n")
		for _, l := range lines {
			fmt.Fprintln(stdout, l)
		}
		fmt.Fprintf(stderr, "broker check-policy: %s: %d problem(s)\n", source, len(lines))
		return exitProblems
	}
	fmt.Fprintf(stdout, "broker check-policy: %s: ok: %d accounts, %d agents\n", source, p.NumAccounts(), p.NumAgents())
	return exitOK
}

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
