// Package migrate turns an Orthanc configuration written for the old Google
// Cloud Platform plugin (the "GoogleCloudPlatform" section the Orthanc book
// documents) into what this project needs instead: the terraform module's
// accounts, a script that loads each credential into its Secret Manager
// secret, an agent configuration for the site, and a plan saying what to do
// in which order.
//
// No credential value (private key, client secret, refresh token, Orthanc
// password) is ever written into the output directory, printed in the plan
// or quoted in an error. The only way a value leaves is PrintCredential,
// which writes only to a pipe (into gcloud): never to a file, where the
// value would stay on disk, nor to a terminal.
package migrate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// Options are the inputs of Run (the CLI's flags).
type Options struct {
	// OrthancConfig is Orthanc's configuration: a file, or a directory of
	// *.json files as Orthanc accepts (--orthanc-config).
	OrthancConfig string
	// OutDir is created (mode 0700) and receives the files (--out). An
	// existing non-empty directory is refused.
	OutDir string
	// BrokerURL and AgentID fill Broker.Url and Broker.AgentId of the agent
	// configuration (--broker-url, --agent-id); empty leaves a placeholder
	// the plan asks the operator to fill.
	BrokerURL, AgentID string
	// AgentCommand is how load-secrets.sh runs this program for
	// --print-credential; default "orthanc-gcp-agent".
	AgentCommand string
	// OS is the system the agent will run on, as GOOS: "windows" gets
	// Windows paths in agent.json and PowerShell steps in the plan; ""
	// is the system Run runs on (runtime.GOOS).
	OS string
}

// Error is a refused input. Account is the plugin account it concerns ("" when
// none), Field the option (e.g. "ServiceAccountFile", "GoogleCloudPlatform.BaseUrl").
// The message never holds a credential value.
type Error struct {
	Account string
	Field   string
	Msg     string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("migrate: ")
	if e.Account != "" {
		fmt.Fprintf(&b, "account %q: ", e.Account)
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Names of the files Run writes into OutDir.
const (
	TfvarsFile      = "accounts.auto.tfvars.json"
	LoadSecretsFile = "load-secrets.sh"
	AgentConfigFile = "agent.json"
)

// Run validates the whole Orthanc configuration, then writes OutDir (all
// files or none) and prints the plan on stdout. Nothing is written anywhere
// when it returns an error before the plan.
func Run(o Options, stdout io.Writer) error {
	if o.AgentCommand == "" {
		o.AgentCommand = "orthanc-gcp-agent"
	}
	if o.OS == "" {
		o.OS = runtime.GOOS
	}
	if err := checkOptions(o); err != nil {
		return err
	}
	out, err := prepareOutDir(o.OutDir)
	if err != nil {
		return err
	}
	s, err := loadSite(o.OrthancConfig)
	if err != nil {
		return err
	}
	r := newRender(s, o, out)
	files, err := r.files()
	if err != nil {
		return err
	}
	var plan bytes.Buffer
	r.plan(&plan)
	if err := writeDir(out, files); err != nil {
		return err
	}
	_, err = stdout.Write(plan.Bytes())
	return err
}

func checkOptions(o Options) error {
	if o.OutDir == "" {
		return &Error{Field: "--out", Msg: "is required"}
	}
	if o.BrokerURL != "" {
		if err := checkBrokerURL(o.BrokerURL); err != nil {
			return err
		}
	}
	// The id becomes a key of terraform's agents variable: the module's
	// rule, narrower than the broker's.
	if o.AgentID != "" && !wire.ValidTerraformAgentID(o.AgentID) {
		return &Error{Field: "--agent-id", Msg: fmt.Sprintf("must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit (the terraform module's rule for agent ids), got %q", clip(o.AgentID))}
	}
	return nil
}

// PrintCredential writes the authorized_user JSON of the inline account
// name (AuthorizedUserClientId/ClientSecret/RefreshToken in the Orthanc
// configuration) to out, for `| gcloud secrets versions add … --data-file=-`.
// out must be a pipe (IsPipe): a redirect to a file would leave the refresh
// token on disk, readable by whoever the umask lets, and a terminal shows
// it; both are refused before the configuration is read. It also refuses an
// unknown account, and accounts whose credential is a file (load-secrets.sh
// loads that file directly). Nothing is written to out unless it succeeds.
func PrintCredential(orthancConfig, name string, out *os.File) error {
	if !IsPipe(out) {
		return &Error{Account: name, Field: "--print-credential",
			Msg: "refusing to print a credential to " + describeOutput(out) + ": it is written only to a pipe, so it never lands on disk or screen; " +
				"pipe it: … --print-credential NAME | gcloud secrets versions add SECRET --project=P --data-file=-"}
	}
	s, err := loadSite(orthancConfig)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(s.Accounts, func(a *account) bool { return a.Name == name })
	if i < 0 {
		names := make([]string, len(s.Accounts))
		for j, a := range s.Accounts {
			names[j] = a.Name
		}
		return &Error{Account: name, Field: "--print-credential",
			Msg: fmt.Sprintf("no such account in GoogleCloudPlatform.Accounts (it has: %s)", strings.Join(names, ", "))}
	}
	a := s.Accounts[i]
	if a.inline == nil {
		return &Error{Account: name, Field: a.Source,
			Msg: fmt.Sprintf("the credential is the file %s, which load-secrets.sh loads directly (--data-file); --print-credential prints only inline AuthorizedUserClientId/ClientSecret/RefreshToken credentials", a.File)}
	}
	doc, err := json.Marshal(struct {
		Type         string `json:"type"`
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
		RefreshToken string `json:"refresh_token"`
	}{"authorized_user", a.inline.ClientID, a.inline.ClientSecret, a.inline.RefreshToken})
	if err != nil {
		return &Error{Account: name, Field: "--print-credential", Msg: "cannot encode the credential"}
	}
	_, err = out.Write(doc)
	return err
}

// IsPipe reports whether f is a pipe (os.ModeNamedPipe: an anonymous pipe
// such as a shell's `|` or `$(…)`, or a FIFO; on Windows a pipe handle). A
// nil f, or one that cannot be stat'ed, is not.
func IsPipe(f *os.File) bool {
	if f == nil {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeNamedPipe != 0
}

// describeOutput names what f is, for the refusal.
func describeOutput(f *os.File) string {
	if f == nil {
		return "an output that is not a file"
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
		return "an output that cannot be checked"
	case fi.Mode().IsRegular():
		return "a regular file"
	case fi.Mode()&os.ModeCharDevice != 0:
		return "a terminal or device"
	default:
		return "an output that is not a pipe"
	}
}
