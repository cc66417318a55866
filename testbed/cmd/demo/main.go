// Command demo runs the whole system on this machine and reports what it
// did: the Google fakes, an Orthanc "cloud" playing the Healthcare DICOM
// store, an Orthanc "site", the broker (policy as fragments in the fake Cloud
// Storage under gs://demo-policy/policy/, keys made on the fly) and the agent
// (key from "agent keygen"). It sends a small synthetic study
// from the site to the cloud with Orthanc's DICOMweb client (STOW), finds it
// (QIDO), deletes it on the site and retrieves it (WADO-RS), then stops
// everything. Exit status 0 only if every step passed.
//
//	demo [--keep] [--bin DIR] [--instances N]
//
// --keep leaves the system running until Ctrl-C. --bin names a directory
// holding prebuilt "broker" and "agent" binaries (scripts/demo.sh builds
// them); without it they are built with the go tool.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/dicomgen"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, stop, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// config is the parsed command line.
type config struct {
	keep      bool
	bin       string
	instances int
}

func parseArgs(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&c.keep, "keep", false, "leave everything running until Ctrl-C")
	fs.StringVar(&c.bin, "bin", "", "directory with prebuilt broker and agent binaries (default: go build)")
	fs.IntVar(&c.instances, "instances", 3, "instances in the synthetic study")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("demo: unexpected argument %q", fs.Arg(0))
	}
	if c.instances < 1 || c.instances > 100 {
		return c, fmt.Errorf("demo: --instances must be 1-100, got %d", c.instances)
	}
	if c.bin != "" && !stack.BinariesIn(c.bin).Exist() {
		return c, fmt.Errorf("demo: --bin %s: no broker and agent binaries there", c.bin)
	}
	return c, nil
}

// step is one timed action of the report.
type step struct {
	name   string
	took   time.Duration
	err    error
	detail string
}

// report collects steps and prints them as they finish.
type report struct {
	out   io.Writer
	steps []step
	now   func() time.Time
}

// do runs f as a step named name unless an earlier step failed.
func (r *report) do(name string, f func() (string, error)) bool {
	if r.failed() {
		return false
	}
	t0 := r.now()
	detail, err := f()
	st := step{name: name, took: r.now().Sub(t0), err: err, detail: detail}
	r.steps = append(r.steps, st)
	fmt.Fprintln(r.out, formatStep(len(r.steps), st))
	return err == nil
}

func (r *report) failed() bool {
	for _, s := range r.steps {
		if s.err != nil {
			return true
		}
	}
	return false
}

func formatStep(n int, s step) string {
	status := "ok"
	if s.err != nil {
		status = "FAILED: " + s.err.Error()
	}
	line := fmt.Sprintf("  %d. %-44s %7d ms  %s", n, s.name, s.took.Milliseconds(), status)
	if s.detail != "" && s.err == nil {
		line += " (" + s.detail + ")"
	}
	return line
}

func run(ctx context.Context, stopSignals func(), args []string, stdout, stderr io.Writer) int {
	cfg, err := parseArgs(args, stderr)
	if err != nil {
		if err != flag.ErrHelp {
			fmt.Fprintln(stderr, err)
		}
		return 2
	}
	r := &report{out: stdout, now: time.Now}
	fmt.Fprintln(stdout, "orthanc-gcp-broker demo: everything runs on 127.0.0.1 and stops at the end")
	fmt.Fprintln(stdout, "\nSteps:")

	var s *stack.Stack
	defer func() {
		if s != nil {
			t0 := time.Now()
			if err := s.Close(); err != nil {
				fmt.Fprintln(stderr, "demo: stopping:", err)
			}
			fmt.Fprintf(stdout, "\nStopped everything in %d ms.\n", time.Since(t0).Milliseconds())
		}
	}()

	opts := stack.Options{Stores: 1, PolicyInBucket: true}
	if cfg.bin != "" {
		opts.Bin = stack.BinariesIn(cfg.bin)
	}
	r.do("start fakes, 2 Orthancs, broker, agent", func() (string, error) {
		var err error
		s, err = stack.New(ctx, opts)
		if err != nil {
			return "", err
		}
		return "agent healthy, entry pushed", nil
	})
	var store stack.Store
	if s != nil {
		store = s.Stores()[0]
	}

	var info dicomgen.StudyInfo
	var siteStudy string
	r.do(fmt.Sprintf("generate a study of %d instances", cfg.instances), func() (string, error) {
		var err error
		info, err = dicomgen.Study(cfg.instances)
		return "StudyInstanceUID " + info.StudyUID, err
	})
	r.do("upload it to the site Orthanc", func() (string, error) {
		var err error
		var ids []string
		siteStudy, ids, err = stack.Upload(ctx, s.Site, info.Files)
		return fmt.Sprintf("%d instances, study %s", len(ids), siteStudy), err
	})
	r.do("STOW site -> cloud ("+store.Name+")", func() (string, error) {
		if err := stack.StowWait(ctx, s.Site, store.Name, []string{siteStudy}); err != nil {
			return "", err
		}
		_, n, err := stack.FindStudy(ctx, s.CloudOrthanc, info.StudyUID)
		if err == nil && n != cfg.instances {
			err = fmt.Errorf("the cloud store holds %d instances, want %d", n, cfg.instances)
		}
		return fmt.Sprintf("cloud store now holds the %d instances", n), err
	})
	r.do("QIDO the study at the cloud", func() (string, error) {
		found, err := stack.QIDOStudy(ctx, s.Site, store.Name, info.StudyUID)
		if err == nil && !found {
			err = fmt.Errorf("study %s not found", info.StudyUID)
		}
		return "found", err
	})
	r.do("delete the study on the site", func() (string, error) {
		if err := stack.DeleteStudy(ctx, s.Site, siteStudy); err != nil {
			return "", err
		}
		id, _, err := stack.FindStudy(ctx, s.Site, info.StudyUID)
		if err == nil && id != "" {
			err = fmt.Errorf("still there")
		}
		return "", err
	})
	r.do("retrieve it from the cloud (WADO-RS)", func() (string, error) {
		if err := stack.RetrieveWait(ctx, s.Site, store.Name, info.StudyUID); err != nil {
			return "", err
		}
		_, n, err := stack.FindStudy(ctx, s.Site, info.StudyUID)
		if err == nil && n != cfg.instances {
			err = fmt.Errorf("the site holds %d instances, want %d", n, cfg.instances)
		}
		return fmt.Sprintf("site holds the %d instances again", n), err
	})

	if s != nil {
		printSetup(ctx, stdout, s, store)
	}
	if r.failed() {
		if ctx.Err() != nil {
			fmt.Fprintln(stdout, "\nInterrupted.")
		}
		fmt.Fprintln(stdout, "\nResult: FAILED")
		if s != nil {
			fmt.Fprintf(stdout, "Logs: %s (removed on exit; rerun with --keep to inspect)\n", s.Dir)
		}
		return 1
	}
	fmt.Fprintln(stdout, "\nResult: every step passed")
	if cfg.keep {
		printKeep(stdout, s)
		<-ctx.Done()
		stopSignals() // a second Ctrl-C now kills at once (children die with us)
		fmt.Fprintln(stdout, "\nCtrl-C: stopping.")
	}
	return 0
}

// printSetup prints what ran where, the token's expiry and the server
// entry as Orthanc shows it (header names only: Orthanc hides the values).
func printSetup(ctx context.Context, w io.Writer, s *stack.Stack, store stack.Store) {
	fmt.Fprintln(w, "\nWhat ran where:")
	st := s.Cloud.State()
	rows := [][2]string{
		{"Google fakes (in the demo process)", "token endpoint " + st.TokenURL + ", Secret Manager " + st.SecretManagerAddr + ", metadata " + st.MetadataHost},
		{"Healthcare DICOMweb (fake)", s.Front.URL() + "/v1/"},
		{"DICOM store " + store.Name, store.Path + " (accepts tokens of " + store.ServiceAccount + ")"},
		{"Orthanc \"cloud\" (the store's data)", fmt.Sprintf("%s, DICOM port %d", s.CloudOrthanc.URL, s.CloudOrthanc.DicomPort)},
		{"Orthanc \"site\"", fmt.Sprintf("%s, DICOM port %d", s.Site.URL, s.Site.DicomPort)},
		{"broker", s.BrokerURL + ", policy " + s.PolicyRef()},
		{"service-account key (made now)", store.Secret},
		{"agent", "status http://" + s.AgentListen + "/healthz, config " + s.AgentConfigPath},
		{"agent AllowedDicomWebHosts", strings.Join(s.AgentAllowedDicomWebHosts, ", ") + " (the fake front, listed explicitly)"},
	}
	for _, r := range rows {
		fmt.Fprintf(w, "  %-37s %s\n", r[0], r[1])
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if status, err := s.AgentStatus(sctx); err == nil {
		for _, ss := range status.Stores {
			if ss.TokenExpiresAt != nil {
				fmt.Fprintf(w, "  token for %-27s expires %s (in %s; lifetime %s), state %s\n", ss.Store,
					ss.TokenExpiresAt.UTC().Format(time.RFC3339), time.Until(*ss.TokenExpiresAt).Round(time.Second),
					s.Cloud.Tokens.Lifetime(), ss.State)
			}
		}
	}
	if _, servers, err := stack.Servers(sctx, s.Site); err == nil {
		if entry, ok := servers[store.Name]; ok {
			fmt.Fprintf(w, "\nOrthanc's DICOMweb server entry %q (GET /dicom-web/servers?expand; Orthanc shows header names only):\n", store.Name)
			fmt.Fprintln(w, indent(formatEntry(entry), "  "))
		}
	}
}

// formatEntry renders an entry with sorted keys, one per line.
func formatEntry(entry map[string]any) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(entry)) {
		v, _ := json.Marshal(entry[k])
		fmt.Fprintf(&b, "%s: %s\n", k, v)
	}
	return strings.TrimRight(b.String(), "\n")
}

func indent(s, prefix string) string {
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

func printKeep(w io.Writer, s *stack.Stack) {
	user, _ := s.Site.User()
	fmt.Fprintf(w, `
Still running (--keep); Ctrl-C stops everything.
  site Orthanc:  %s  (user %q; its password is in %s, RegisteredUsers)
  cloud Orthanc: %s
  broker:        %s/healthz
  agent status:  %s status --config %s
  logs:          %s, %s, %s
`, s.Site.URL, user, s.Site.ConfigPath, s.CloudOrthanc.URL, s.BrokerURL, s.Bin.Agent, s.AgentConfigPath,
		s.BrokerLogPath, s.AgentLogPath, s.Site.LogPath)
}
