package migrate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
)

// What the generated agent configuration points at, following docs/agent.md.
const (
	AgentKeyFile      = "/var/lib/orthanc-gcp-agent/agent.key"
	AgentPasswordFile = "/etc/orthanc-gcp-agent/orthanc.password"
	AgentConfigPath   = "/etc/orthanc-gcp-agent/agent.json"

	// The same on Windows (docs/agent.md, "Install on Windows"): in
	// agent.json with forward slashes, which Windows takes too.
	WindowsAgentKeyFile      = "C:/ProgramData/orthanc-gcp-agent/agent.key"
	WindowsAgentPasswordFile = "C:/ProgramData/orthanc-gcp-agent/orthanc.password"
	WindowsAgentConfigPath   = `C:\ProgramData\orthanc-gcp-agent\agent.json`

	// Placeholders of the agent configuration when --broker-url or
	// --agent-id is not given. The agent refuses the URL placeholder, so an
	// unfilled file cannot start.
	BrokerURLPlaceholder = "<FILL IN: terraform output -raw broker_url>"
	AgentIDPlaceholder   = "<FILL IN: this site's agent id, e.g. clinic-a>"

	// DefaultResourcePrefix is the module's default resource_prefix.
	DefaultResourcePrefix = "ogb"
)

// preferredUsers are RegisteredUsers names taken for the agent before any other.
var preferredUsers = []string{"gcp-agent", "orthanc-gcp-agent", "agent"}

func checkBrokerURL(raw string) error {
	u, err := urlrule.ParseBearerURL(raw)
	if err != nil {
		return &Error{Field: "--broker-url", Msg: err.Error()}
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return &Error{Field: "--broker-url", Msg: "must not have a query or fragment"}
	}
	return nil
}

type render struct {
	s   *site
	o   Options
	dir string // absolute output directory

	orthancURL string
	user       string // Orthanc.Username; "" for none
	warnings   []string
}

func newRender(s *site, o Options, dir string) *render {
	r := &render{s: s, o: o, dir: dir}
	scheme := "http"
	if s.SSL {
		scheme = "https"
	}
	r.orthancURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, s.HTTPPort)
	if len(s.Users) > 0 && !s.AuthDisabled {
		for _, u := range append(slices.Clone(preferredUsers), s.Users...) {
			if slices.Contains(s.Users, u) && u != "" && !strings.ContainsFunc(u, func(r rune) bool { return r == ':' || isControl(r) }) {
				r.user = u
				break
			}
		}
	}
	r.warn()
	return r
}

func (r *render) warn() {
	s := r.s
	w := func(format string, a ...any) { r.warnings = append(r.warnings, fmt.Sprintf(format, a...)) }
	switch {
	case s.BaseURL == "":
		w("GoogleCloudPlatform.BaseUrl is not set, so the plugin used its default %s: Healthcare API v1beta1. "+
			"The broker hands out v1 URLs (the module's healthcare_base_url, default %s); check that your scripts work with v1.", pluginDefaultBaseURL, brokerBaseURL)
	case s.BaseVersion == "/v1beta1/":
		w("GoogleCloudPlatform.BaseUrl %q is Healthcare API v1beta1 (the plugin's old default). "+
			"The broker hands out v1 URLs (the module's healthcare_base_url, default %s); check that your scripts work with v1.", clip(s.BaseURL), brokerBaseURL)
	case s.BaseVersion != "/v1/":
		w("GoogleCloudPlatform.BaseUrl %q is not the v1 API. The broker hands out the module's healthcare_base_url (default %s).", clip(s.BaseURL), brokerBaseURL)
	}
	if s.GoogleHost != defaultGoogleHost {
		w("GoogleCloudPlatform.BaseUrl uses the endpoint %s: set healthcare_base_url = \"https://%s/v1/\" on the terraform module; agent.json already allows that host (AllowedDicomWebHosts).", s.GoogleHost, s.GoogleHost)
	}
	if s.VerifyPeersOff {
		w("HttpsVerifyPeers is false: Orthanc does not check Google's certificate, so anyone on the network path can take the bearer tokens it sends. " +
			"Set it to true, with HttpsCACertificates (e.g. /etc/ssl/certs/ca-certificates.crt).")
	}
	if s.Verbose {
		w("HttpVerbose is true: Orthanc writes the headers of its outgoing requests, \"Authorization: Bearer …\" included, to its log. Set it to false.")
	}
	if s.ServersInDatabase {
		w("DicomWeb.ServersInDatabase is true: Orthanc stores its DICOMweb servers, bearer tokens included, in clear text in its database (and in its backups). " +
			"Set it to false: the agent pushes its entries again within seconds of an Orthanc restart. While it is true, the plugin's entries outlive the restart of step 6 and must be deleted there.")
	}
	if s.HTTPServerOff {
		w("HttpServerEnabled is false: the agent needs Orthanc's REST API on %s.", r.orthancURL)
	}
	if s.SSL {
		w("SslEnabled is true: the agent reaches Orthanc at %s and checks its certificate against this host's CA roots; it must be trusted and valid for 127.0.0.1, or change Orthanc.Url to a name the certificate holds.", r.orthancURL)
	}
	for _, n := range s.StaticServers {
		w("DicomWeb.Servers also defines %q: Orthanc brings it back at every restart under the name the agent needs. Remove it.", n)
	}
	if s.AuthDisabled && len(s.Users) > 0 {
		w("AuthenticationEnabled is false, so the agent gets no Orthanc user. If you turn authentication on, set Orthanc.Username and Orthanc.PasswordFile in agent.json.")
	}
	for _, a := range s.Accounts {
		if a.Relative {
			w("account %q: %s %q is relative; it was read as %s (relative to the configuration's directory). The plugin opened it relative to Orthanc's working directory: make sure it is the file Orthanc used.",
				a.Name, a.Source, clip(a.Written), a.File)
		}
	}
	r.warnings = append(r.warnings, s.Notes...)
}

func (r *render) files() ([]outFile, error) {
	tfvars, err := r.tfvars()
	if err != nil {
		return nil, err
	}
	agent, err := r.agentConfig()
	if err != nil {
		return nil, err
	}
	return []outFile{
		{TfvarsFile, tfvars, 0o600},
		{LoadSecretsFile, r.loadSecrets(), 0o700},
		{AgentConfigFile, agent, 0o600},
	}, nil
}

type tfAccount struct {
	Project    string `json:"project"`
	Location   string `json:"location"`
	Dataset    string `json:"dataset"`
	DicomStore string `json:"dicom_store"`
	Mode       string `json:"mode"`
}

func (r *render) tfvars() ([]byte, error) {
	accounts := map[string]tfAccount{}
	for _, a := range r.s.Accounts {
		accounts[a.Name] = tfAccount{a.Project, a.Location, a.Dataset, a.DicomStore, a.mode()}
	}
	return marshal(map[string]any{"accounts": accounts})
}

// agentFile is the subset of agent/config.File the migration sets, with
// the same JSON names.
type agentFile struct {
	Broker struct {
		Url     string `json:"Url"`
		AgentId string `json:"AgentId"`
		KeyFile string `json:"KeyFile"`
	} `json:"Broker"`
	Orthanc struct {
		Url          string `json:"Url"`
		Username     string `json:"Username,omitempty"`
		PasswordFile string `json:"PasswordFile,omitempty"`
		DicomWebRoot string `json:"DicomWebRoot"`
	} `json:"Orthanc"`
	Accounts             []string       `json:"Accounts"`
	ServerOptions        map[string]any `json:"ServerOptions"`
	AllowedDicomWebHosts []string       `json:"AllowedDicomWebHosts"`
}

func (r *render) agentConfig() ([]byte, error) {
	var f agentFile
	f.Broker.Url = cmpOr(r.o.BrokerURL, BrokerURLPlaceholder)
	f.Broker.AgentId = cmpOr(r.o.AgentID, AgentIDPlaceholder)
	f.Broker.KeyFile = AgentKeyFile
	if r.windows() {
		f.Broker.KeyFile = WindowsAgentKeyFile
	}
	f.Orthanc.Url = r.orthancURL
	f.Orthanc.DicomWebRoot = r.s.DicomWebRoot
	if r.user != "" {
		f.Orthanc.Username = r.user
		f.Orthanc.PasswordFile = AgentPasswordFile
		if r.windows() {
			f.Orthanc.PasswordFile = WindowsAgentPasswordFile
		}
	}
	for _, a := range r.s.Accounts {
		f.Accounts = append(f.Accounts, a.Name)
	}
	// What the plugin pushed besides Url and the header: HasDelete. The
	// timeout is Orthanc's HttpTimeout, which applied to the plugin's entries.
	f.ServerOptions = map[string]any{"HasDelete": true}
	if r.s.HTTPTimeout > 0 {
		f.ServerOptions["Timeout"] = r.s.HTTPTimeout
	}
	f.AllowedDicomWebHosts = []string{r.s.GoogleHost}
	return marshal(f)
}

// windows reports whether the agent will run on Windows (Options.OS).
func (r *render) windows() bool { return r.o.OS == "windows" }

// psWord is s as one PowerShell word: as it is when it holds only
// characters PowerShell treats as plain, else in single quotes (each one
// inside doubled), where nothing is expanded.
func psWord(s string) string {
	if s != "" && strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_:./\\-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

func cmpOr(v, def string) string {
	if v != "" {
		return v
	}
	return def
}

// marshal is indented JSON with a final newline and without HTML escaping
// (the placeholders keep their "<" and ">").
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, &Error{Field: "--out", Msg: "cannot encode: " + err.Error()}
	}
	return b.Bytes(), nil
}

// shellQuote quotes s for a POSIX shell: the whole of s in single quotes,
// each single quote inside written as quote, backslash, quote, quote.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shellWord is s as one shell word for a command shown in the plan: as it
// is when it holds only characters no shell treats specially, else quoted.
func shellWord(s string) string {
	if s != "" && strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@%_+=:,./-") == "" {
		return s
	}
	return shellQuote(s)
}

// loadSecrets is the script that fills each account's secret. It holds
// paths and names, never a credential: files are given to gcloud by path,
// inline credentials are printed by this program into gcloud's stdin.
func (r *render) loadSecrets() []byte {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("#!/usr/bin/env bash")
	p("# Written by `%s migrate` from %s.", r.o.AgentCommand, safeComment(r.s.ConfigPath))
	p("#")
	p("# Loads the credentials of the old Google Cloud Platform plugin into the")
	p("# broker's Secret Manager secrets, which `terraform apply` created empty.")
	p("# This file holds no credential: each file is handed to gcloud by its path,")
	p("# and a credential written inline in the Orthanc configuration goes from")
	p("# `%s migrate --print-credential` to gcloud without touching the disk.", r.o.AgentCommand)
	p("#")
	p("# Run it on this host, after terraform apply, as a user who can read the")
	p("# credential files, with gcloud logged in as someone who may add secret")
	p("# versions in the broker's project:")
	p("#   BROKER_PROJECT=<the module's project> %s", safeComment(filepath.Join(r.dir, LoadSecretsFile)))
	p("# Set RESOURCE_PREFIX too if the module's resource_prefix is not %q.", DefaultResourcePrefix)
	p("# The secret ids are the module's: `terraform output credential_secrets`.")
	p("set -euo pipefail")
	p("")
	p(`: "${BROKER_PROJECT:?set BROKER_PROJECT to the broker's project (the terraform module's project)}"`)
	p(`RESOURCE_PREFIX="${RESOURCE_PREFIX:-%s}"`, DefaultResourcePrefix)
	p(`if [[ ! $BROKER_PROJECT =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]]; then`)
	p(`	echo "load-secrets.sh: BROKER_PROJECT is not a project ID" >&2`)
	p(`	exit 2`)
	p(`fi`)
	p(`if [[ ! $RESOURCE_PREFIX =~ ^[a-z][a-z0-9]{1,7}$ ]]; then`)
	p(`	echo "load-secrets.sh: RESOURCE_PREFIX must be the module's resource_prefix (2-8 lower-case letters or digits)" >&2`)
	p(`	exit 2`)
	p(`fi`)
	for _, a := range r.s.Accounts {
		// Names match the broker's rule and ids [a-z0-9-]: safe in a
		// comment, and in double quotes next to the prefix.
		secret := `"${RESOURCE_PREFIX}-` + ResourceID(a.Name) + secretSuffix(a.mode()) + `"`
		p("")
		p("# Account %s: %s", a.Name, safeComment(a.sourceLabel()))
		p(`echo "account %s -> secret ${RESOURCE_PREFIX}-%s%s" >&2`, a.Name, ResourceID(a.Name), secretSuffix(a.mode()))
		if a.inline != nil {
			p("credential=$(%s migrate --orthanc-config %s --print-credential %s)",
				shellQuote(r.o.AgentCommand), shellQuote(r.s.ConfigPath), shellQuote(a.Name))
			p(`printf '%%s' "$credential" | gcloud secrets versions add %s --project="$BROKER_PROJECT" --data-file=-`, secret)
			p("unset credential")
		} else {
			p(`gcloud secrets versions add %s --project="$BROKER_PROJECT" --data-file=%s`, secret, shellQuote(a.File))
		}
	}
	p("")
	p(`echo "load-secrets.sh: %d secret(s) loaded" >&2`, len(r.s.Accounts))
	return []byte(b.String())
}

// safeComment keeps a path on one comment line.
func safeComment(s string) string {
	return strings.Map(func(r rune) rune {
		if isControl(r) {
			return '?'
		}
		return r
	}, s)
}

// plan writes the plan for the operator's terminal. Each line goes through
// logtext.Printable: it names users, paths, key fields and options from the
// Orthanc configuration, a key file and the command line, and a control
// character in one (ESC, U+009B, a newline) must not drive the terminal or
// fake a line of the plan. The files written are not escaped: encoding/json
// and shellQuote keep those exact.
func (r *render) plan(w io.Writer) {
	s := r.s
	p := func(format string, a ...any) { fmt.Fprintln(w, logtext.Printable(fmt.Sprintf(format, a...))) }
	p("Migration of the Google Cloud Platform plugin configured in %s", s.ConfigPath)
	p("(no credential value is shown here or written anywhere)")
	p("")
	p("Accounts (each stays the Orthanc DICOMweb server %sservers/NAME/):", s.DicomWebRoot)
	for _, a := range s.Accounts {
		p("  %s", a.Name)
		p("    store:      projects/%s/locations/%s/datasets/%s/dicomStores/%s", a.Project, a.Location, a.Dataset, a.DicomStore)
		switch {
		case a.inline != nil:
			p("    credential: authorized_user, inline AuthorizedUserClientId/ClientSecret/RefreshToken in the Orthanc configuration")
		case a.mode() == modeKey:
			id := ""
			if a.KeyID != "" {
				id = ", key id " + a.KeyID
			}
			p("    credential: service_account key %s (%s%s)", a.File, a.ClientEmail, id)
		default:
			p("    credential: authorized_user file %s", a.File)
		}
		sa := ""
		if a.mode() == modeKey {
			sa = fmt.Sprintf(", store service account %s-%s", DefaultResourcePrefix, ResourceID(a.Name))
		}
		p("    terraform:  mode %q, secret %s%s", a.mode(), SecretID(DefaultResourcePrefix, a.Name, a.mode()), sa)
	}
	p("  (resource names with the default resource_prefix %q; `terraform output account_resource_ids` shows yours)", DefaultResourcePrefix)
	p("")
	timeout := "unset (Orthanc's default)"
	if s.HTTPTimeout > 0 {
		timeout = strconv.Itoa(s.HTTPTimeout) + " s"
	}
	p("Orthanc: REST API %s, DICOMweb root %s, HttpTimeout %s", r.orthancURL, s.DicomWebRoot, timeout)
	p("  ServerOptions: HasDelete true, as the plugin set it (the module grants dicomWebDelete only to accounts with allow_delete = true)")
	switch {
	case r.user != "":
		p("  Orthanc.Username %q, chosen from RegisteredUsers (%s); its password is not copied", r.user, strings.Join(s.Users, ", "))
	case len(s.Users) > 0 && s.AuthDisabled:
		p("  no Orthanc user: AuthenticationEnabled is false")
	case len(s.Users) > 0:
		p("  no usable Orthanc user in RegisteredUsers; add one for the agent (docs/agent.md, step 4)")
	default:
		p("  no RegisteredUsers: the agent calls Orthanc without a user")
	}
	p("")
	if r.windows() {
		p("Written to %s (only SYSTEM, Administrators and you may open it):", r.dir)
	} else {
		p("Written to %s (mode 0700):", r.dir)
	}
	p("  %-26s the terraform module's accounts", TfvarsFile)
	p("  %-26s loads each credential into its secret", LoadSecretsFile)
	p("  %-26s this site's agent configuration", AgentConfigFile)
	if len(r.warnings) > 0 {
		p("")
		p("Warnings:")
		for _, x := range r.warnings {
			p("  ! %s", x)
		}
	}

	cfg := filepath.Join(r.dir, AgentConfigFile)
	p("")
	p("Steps, in this order:")
	p("1. Terraform, where you run the broker's module: copy %s into the root module's", filepath.Join(r.dir, TfvarsFile))
	p("   directory (e.g. your copy of terraform/examples/). Terraform loads it by itself, but an")
	p("   `accounts` in a -var-file replaces it: merge your other accounts into this file instead.")
	p("   This site's `agents` entry comes in step 4. Then: terraform apply")
	p("   It creates one empty secret per account (terraform output credential_secrets).")
	p("2. On this host, as a user who can read the credential files, with gcloud logged in as")
	p("   someone who may add secret versions in the broker's project:")
	if r.windows() {
		p("   in Git Bash (the script is a bash script; gcloud for Windows takes its C:\\ paths):")
		p("     BROKER_PROJECT=<the module's project> bash %s", shellWord(filepath.ToSlash(filepath.Join(r.dir, LoadSecretsFile))))
	} else {
		p("     BROKER_PROJECT=<the module's project> %s", shellWord(filepath.Join(r.dir, LoadSecretsFile)))
	}
	p("   (add RESOURCE_PREFIX=<prefix> if the module's resource_prefix is not %q).", DefaultResourcePrefix)
	if r.windows() {
		r.windowsSteps(p, cfg)
		return
	}
	p("3. Finish the agent configuration %s:", cfg)
	if r.o.BrokerURL == "" {
		p("     Broker.Url     = the output of `terraform output -raw broker_url`")
	}
	if r.o.AgentID == "" {
		p("     Broker.AgentId = this site's agent id (letters, digits, '.', '_', '-'; e.g. clinic-a)")
	}
	if r.user != "" {
		p("     Orthanc: put the password of Orthanc user %q, alone on one line, into %s", r.user, AgentPasswordFile)
		p("       sudo install -m 0640 -o root -g orthanc-gcp-agent /dev/stdin %s", AgentPasswordFile)
		p("       (type the password, then Ctrl-D). A user of the agent's own is better: docs/agent.md, step 4.")
	}
	p("   then install it (docs/agent.md covers the user and directories):")
	p("     sudo install -m 0640 -o root -g orthanc-gcp-agent %s %s", shellWord(cfg), AgentConfigPath)
	p("4. Enrol: sudo -u orthanc-gcp-agent %s enrol --config %s", shellWord(r.o.AgentCommand), AgentConfigPath)
	p("   It makes the agent key %s if missing and prints this site's `agents` entry", AgentKeyFile)
	p("   (accounts %s): paste it into `agents`, then terraform apply.", strings.Join(r.names(), ", "))
	p("5. Start the agent: sudo systemctl enable --now orthanc-gcp-agent")
	p("   While the plugin runs, the agent reports a name conflict for each account and leaves")
	p("   the plugin's entries alone: expected until step 6.")
	r.lastSteps(p)
}

// lastSteps are steps 6 and 7, the same on every system but for the
// commands.
func (r *render) lastSteps(p func(format string, a ...any)) {
	s := r.s
	p("6. Remove the plugin: delete the GoogleCloudPlatform section from the Orthanc configuration")
	if len(s.Plugins) > 0 {
		p("   and the OrthancGoogleCloudPlatform library from its Plugins folders (%s),", strings.Join(quoteAll(s.Plugins), ", "))
	} else {
		p("   and the OrthancGoogleCloudPlatform library from its Plugins folders,")
	}
	p("   then restart Orthanc.")
	if s.ServersInDatabase {
		p("   ServersInDatabase is true, so delete the plugin's stored entries now (curl asks for the password):")
		for _, a := range s.Accounts {
			p("     curl -u %s -X DELETE %s", shellWord(cmpOr(r.user, "USER")), shellWord(r.orthancURL+s.DicomWebRoot+"servers/"+a.Name))
		}
	}
	p("   Within seconds the agent pushes its own entries. Check:")
	if r.windows() {
		p("     & %s status --config %s", psWord(r.o.AgentCommand), WindowsAgentConfigPath)
	} else {
		p("     %s status --config %s", shellWord(r.o.AgentCommand), AgentConfigPath)
	}
	p("7. Remove the credentials from this host: they are in Secret Manager now.")
	for _, a := range s.Accounts {
		if a.inline == nil && r.windows() {
			p("     Remove-Item %s", psWord(a.File))
		} else if a.inline == nil {
			p("     shred -u %s", shellWord(a.File))
		}
	}
	if i := slices.IndexFunc(s.Accounts, func(a *account) bool { return a.inline == nil }); r.windows() && i >= 0 {
		p("   Windows keeps a deleted file's data on the disk until it is overwritten: then")
		p("   cipher /w:%s overwrites the drive's free space.", cmpOr(filepath.VolumeName(s.Accounts[i].File), "C:")+`\`)
	}
	var users []string
	for _, a := range s.Accounts {
		if a.inline != nil {
			p("   %s: its inline credential went with the GoogleCloudPlatform section in step 6.", a.Name)
		}
		if a.mode() == modeAuthorizedUser {
			users = append(users, a.Name)
		}
	}
	p("   Backups of this host and of the Orthanc configuration still hold them, and they do not")
	p("   expire: replace them.")
	for _, a := range s.Accounts {
		if a.mode() != modeKey {
			continue
		}
		p("   - %s: the broker mints with this old key, so with the roles of %s, not those of", a.Name, a.ClientEmail)
		p("     the module's least-privilege store account %s-%s. Switch the account to mode", DefaultResourcePrefix, ResourceID(a.Name))
		p("     \"impersonate\" (keyless, docs/runbook.md section 6) or load a key of the store account")
		p("     (terraform output key_loading_commands, section 4), then delete the old key:")
		p("       gcloud iam service-accounts keys delete %s --iam-account=%s", shellWord(cmpOr(a.KeyID, "KEY_ID")), shellWord(a.ClientEmail))
	}
	if len(users) > 0 {
		p("   - %s: load a new refresh token (docs/runbook.md section 4), then revoke the old", strings.Join(users, ", "))
		p("     grant in the user's Google account settings.")
	}
}

// windowsSteps are steps 3 to 7 for a Windows host, in an elevated
// PowerShell, with the folder and service of docs/agent.md.
func (r *render) windowsSteps(p func(format string, a ...any), cfg string) {
	agent := "& " + psWord(r.o.AgentCommand)
	p("3. Finish the agent configuration %s:", cfg)
	if r.o.BrokerURL == "" {
		p("     Broker.Url     = the output of `terraform output -raw broker_url`")
	}
	if r.o.AgentID == "" {
		p("     Broker.AgentId = this site's agent id (letters, digits, '.', '_', '-'; e.g. clinic-a)")
	}
	p("   then, in an elevated PowerShell, into the agent's folder (docs/agent.md, Install on Windows,")
	p("   step 2, makes it and limits it to SYSTEM and Administrators):")
	if r.user != "" {
		p("     Orthanc: the password of Orthanc user %q, alone on one line, in ASCII:", r.user)
		p("       Set-Content -NoNewline -Encoding ascii %s '<the password>'", psWord(strings.ReplaceAll(WindowsAgentPasswordFile, "/", `\`)))
		p("       A user of the agent's own is better: docs/agent.md, step 4.")
	}
	p("     Copy-Item %s %s", psWord(cfg), psWord(WindowsAgentConfigPath))
	p("4. Enrol: %s enrol --config %s", agent, psWord(WindowsAgentConfigPath))
	p("   It makes the agent key %s if missing and prints this site's `agents` entry", WindowsAgentKeyFile)
	p("   (accounts %s): paste it into `agents`, then terraform apply.", strings.Join(r.names(), ", "))
	p("5. Start the agent: %s service install --config %s", agent, psWord(WindowsAgentConfigPath))
	p("     sc.exe start orthanc-gcp-agent")
	p("   While the plugin runs, the agent reports a name conflict for each account and leaves")
	p("   the plugin's entries alone: expected until step 6.")
	r.lastSteps(p)
}

func (r *render) names() []string {
	out := make([]string, len(r.s.Accounts))
	for i, a := range r.s.Accounts {
		out[i] = a.Name
	}
	return out
}

func quoteAll(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = strconv.Quote(s)
	}
	return out
}
