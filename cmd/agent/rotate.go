package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/config"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/keys"
)

// rotateKey makes the agent's next key, of the kind of its current key,
// at Broker.KeyFile + ".next" (never overwriting one: run again, it
// reuses it) and prints the agent's entry with both keys. The running
// agent (and "once") tries the next key on its store poll and adopts it as
// soon as the broker accepts it; see rotatingBroker in agent/app.
func (c *cli) rotateKey(args []string) int {
	fs := c.flags("rotate-key")
	cfgFlag := fs.String("config", "", "agent configuration file (JSON); default $AGENT_CONFIG")
	dev := fs.String("tpm-device", "", "for a TPM key: the TPM device or TPM socket (default Broker.TpmDevice, $AGENT_TPM_DEVICE, else "+defaultTPMDevice()+")")
	if !c.parse(fs, args) {
		return exitUsage
	}
	cfg, err := config.Load(c.configPath(*cfgFlag), withTPMDevice(c.env, *dev))
	if err != nil {
		fmt.Fprintf(c.stderr, "agent rotate-key: %v\n", err)
		return exitFailure
	}
	if err := checkEnrolAgentID(cfg.AgentID); err != nil {
		fmt.Fprintf(c.stderr, "agent rotate-key: config: Broker.AgentId: %v\n", err)
		return exitFailure
	}
	nextPath := keys.NextPath(cfg.KeyFile)
	next, created, err := ensureNextKey(nextPath, cfg.KeyKind, cfg.TpmDevice)
	if err != nil {
		fmt.Fprintf(c.stderr, "agent rotate-key: %v\n", err)
		return exitFailure
	}
	if next.Public == cfg.KeyPublic {
		fmt.Fprintf(c.stderr, "agent rotate-key: %s holds the current key; remove it and run rotate-key again\n", nextPath)
		return exitFailure
	}
	if created {
		fmt.Fprintf(c.stderr, "agent rotate-key: created the next agent key %s (%s)\n", nextPath, next.Kind)
	}
	if err := writeRotation(c.stdout, cfg, next, nextPath, created); err != nil {
		return exitFailure
	}
	return exitOK
}

// ensureNextKey creates the next key, or loads the one a previous run made.
func ensureNextKey(path, kind, device string) (k *keys.Key, created bool, err error) {
	if _, err := os.Lstat(path); err == nil {
		k, err := keys.Load(path, device)
		if err != nil {
			return nil, false, fmt.Errorf("%v (a rotation is under way but its next key cannot be used: remove it and run rotate-key again)", err)
		}
		return k, false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	k, err = keys.Create(path, kind, device)
	return k, err == nil, err
}

// writeRotation prints what the operator does for a rotation: register
// both keys, and later drop the old one.
func writeRotation(w io.Writer, cfg *config.Config, next *keys.Key, nextPath string, created bool) error {
	state := "already there, reused"
	if created {
		state = "created now"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Agent %s: key rotation. Current key %s (%s); next key %s (%s, %s).\n",
		strconv.Quote(cfg.AgentID), oneLine(cfg.KeyFile), cfg.KeyKind, oneLine(nextPath), next.Kind, state)
	fmt.Fprintf(&b, "# Current public key: %s\n", cfg.KeyPublic)
	fmt.Fprintf(&b, "# Next public key:    %s\n", next.Public)
	b.WriteString("# Register both keys at the broker, in one of two ways. The agent keeps signing with the current\n")
	b.WriteString("# key and tries the next one at each store poll (StoresInterval); once the broker accepts it, the\n")
	b.WriteString("# agent makes it the key (renames the .next file over the key file) and logs \"agent key rotated\"\n")
	b.WriteString("# with this agent's entry holding only the new key: then replace the entry with that one.\n")
	writeEntries(&b, cfg.AgentID, []string{cfg.KeyPublic, next.Public}, cfg.Accounts, "rotate-key")
	_, err := io.WriteString(w, b.String())
	return err
}

// writeRotated prints the entry with only the key a rotation adopted
// ("once", after the broker accepted the next key).
func writeRotated(w io.Writer, cfg *config.Config, k *keys.Key) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Agent %s: key rotated. %s now holds the new key (%s); the old key is gone.\n",
		strconv.Quote(cfg.AgentID), oneLine(cfg.KeyFile), k.Kind)
	fmt.Fprintf(&b, "# Public key: %s\n", k.Public)
	b.WriteString("# The broker accepts it: replace the agent's entry with this one, dropping the old key.\n")
	writeEntries(&b, cfg.AgentID, []string{k.Public}, cfg.Accounts, "rotate-key")
	_, err := io.WriteString(w, b.String())
	return err
}
