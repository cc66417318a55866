package main

import (
	"fmt"
	"os"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/migrate"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
)

// migrateCmd turns an old GCP plugin configuration into this project's
// (agent/migrate), or prints one inline credential to a pipe.
func (c *cli) migrateCmd(args []string) int {
	fs := c.flags("migrate")
	orthancConfig := fs.String("orthanc-config", "", "the Orthanc configuration file (or directory) holding the GoogleCloudPlatform section")
	out := fs.String("out", "", "directory to create with accounts.auto.tfvars.json, load-secrets.sh and agent.json (must not exist or be empty)")
	brokerURL := fs.String("broker-url", "", "the broker's URL for agent.json (else a placeholder)")
	agentID := fs.String("agent-id", "", "this site's agent id for agent.json (else a placeholder)")
	printCred := fs.String("print-credential", "", "print account NAME's inline authorized_user JSON to a pipe (for load-secrets.sh)")
	if !c.parse(fs, args) {
		return exitUsage
	}
	if *orthancConfig == "" {
		fmt.Fprintln(c.stderr, "agent migrate: --orthanc-config is required")
		return exitUsage
	}
	var err error
	switch {
	case *printCred != "" && *out != "":
		fmt.Fprintln(c.stderr, "agent migrate: --print-credential and --out do not go together")
		return exitUsage
	case *printCred != "":
		// Only a real pipe passes: a writer that is not a file (nil
		// here) cannot be checked, so it is refused too.
		f, _ := c.stdout.(*os.File)
		err = migrate.PrintCredential(*orthancConfig, *printCred, f)
	case *out == "":
		fmt.Fprintln(c.stderr, "agent migrate: --out is required")
		return exitUsage
	default:
		cmd := "orthanc-gcp-agent"
		if exe, e := os.Executable(); e == nil {
			cmd = exe
		}
		err = migrate.Run(migrate.Options{OrthancConfig: *orthancConfig, OutDir: *out,
			BrokerURL: *brokerURL, AgentID: *agentID, AgentCommand: cmd}, c.stdout)
	}
	if err != nil {
		// Errors name paths and values from the command line and the
		// Orthanc configuration: escaped for the terminal, as the plan is.
		fmt.Fprintln(c.stderr, "agent migrate:", logtext.Printable(err.Error()))
		return exitFailure
	}
	return exitOK
}
