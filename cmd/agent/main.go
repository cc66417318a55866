// Command agent is the on-prem half of orthanc-gcp-broker: it pulls
// short-lived Google tokens from the broker and keeps Orthanc's DICOMweb
// servers configured with them. See docs/agent.md.
//
//	agent run     --config FILE   run the daemon
//	agent once    --config FILE   one sync; non-zero exit on failure
//	agent keygen  --out FILE [--tpm]   make the agent key (--tpm: inside the TPM), print the public key line
//	agent enrol   --config FILE [--tpm] make Broker.KeyFile if missing, print the broker entries
//	agent rotate-key --config FILE      make Broker.KeyFile.next, print the entry with both keys
//	agent service install --config FILE | uninstall   (Windows)
//	agent status  [--config FILE | --addr host:port]
//	agent version
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// defaultMemoryLimit is the GC's soft target for the daemon's heap. The
// agent's live heap is a few MiB even with 50 stores; without a limit the
// collector lets garbage grow to twice that between cycles. GOMEMLIMIT in
// the environment overrides it.
const defaultMemoryLimit = 10 << 20

func main() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	if isWindowsService() {
		// Started by the Windows service control manager: no console,
		// no signals; see service_windows.go.
		os.Exit(serviceMain(os.Args[1:]))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run wires the process (signals, environment) to the CLI.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	c := &cli{stdout: stdout, stderr: stderr, env: os.LookupEnv, reload: reload}
	return c.main(ctx, args)
}
