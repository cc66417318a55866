package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/app"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/config"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/health"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/keys"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/tpmkey"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

// Exit codes.
const (
	exitOK          = 0
	exitFailure     = 1 // sync failed, agent unhealthy, bad configuration
	exitUsage       = 2
	exitUnreachable = 3 // "status": no agent answers at the address
)

const usage = `usage: agent <command> [flags]

commands:
  run     --config FILE              run the daemon (SIGTERM stops, SIGHUP reloads the config)
  once    --config FILE              sync once; exit status 1 on any failure
  keygen  --out FILE [--tpm [--tpm-device DEV]]
                                     write a new private key (mode 0600, never overwrites)
                                     and print the public key line to register at the broker;
                                     --tpm: an ECDSA P-256 key inside this host's TPM 2.0
  enrol   --config FILE [--tpm [--tpm-device DEV]]
                                     make Broker.KeyFile if it is missing (as keygen) and print
                                     this agent's entry for terraform.tfvars and the broker policy
  rotate-key --config FILE [--tpm-device DEV]
                                     make the next key (same kind) at Broker.KeyFile.next and print
                                     the entry with both keys; the agent adopts it once the broker
                                     accepts it ("agent key rotated")
  status  [--config FILE | --addr HOST:PORT]
                                     print a running agent's state; exit 0 healthy, 1 unhealthy,
                                     3 not answering
  service install --config FILE      Windows: register the "orthanc-gcp-agent" service
                                     (automatic start, logs to the Application event log)
  service uninstall                  Windows: stop and remove it
  migrate --orthanc-config FILE --out DIR [--broker-url URL] [--agent-id ID]
                                     turn an old GCP plugin configuration into terraform
                                     accounts, load-secrets.sh, agent.json and a plan;
                                     never writes or prints a secret value
  migrate --orthanc-config FILE --print-credential NAME
                                     print NAME's inline authorized_user JSON, only to a pipe
  version                            print the version

--config defaults to $AGENT_CONFIG; every field can also be set by an
AGENT_* environment variable (see docs/agent.md). Logs are JSON on stderr;
AGENT_LOG_LEVEL=debug|info|warn|error.
`

// cli holds the process's outside world so tests can replace it.
type cli struct {
	stdout, stderr io.Writer
	env            config.LookupEnv
	reload         <-chan struct{}
	// now is the clock (nil: time.Now).
	now func() time.Time
	// onListen, if set, receives the health address once bound (tests).
	onListen func(addr string)
	// onStarted, if set, is called once "run" has loaded its configuration
	// and bound its address, just before the loop starts (the Windows
	// service reports Running then).
	onStarted func()
}

func (c *cli) main(ctx context.Context, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(c.stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return c.runCmd(ctx, rest, false)
	case "once":
		return c.runCmd(ctx, rest, true)
	case "keygen":
		return c.keygen(rest)
	case "enrol", "enroll":
		return c.enrol(rest)
	case "rotate-key":
		return c.rotateKey(rest)
	case "service":
		return c.service(rest)
	case "migrate":
		return c.migrateCmd(rest)
	case "status":
		return c.status(ctx, rest)
	case "version", "--version", "-version":
		fmt.Fprintln(c.stdout, versionString())
		return exitOK
	case "help", "-h", "--help", "-help":
		fmt.Fprint(c.stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(c.stderr, "agent: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
}

func (c *cli) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("agent "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	return fs
}

// parse parses flags and refuses stray arguments.
func (c *cli) parse(fs *flag.FlagSet, args []string) bool {
	if err := fs.Parse(args); err != nil {
		return false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return false
	}
	return true
}

func (c *cli) configPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	v, _ := c.env("AGENT_CONFIG")
	return v
}

func (c *cli) logger() *slog.Logger {
	level := slog.LevelInfo
	if v, ok := c.env("AGENT_LOG_LEVEL"); ok {
		_ = level.UnmarshalText([]byte(v)) // unknown: stay at info
	}
	return slog.New(slog.NewJSONHandler(c.stderr, &slog.HandlerOptions{Level: level}))
}

func (c *cli) clock() func() time.Time {
	if c.now != nil {
		return c.now
	}
	return time.Now
}

func (c *cli) runCmd(ctx context.Context, args []string, once bool) int {
	name := "run"
	if once {
		name = "once"
	}
	fs := c.flags(name)
	cfgFlag := fs.String("config", "", "agent configuration file (JSON); default $AGENT_CONFIG")
	if !c.parse(fs, args) {
		return exitUsage
	}
	path := c.configPath(*cfgFlag)
	log := c.logger()
	load := func() (*config.Config, error) { return config.Load(path, c.env) }
	cfg, err := load()
	if err != nil {
		fmt.Fprintf(c.stderr, "agent: %v\n", err)
		return exitFailure
	}
	a, err := app.New(cfg, log, c.clock())
	if err != nil {
		fmt.Fprintf(c.stderr, "agent: %v\n", err)
		return exitFailure
	}
	if once {
		err := a.Once(ctx)
		if k := a.RotatedKey(); k != nil {
			_ = writeRotated(c.stdout, cfg, k)
		}
		if err != nil {
			log.Error("sync failed", "error", err.Error())
			fmt.Fprintf(c.stderr, "agent once: %v\n", err)
			return exitFailure
		}
		log.Info("sync complete")
		return exitOK
	}
	addr, err := a.Listen()
	if err != nil {
		fmt.Fprintf(c.stderr, "agent: Listen %s: %v\n", cfg.Listen, err)
		return exitFailure
	}
	if addr != nil && c.onListen != nil {
		c.onListen(addr.String())
	}
	if c.onStarted != nil {
		c.onStarted()
	}
	if err := a.Run(ctx, c.reload, load); err != nil {
		fmt.Fprintf(c.stderr, "agent: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func (c *cli) keygen(args []string) int {
	fs := c.flags("keygen")
	out := fs.String("out", "", "private key file to create (mode 0600)")
	tpm := fs.Bool("tpm", false, "create an ECDSA P-256 key inside this host's TPM 2.0; the file holds only the TPM-wrapped key")
	dev := fs.String("tpm-device", "", "with --tpm: the TPM device or TPM socket (default $AGENT_TPM_DEVICE, else "+defaultTPMDevice()+")")
	if !c.parse(fs, args) {
		return exitUsage
	}
	if *out == "" {
		fmt.Fprintln(c.stderr, "agent keygen: --out FILE is required")
		return exitUsage
	}
	if *dev != "" && !*tpm {
		fmt.Fprintln(c.stderr, "agent keygen: --tpm-device needs --tpm")
		return exitUsage
	}
	kind, device := keys.KindFile, ""
	if *tpm {
		kind, device = keys.KindTPM, c.tpmDevice(*dev, "")
	}
	k, err := keys.Create(*out, kind, device)
	if err != nil {
		fmt.Fprintf(c.stderr, "agent keygen: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(c.stdout, k.Public)
	return exitOK
}

// tpmDevice is the TPM a command uses: its --tpm-device flag, else the
// configuration's Broker.TpmDevice (fromConfig, already with
// AGENT_TPM_DEVICE applied), else $AGENT_TPM_DEVICE; "" means the
// default (tpmkey.DefaultDevice).
func (c *cli) tpmDevice(flagValue, fromConfig string) string {
	if flagValue != "" {
		return flagValue
	}
	if fromConfig != "" {
		return fromConfig
	}
	v, _ := c.env("AGENT_TPM_DEVICE")
	return v
}

// withTPMDevice is env with AGENT_TPM_DEVICE set to device when a
// --tpm-device flag gave one, so config.Load uses it too.
func withTPMDevice(env config.LookupEnv, device string) config.LookupEnv {
	if device == "" {
		return env
	}
	return func(k string) (string, bool) {
		if k == "AGENT_TPM_DEVICE" {
			return device, true
		}
		return env(k)
	}
}

func defaultTPMDevice() string { return tpmkey.DeviceName("") }

func (c *cli) status(ctx context.Context, args []string) int {
	fs := c.flags("status")
	cfgFlag := fs.String("config", "", "read the Listen address from this configuration")
	addrFlag := fs.String("addr", "", "the agent's health address, host:port")
	if !c.parse(fs, args) {
		return exitUsage
	}
	if *cfgFlag != "" && *addrFlag != "" {
		fmt.Fprintln(c.stderr, "agent status: give --config or --addr, not both")
		return exitUsage
	}
	addr := *addrFlag
	if addr == "" {
		var err error
		if addr, err = config.ListenAddress(c.configPath(*cfgFlag), c.env); err != nil {
			fmt.Fprintf(c.stderr, "agent status: %s\n", logtext.Printable(err.Error()))
			return exitFailure
		}
	}
	s, err := health.Fetch(ctx, addr)
	if err != nil {
		// The address (from a configuration) is in the error, unquoted.
		fmt.Fprintf(c.stderr, "agent status: %s\n", logtext.Printable(err.Error()))
		return exitUnreachable
	}
	if err := health.WriteTable(c.stdout, s, c.clock()()); err != nil {
		return exitFailure
	}
	if !s.Healthy {
		return exitFailure
	}
	return exitOK
}

func versionString() string {
	v, rev := version, ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = s.Value[:12]
			}
		}
	}
	if v == "" {
		v = "dev"
	}
	parts := []string{"orthanc-gcp-agent", v}
	if rev != "" {
		parts = append(parts, "("+rev+")")
	}
	parts = append(parts, runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH)
	return strings.Join(parts, " ")
}
