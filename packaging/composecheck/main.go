// Command composecheck loads a compose file with compose-go, the loader
// Docker Compose itself uses: the Compose specification's JSON schema,
// interpolation, and the model's own consistency checks (services named by
// network_mode and depends_on exist, volumes are declared, ...). No Docker
// engine or compose plugin is needed. packaging/compose-check.sh runs it.
//
//	composecheck [-profile NAME]... FILE
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var profiles list
	flag.Var(&profiles, "profile", "profile to enable (repeatable)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: composecheck [-profile NAME]... FILE")
		os.Exit(2)
	}
	file, err := filepath.Abs(flag.Arg(0))
	if err != nil {
		fail(err)
	}
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithProfiles(profiles),
		// Interpolate from the defaults written in the file only, not from
		// this machine's environment or a .env file.
		cli.WithEnv([]string{}),
	)
	if err != nil {
		fail(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	for _, name := range p.ServiceNames() {
		s := p.Services[name]
		fmt.Printf("composecheck: service %s: image %s, network_mode %q, user %q, read_only %v\n",
			name, s.Image, s.NetworkMode, s.User, s.ReadOnly)
	}
	fmt.Printf("composecheck: %s: valid (project %q, %d services)\n", flag.Arg(0), p.Name, len(p.Services))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "composecheck: %v\n", err)
	os.Exit(1)
}
