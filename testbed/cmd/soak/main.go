// Command soak runs the whole system for a long while under continuous
// STOW, QIDO and WADO through the site Orthanc and a seeded timeline of
// faults, and ends with a report (see testbed/soak). Exit status 0 only if
// the run passed; 1 if it ran and failed; 2 if it could not run.
//
//	soak [--duration 10m] [--seed N] [--bin DIR] [--dir DIR] [--logs DIR]
//
// The environment's SOAK_DURATION, SOAK_SEED and SOAK_LOGS are the
// defaults of --duration, --seed and --logs (`make soak` passes them on);
// without a seed one is drawn at random, and printed so the same timeline
// can be run again. --bin names a directory with prebuilt "broker" and
// "agent" binaries; --dir keeps the stack's files (keys, storage) there.
// --logs names where the logs are kept: a directory soak-SEED-TIME in it
// receives every log and the report whatever the verdict; without it they
// go to a temporary directory that is kept only when the run fails. The
// last line printed names the directory when it was kept.
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/soak"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type options struct {
	duration time.Duration
	seed     uint64
	bin, dir string
	logs     string
}

func parseArgs(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	durDefault, seedDefault := getenv("SOAK_DURATION"), getenv("SOAK_SEED")
	if durDefault == "" {
		durDefault = "10m"
	}
	dur := fs.String("duration", durDefault, "length of the run (with load and faults), a Go duration")
	seed := fs.String("seed", seedDefault, "seed of the fault timeline (default: random, printed)")
	fs.StringVar(&o.bin, "bin", "", "directory with prebuilt broker and agent binaries (default: go build)")
	fs.StringVar(&o.dir, "dir", "", "keep the stack's files (keys, storage, logs) in this directory (default: a temporary one, removed)")
	fs.StringVar(&o.logs, "logs", getenv("SOAK_LOGS"), "keep the logs and the report in a new directory in this one (default: a temporary one, kept only on failure)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("soak: unexpected argument %q", fs.Arg(0))
	}
	var err error
	if o.duration, err = time.ParseDuration(*dur); err != nil {
		return o, fmt.Errorf("soak: duration %q: want a Go duration such as 10m or 3m", *dur)
	}
	if o.duration < soak.MinDuration {
		return o, fmt.Errorf("soak: duration %s is too short: at least %s, so that every fault kind fits", o.duration, soak.MinDuration)
	}
	if *seed == "" {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return o, err
		}
		o.seed = uint64(binary.BigEndian.Uint32(b[:]))
	} else if o.seed, err = strconv.ParseUint(*seed, 10, 64); err != nil {
		return o, fmt.Errorf("soak: seed %q: want a non-negative integer", *seed)
	}
	if o.bin != "" && !stack.BinariesIn(o.bin).Exist() {
		return o, fmt.Errorf("soak: --bin %s: no broker and agent binaries there", o.bin)
	}
	return o, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args, getenv, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, err)
		}
		return 2
	}
	fmt.Fprintf(stderr, "soak: seed=%d duration=%s (run it again with SOAK_SEED=%d SOAK_DURATION=%s make soak)\n", o.seed, o.duration, o.seed, o.duration)
	cfg := soak.Config{Duration: o.duration, Seed: o.seed, Dir: o.dir, LogDir: o.logs, Log: stderr}
	if o.bin != "" {
		cfg.Bin = stack.BinariesIn(o.bin)
	}
	res, err := soak.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	fmt.Fprint(stdout, res.Text())
	problems := res.Problems()
	if len(problems) > 0 {
		return 1
	}
	return 0
}
