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
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// placeholderIDs are AgentId values that a template or an example left
// behind, compared lower case with everything but letters and digits dropped.
var placeholderIDs = map[string]bool{
	"agentid": true, "youragentid": true, "myagentid": true, "changeme": true, "replaceme": true,
	"placeholder": true, "todo": true, "fixme": true, "tbd": true, "xxx": true, "example": true,
	"none": true, "null": true,
}

// checkEnrolAgentID refuses an empty or placeholder Broker.AgentId, and
// one the broker's policy could not hold. The message is the field's.
func checkEnrolAgentID(id string) error {
	norm := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return -1
	}, id)
	switch {
	case strings.TrimSpace(id) == "":
		return errors.New("is empty: set it to this site's agent id, the name the broker's policy will know it by (e.g. \"clinic-a\")")
	case strings.ContainsAny(id, "<>{}$") || placeholderIDs[norm]:
		return fmt.Errorf("%q is a placeholder: set it to this site's agent id (e.g. \"clinic-a\")", clip(id))
	case !wire.ValidAgentID(id):
		return fmt.Errorf("%q cannot be an agent id: the broker accepts 1-128 letters, digits, '.', '_', '@' or '-', starting with a letter or digit", clip(id))
	}
	return nil
}

// oneLine keeps s on one comment line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// enrolFields reads, without validating anything else, the fields enrol
// needs before the full load: the agent id, the key file and the TPM
// device, from the file and their AGENT_* overrides.
func (c *cli) enrolFields(path string) (id, keyFile, tpmDevice string, err error) {
	var f config.File
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return "", "", "", fmt.Errorf("config: %w", err)
		}
		p, err := config.Parse(data)
		if err != nil {
			return "", "", "", fmt.Errorf("config %s: %w", path, err)
		}
		f = *p
	}
	id, keyFile, tpmDevice = f.Broker.AgentId, f.Broker.KeyFile, f.Broker.TpmDevice
	for _, ev := range config.EnvVars {
		v, ok := c.env(ev.Name)
		if !ok {
			continue
		}
		switch ev.Field {
		case "Broker.AgentId":
			id = v
		case "Broker.KeyFile":
			keyFile = v
		case "Broker.TpmDevice":
			tpmDevice = v
		}
	}
	return id, keyFile, tpmDevice, nil
}

// enrol makes the agent's key if it is missing, exactly as keygen does
// (with --tpm, inside the TPM), loads the whole configuration as "run"
// would, and prints this agent's entry for terraform.tfvars and for a
// hand-written broker policy. Run again, it reuses the key and prints the
// same entries.
func (c *cli) enrol(args []string) int {
	fs := c.flags("enrol")
	cfgFlag := fs.String("config", "", "agent configuration file (JSON); default $AGENT_CONFIG")
	tpm := fs.Bool("tpm", false, "if Broker.KeyFile is missing, create an ECDSA P-256 key inside this host's TPM 2.0")
	dev := fs.String("tpm-device", "", "the TPM device or TPM socket (default Broker.TpmDevice, $AGENT_TPM_DEVICE, else "+defaultTPMDevice()+")")
	if !c.parse(fs, args) {
		return exitUsage
	}
	path := c.configPath(*cfgFlag)
	id, keyFile, cfgDevice, err := c.enrolFields(path)
	if err != nil {
		fmt.Fprintf(c.stderr, "agent enrol: %v\n", err)
		return exitFailure
	}
	if err := checkEnrolAgentID(id); err != nil {
		fmt.Fprintf(c.stderr, "agent enrol: config: Broker.AgentId: %v\n", err)
		return exitFailure
	}
	if keyFile == "" {
		fmt.Fprintln(c.stderr, "agent enrol: config: Broker.KeyFile: is required (where the agent's private key is kept, e.g. /var/lib/orthanc-gcp-agent/agent.key)")
		return exitFailure
	}
	kind, device := keys.KindFile, c.tpmDevice(*dev, cfgDevice)
	if *tpm {
		kind = keys.KindTPM
	}
	created, err := ensureKey(keyFile, kind, device)
	if err != nil {
		fmt.Fprintf(c.stderr, "agent enrol: config: Broker.KeyFile: %v\n", err)
		return exitFailure
	}
	if created {
		fmt.Fprintf(c.stderr, "agent enrol: created the agent key %s (%s)\n", keyFile, kind)
	}
	cfg, err := config.Load(path, withTPMDevice(c.env, *dev))
	if err != nil {
		fmt.Fprintf(c.stderr, "agent enrol: %v\n", err)
		if created {
			fmt.Fprintln(c.stderr, "agent enrol: the new key is kept; fix the configuration and run enrol again")
		}
		return exitFailure
	}
	if !created && *tpm && cfg.KeyKind != keys.KindTPM {
		fmt.Fprintf(c.stderr, "agent enrol: --tpm: %s already holds a %s key, reused; to move to a TPM key without downtime, "+
			"see \"Rotate an agent key\" in docs/runbook.md\n", keyFile, cfg.KeyKind)
	}
	if err := writeEnrolment(c.stdout, cfg.AgentID, cfg.KeyPublic, cfg.Accounts, keyFile, created); err != nil {
		return exitFailure
	}
	return exitOK
}

// ensureKey creates a key of kind at path with keygen's code (keys.Create:
// mode 0600, or a private DACL on Windows; never overwriting) unless
// something already has that name, in which case the full load checks it.
func ensureKey(path, kind, device string) (created bool, err error) {
	if _, err := os.Lstat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if _, err := keys.Create(path, kind, device); err != nil {
		return false, err
	}
	return true, nil
}

// writeEnrolment prints the terraform agents entry and the broker policy
// member for one agent. Only the public key line appears, never the key.
// id and accounts have passed the broker's rules, so they need no escaping
// in HCL or JSON beyond the quotes.
func writeEnrolment(w io.Writer, id, pubLine string, accounts []string, keyFile string, created bool) error {
	state := "already there, reused"
	if created {
		state = "created now"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Agent %s, key %s (%s).\n", strconv.Quote(id), oneLine(keyFile), state)
	fmt.Fprintf(&b, "# Public key: %s\n", pubLine)
	b.WriteString("# Register it at the broker in one of two ways.\n")
	writeEntries(&b, id, []string{pubLine}, accounts, "enrol")
	_, err := io.WriteString(w, b.String())
	return err
}

// writeEntries writes the two ways to register an agent with its public
// key lines (one, or two while a rotation is under way): the terraform
// agents entry and the policy member. cmd names the command to run again.
func writeEntries(b *strings.Builder, id string, pubLines, accounts []string, cmd string) {
	q := make([]string, len(accounts))
	for i, a := range accounts {
		q[i] = strconv.Quote(a)
	}
	list := "[" + strings.Join(q, ", ") + "]"

	b.WriteString("#\n")
	b.WriteString("# 1. terraform: add this entry inside agents = { ... } in terraform.tfvars, then terraform apply.\n")
	if !wire.ValidTerraformAgentID(id) {
		b.WriteString("#    terraform's agents variable accepts only ids of 1-63 letters, digits, '.', '_' or '-':\n")
		fmt.Fprintf(b, "#    use way 2, or change Broker.AgentId and run %s again.\n", cmd)
	}
	if len(accounts) == 0 {
		b.WriteString("#    Accounts is empty in the agent's configuration, so the agent asks for every store it is\n")
		b.WriteString("#    granted. terraform requires the list: replace [] with the account names this agent may use.\n")
	}
	// Indented, and aligned, as terraform fmt has it inside agents = { ... }.
	fmt.Fprintf(b, "  %s = {\n", strconv.Quote(id))
	if len(pubLines) == 1 {
		fmt.Fprintf(b, "    public_key = %s\n", strconv.Quote(pubLines[0]))
		fmt.Fprintf(b, "    accounts   = %s\n", list)
	} else {
		p := make([]string, len(pubLines))
		for i, l := range pubLines {
			p[i] = strconv.Quote(l)
		}
		fmt.Fprintf(b, "    public_keys = [%s]\n", strings.Join(p, ", "))
		fmt.Fprintf(b, "    accounts    = %s\n", list)
	}
	b.WriteString("  }\n\n")
	b.WriteString("# 2. Without terraform: add this member inside \"Agents\": { ... } of the broker policy (BROKER_CONFIG).\n")
	if len(accounts) == 0 {
		b.WriteString("#    With \"Accounts\": [] the broker grants this agent nothing: list the account names.\n")
	}
	b.WriteString(keys.PolicyMember(id, pubLines, accounts) + "\n")
}
