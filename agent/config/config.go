// Package config loads and validates the agent's configuration: one JSON
// file (see docs/agent.md) whose every field can be overridden by an
// environment variable. Everything that can be checked before the agent
// starts is checked here, with a message naming the offending field.
package config

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/keys"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/agent/orthanc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/logtext"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/strictjson"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// Defaults for fields left out of the file and the environment. They are
// set here only: the reconcile loop takes the resolved values.
const (
	DefaultBrokerTimeout = 30 * time.Second
	DefaultOrthancURL    = "http://127.0.0.1:8042"
	DefaultDicomWebRoot  = "/dicom-web/"
	DefaultRefreshMargin = 10 * time.Minute
	DefaultCheckInterval = 10 * time.Second
	// DefaultStoresInterval is how often the broker is asked for the store
	// list when no token is due, so grants and revocations take effect
	// without waiting for the next refresh.
	DefaultStoresInterval = time.Minute
	DefaultListen         = "127.0.0.1:9750"
	// DefaultResubmitFailedJobs: failed uploads whose token the store
	// refused are sent again (package resubmit).
	DefaultResubmitFailedJobs = true
)

// DefaultAllowedDicomWebHosts is AllowedDicomWebHosts when the file and
// the environment leave it out: the Healthcare API's global endpoint.
// Callers must not modify it.
var DefaultAllowedDicomWebHosts = []string{"healthcare.googleapis.com"}

// ReservedServerOptions are keys the agent itself sets in every Orthanc
// DICOMweb server entry; ServerOptions may not set them.
var ReservedServerOptions = []string{"Url", "HttpHeaders", "Username", "Password", orthanc.MarkerProperty, orthanc.ExpiryProperty, orthanc.TokenProperty}

// File is the JSON document exactly as written by the operator. Durations
// are strings such as "10m" so that errors can name the field.
type File struct {
	Broker        BrokerFile                 `json:"Broker"`
	Orthanc       OrthancFile                `json:"Orthanc"`
	Accounts      []string                   `json:"Accounts"`
	ServerOptions map[string]json.RawMessage `json:"ServerOptions"`
	RefreshMargin string                     `json:"RefreshMargin"`
	CheckInterval string                     `json:"CheckInterval"`
	Listen        *string                    `json:"Listen"` // nil: default; "": no health server
	// AllowedDicomWebHosts: nil means DefaultAllowedDicomWebHosts; a
	// list (even an empty one, which is refused) replaces the default.
	AllowedDicomWebHosts []string `json:"AllowedDicomWebHosts"`
	StoresInterval       string   `json:"StoresInterval"`
	// ResubmitFailedJobs: nil means DefaultResubmitFailedJobs.
	ResubmitFailedJobs *bool `json:"ResubmitFailedJobs"`
	// StateDirectory: "" means the directory of Broker.KeyFile.
	StateDirectory string `json:"StateDirectory"`
}

// BrokerFile is the "Broker" section.
type BrokerFile struct {
	Url                 string `json:"Url"`
	AgentId             string `json:"AgentId"`
	KeyFile             string `json:"KeyFile"`
	TpmDevice           string `json:"TpmDevice"`
	HttpsCACertificates string `json:"HttpsCACertificates"`
	Timeout             string `json:"Timeout"`
}

// OrthancFile is the "Orthanc" section.
type OrthancFile struct {
	Url          string `json:"Url"`
	Username     string `json:"Username"`
	PasswordFile string `json:"PasswordFile"`
	DicomWebRoot string `json:"DicomWebRoot"`
}

// Config is a validated configuration with the key and password loaded.
type Config struct {
	// BrokerURL is Broker.Url as configured; it is also the assertion's aud.
	BrokerURL string
	AgentID   string
	KeyFile   string
	// Key signs the agent's assertions: the Ed25519 key of KeyFile, or
	// the TPM key KeyFile wraps (see package keys).
	Key crypto.Signer
	// KeyKind is keys.KindFile or keys.KindTPM.
	KeyKind string
	// KeyPublic is the key's policy line ("ed25519:…", "ecdsa-p256:…").
	KeyPublic string
	// TpmDevice is the TPM of a "tpm" key (and of the keys rotate-key
	// makes for it); "" means tpmkey.DefaultDevice.
	TpmDevice string
	// CAFile, when set, replaces the system roots for the broker's TLS.
	CAFile        string
	BrokerTimeout time.Duration

	OrthancURL      string
	OrthancUsername string
	// OrthancPassword comes only from Orthanc.PasswordFile.
	OrthancPassword string
	DicomWebRoot    string

	// Accounts limits the stores used; empty means every granted store.
	Accounts      []string
	ServerOptions map[string]json.RawMessage
	RefreshMargin time.Duration
	CheckInterval time.Duration
	// StoresInterval is how often the store list is asked for when no
	// token is due.
	StoresInterval time.Duration
	// Listen is the health/metrics address; empty disables the server.
	Listen string
	// AllowedDicomWebHosts are the hosts (lower case, "host" or
	// "host:port") a token may be pushed for: urlrule.NewAllowList makes
	// them the gate the Orthanc client enforces.
	AllowedDicomWebHosts []string
	// ResubmitFailedJobs sends failed uploads again (package resubmit).
	ResubmitFailedJobs bool
	// StateDirectory holds the agent's state (the record of re-sent
	// uploads); it defaults to the directory of KeyFile.
	StateDirectory string
	// Warnings are problems that do not stop the agent, to be logged
	// once at start (e.g. a plain-http Orthanc.Url to another host).
	Warnings []string
}

// EnvVar describes one environment override.
type EnvVar struct {
	Name  string // e.g. AGENT_BROKER_URL
	Field string // e.g. Broker.Url
	apply func(f *File, v string) error
}

// EnvVars lists every override, in documentation order.
var EnvVars = []EnvVar{
	{"AGENT_BROKER_URL", "Broker.Url", func(f *File, v string) error { f.Broker.Url = v; return nil }},
	{"AGENT_BROKER_AGENT_ID", "Broker.AgentId", func(f *File, v string) error { f.Broker.AgentId = v; return nil }},
	{"AGENT_BROKER_KEY_FILE", "Broker.KeyFile", func(f *File, v string) error { f.Broker.KeyFile = v; return nil }},
	{"AGENT_TPM_DEVICE", "Broker.TpmDevice", func(f *File, v string) error { f.Broker.TpmDevice = v; return nil }},
	{"AGENT_BROKER_HTTPS_CA_CERTIFICATES", "Broker.HttpsCACertificates", func(f *File, v string) error { f.Broker.HttpsCACertificates = v; return nil }},
	{"AGENT_BROKER_TIMEOUT", "Broker.Timeout", func(f *File, v string) error { f.Broker.Timeout = v; return nil }},
	{"AGENT_ORTHANC_URL", "Orthanc.Url", func(f *File, v string) error { f.Orthanc.Url = v; return nil }},
	{"AGENT_ORTHANC_USERNAME", "Orthanc.Username", func(f *File, v string) error { f.Orthanc.Username = v; return nil }},
	{"AGENT_ORTHANC_PASSWORD_FILE", "Orthanc.PasswordFile", func(f *File, v string) error { f.Orthanc.PasswordFile = v; return nil }},
	{"AGENT_ORTHANC_DICOMWEB_ROOT", "Orthanc.DicomWebRoot", func(f *File, v string) error { f.Orthanc.DicomWebRoot = v; return nil }},
	{"AGENT_ACCOUNTS", "Accounts", func(f *File, v string) error {
		f.Accounts = nil
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				f.Accounts = append(f.Accounts, a)
			}
		}
		return nil
	}},
	{"AGENT_SERVER_OPTIONS", "ServerOptions", func(f *File, v string) error {
		var m map[string]json.RawMessage
		if err := strictjson.Unmarshal([]byte(v), &m); err != nil {
			return fmt.Errorf("must be a JSON object: %v", err)
		}
		f.ServerOptions = m
		return nil
	}},
	{"AGENT_REFRESH_MARGIN", "RefreshMargin", func(f *File, v string) error { f.RefreshMargin = v; return nil }},
	{"AGENT_CHECK_INTERVAL", "CheckInterval", func(f *File, v string) error { f.CheckInterval = v; return nil }},
	{"AGENT_LISTEN", "Listen", func(f *File, v string) error { f.Listen = &v; return nil }},
	{"AGENT_STORES_INTERVAL", "StoresInterval", func(f *File, v string) error { f.StoresInterval = v; return nil }},
	{"AGENT_RESUBMIT_FAILED_JOBS", "ResubmitFailedJobs", func(f *File, v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("must be true or false, got %q", clipEntry(v))
		}
		f.ResubmitFailedJobs = &b
		return nil
	}},
	{"AGENT_STATE_DIRECTORY", "StateDirectory", func(f *File, v string) error { f.StateDirectory = v; return nil }},
	{"AGENT_ALLOWED_DICOMWEB_HOSTS", "AllowedDicomWebHosts", func(f *File, v string) error {
		f.AllowedDicomWebHosts = []string{} // set, even if empty: Resolve refuses an empty list
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				f.AllowedDicomWebHosts = append(f.AllowedDicomWebHosts, h)
			}
		}
		return nil
	}},
}

// LookupEnv is the signature of os.LookupEnv, injected for tests.
type LookupEnv func(string) (string, bool)

// Load reads path (may be empty: defaults and environment only), applies
// the environment overrides, validates everything and loads the key and
// Orthanc password.
func Load(path string, env LookupEnv) (*Config, error) {
	var f File
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		p, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
		f = *p
	}
	if env == nil {
		env = os.LookupEnv
	}
	for _, ev := range EnvVars {
		if v, ok := env(ev.Name); ok {
			if err := ev.apply(&f, v); err != nil {
				return nil, fmt.Errorf("config: %s (%s): %w", ev.Name, ev.Field, err)
			}
		}
	}
	return f.Resolve()
}

// Parse decodes a configuration file with the project's one strict JSON
// decoder (internal/strictjson): exactly one JSON object, no unknown
// fields (a typo such as "RefreshMargn" is an error rather than a
// silently ignored setting), no duplicate keys, no keys that match a field
// only case-insensitively, no trailing data. Errors name the key path. It
// does not validate values; Resolve does.
func Parse(data []byte) (*File, error) {
	var f File
	if err := strictjson.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	return &f, nil
}

// FieldError names the field that failed validation.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return "config: " + e.Field + ": " + e.Msg }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// Resolve validates f, fills defaults and loads the files it names.
func (f *File) Resolve() (*Config, error) {
	c := &Config{
		BrokerURL:       strings.TrimSpace(f.Broker.Url),
		AgentID:         f.Broker.AgentId,
		KeyFile:         f.Broker.KeyFile,
		TpmDevice:       f.Broker.TpmDevice,
		CAFile:          f.Broker.HttpsCACertificates,
		OrthancURL:      f.Orthanc.Url,
		OrthancUsername: f.Orthanc.Username,
		DicomWebRoot:    f.Orthanc.DicomWebRoot,
		ServerOptions:   f.ServerOptions,
		Listen:          DefaultListen,
	}
	var err error
	if err = checkBrokerURL(c.BrokerURL); err != nil {
		return nil, err
	}
	if c.AgentID == "" {
		return nil, fieldErr("Broker.AgentId", "is required")
	}
	if strings.TrimSpace(c.AgentID) != c.AgentID || strings.ContainsFunc(c.AgentID, isControl) {
		return nil, fieldErr("Broker.AgentId", "must not contain spaces at either end or control characters")
	}
	if c.BrokerTimeout, err = duration("Broker.Timeout", f.Broker.Timeout, DefaultBrokerTimeout); err != nil {
		return nil, err
	}
	if c.KeyFile == "" {
		return nil, fieldErr("Broker.KeyFile", "is required (create one with: agent keygen --out FILE)")
	}
	if strings.ContainsFunc(c.TpmDevice, isControl) {
		return nil, fieldErr("Broker.TpmDevice", "must not contain control characters")
	}
	k, err := keys.Load(c.KeyFile, c.TpmDevice)
	if err != nil {
		return nil, fieldErr("Broker.KeyFile", "%v", err)
	}
	c.Key, c.KeyKind, c.KeyPublic = k.Signer, k.Kind, k.Public
	if c.CAFile != "" {
		if err := checkCAFile(c.CAFile); err != nil {
			return nil, fieldErr("Broker.HttpsCACertificates", "%v", err)
		}
	}

	if c.OrthancURL == "" {
		c.OrthancURL = DefaultOrthancURL
	}
	if err := checkOrthancURL(c.OrthancURL); err != nil {
		return nil, err
	}
	if w := orthancURLWarning(c.OrthancURL); w != "" {
		c.Warnings = append(c.Warnings, w)
	}
	c.OrthancURL = strings.TrimSuffix(c.OrthancURL, "/")
	if c.DicomWebRoot, err = normalizeRoot(c.DicomWebRoot); err != nil {
		return nil, err
	}
	if f.Orthanc.PasswordFile != "" && c.OrthancUsername == "" {
		return nil, fieldErr("Orthanc.Username", "is required when Orthanc.PasswordFile is set")
	}
	if c.OrthancUsername != "" {
		if strings.Contains(c.OrthancUsername, ":") {
			return nil, fieldErr("Orthanc.Username", "must not contain ':'")
		}
		if f.Orthanc.PasswordFile == "" {
			return nil, fieldErr("Orthanc.PasswordFile", "is required when Orthanc.Username is set (the password is read only from a file)")
		}
		if c.OrthancPassword, err = readPassword(f.Orthanc.PasswordFile); err != nil {
			return nil, fieldErr("Orthanc.PasswordFile", "%v", err)
		}
	}

	if c.Accounts, err = checkAccounts(f.Accounts); err != nil {
		return nil, err
	}
	if err := checkServerOptions(f.ServerOptions); err != nil {
		return nil, err
	}
	if c.RefreshMargin, err = duration("RefreshMargin", f.RefreshMargin, DefaultRefreshMargin); err != nil {
		return nil, err
	}
	if c.CheckInterval, err = duration("CheckInterval", f.CheckInterval, DefaultCheckInterval); err != nil {
		return nil, err
	}
	if c.CheckInterval < time.Second {
		return nil, fieldErr("CheckInterval", "must be at least 1s")
	}
	if c.StoresInterval, err = duration("StoresInterval", f.StoresInterval, DefaultStoresInterval); err != nil {
		return nil, err
	}
	if c.StoresInterval < time.Second {
		return nil, fieldErr("StoresInterval", "must be at least 1s")
	}
	c.ResubmitFailedJobs = DefaultResubmitFailedJobs
	if f.ResubmitFailedJobs != nil {
		c.ResubmitFailedJobs = *f.ResubmitFailedJobs
	}
	if c.StateDirectory, err = stateDirectory(f.StateDirectory, c.KeyFile, c.ResubmitFailedJobs); err != nil {
		return nil, err
	}
	if c.AllowedDicomWebHosts, err = checkAllowedHosts(f.AllowedDicomWebHosts); err != nil {
		return nil, err
	}
	if f.Listen != nil {
		c.Listen = *f.Listen
	}
	if c.Listen != "" {
		if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
			return nil, fieldErr("Listen", "must be host:port (empty disables the health server), got %q", c.Listen)
		}
	}
	return c, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// stateDirectory resolves StateDirectory: the directory of the key file
// unless set. When something will be written there (ResubmitFailedJobs)
// it must be an existing directory.
func stateDirectory(dir, keyFile string, used bool) (string, error) {
	field := "StateDirectory"
	if dir == "" {
		dir = filepath.Dir(keyFile)
		field = "StateDirectory (default: the directory of Broker.KeyFile)"
	}
	if strings.ContainsFunc(dir, isControl) {
		return "", fieldErr("StateDirectory", "must not contain control characters")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fieldErr(field, "%v", err)
	}
	if !used {
		return abs, nil
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fieldErr(field, "%v (ResubmitFailedJobs keeps its record of re-sent uploads there)", err)
	}
	if !fi.IsDir() {
		return "", fieldErr(field, "%s is not a directory", abs)
	}
	return abs, nil
}

func duration(field, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fieldErr(field, "is not a duration such as \"30s\" or \"10m\": %q", s)
	}
	if d <= 0 {
		return 0, fieldErr(field, "must be positive, got %q", s)
	}
	return d, nil
}

// redactURL is raw fit for an error message: a password in user info is
// masked, and a string that does not parse is not echoed at all.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable)"
	}
	return u.Redacted()
}

func checkBrokerURL(raw string) error {
	if raw == "" {
		return fieldErr("Broker.Url", "is required")
	}
	// The assertion is a bearer credential: the broker's URL follows the
	// same rule as the URLs tokens are pushed to.
	u, err := urlrule.ParseBearerURL(raw)
	if err != nil {
		return fieldErr("Broker.Url", "%v: %q", err, redactURL(raw))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fieldErr("Broker.Url", "must not have a query or fragment: %q", redactURL(raw))
	}
	return nil
}

func checkOrthancURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fieldErr("Orthanc.Url", "is not an http(s) URL: %q", redactURL(raw))
	}
	if u.User != nil {
		return fieldErr("Orthanc.Url", "must not contain user information (use Username and PasswordFile)")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fieldErr("Orthanc.Url", "must not have a query or fragment: %q", redactURL(raw))
	}
	return nil
}

// orthancURLWarning is the start-up warning for an Orthanc.Url that sends
// the tokens in clear over the network: plain http to a host that is not
// loopback. It stays allowed (Orthanc in another container is common).
func orthancURLWarning(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || urlrule.IsLoopbackHost(u.Hostname()) {
		return ""
	}
	return fmt.Sprintf("Orthanc.Url %q is plain http to a host that is not loopback: every pushed token crosses the network "+
		"in clear; use https, or run the agent on the Orthanc host", redactURL(raw))
}

// checkAllowedHosts validates AllowedDicomWebHosts with the rule of the
// gate it becomes (urlrule.AllowList) and returns it normalized (lower
// case, IPv6 in brackets, ports without leading zeros). nil means the
// default; a set but empty list is refused.
func checkAllowedHosts(in []string) ([]string, error) {
	if in == nil {
		return slices.Clone(DefaultAllowedDicomWebHosts), nil
	}
	if len(in) == 0 {
		return nil, fieldErr("AllowedDicomWebHosts", "is empty, so no token could ever be pushed; leave it out for the default %q",
			DefaultAllowedDicomWebHosts)
	}
	list, err := urlrule.NewAllowList(in)
	var ee *urlrule.EntryError
	switch {
	case errors.As(err, &ee):
		return nil, fieldErr(fmt.Sprintf("AllowedDicomWebHosts[%d]", ee.Index), "%q %v", clipEntry(ee.Entry), ee.Err)
	case err != nil:
		return nil, fieldErr("AllowedDicomWebHosts", "%v", err)
	}
	return list.Hosts(), nil
}

// clipEntry bounds an operator's value quoted in an error message.
func clipEntry(s string) string { return logtext.Truncate(logtext.Clip(s), 80) }

func normalizeRoot(root string) (string, error) {
	if root == "" {
		return DefaultDicomWebRoot, nil
	}
	if strings.ContainsAny(root, "?#") || strings.Contains(root, "..") || strings.ContainsFunc(root, isControl) {
		return "", fieldErr("Orthanc.DicomWebRoot", "must be a plain path such as %q, got %q", DefaultDicomWebRoot, root)
	}
	if !strings.HasPrefix(root, "/") {
		root = "/" + root
	}
	if !strings.HasSuffix(root, "/") {
		root += "/"
	}
	return root, nil
}

func checkCAFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !bytes.Contains(data, []byte("-----BEGIN CERTIFICATE-----")) {
		return fmt.Errorf("%s holds no PEM certificate", path)
	}
	return nil
}

// readPassword reads the Orthanc password from path, which must be a
// regular file that others cannot read or write: group-readable (0640
// root:orthanc-gcp-agent) is fine, world-readable is refused.
func readPassword(path string) (string, error) {
	// Stat before opening: opening a FIFO would block.
	if fi, err := os.Stat(path); err != nil {
		return "", err
	} else if err := checkPasswordMode(path, fi); err != nil {
		return "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// Again on the opened file, so a swap after the first check cannot matter.
	if fi, err := f.Stat(); err != nil {
		return "", err
	} else if err := checkPasswordMode(path, fi); err != nil {
		return "", err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return "", err
	}
	// One trailing newline is what editors and echo leave behind.
	pw := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if pw == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	if strings.ContainsAny(pw, "\r\n") {
		return "", fmt.Errorf("%s must hold the password on one line", path)
	}
	return pw, nil
}

func checkAccounts(in []string) ([]string, error) {
	seen := map[string]bool{}
	out := make([]string, 0, len(in))
	for i, a := range in {
		field := fmt.Sprintf("Accounts[%d]", i)
		switch {
		case a == "":
			return nil, fieldErr(field, "is empty")
		case !wire.ValidStoreName(a):
			return nil, fieldErr(field, "%q cannot be a store name (the broker's rule, %s; it is also the Orthanc server name)",
				clipEntry(a), wire.StoreNameRule)
		case seen[a]:
			return nil, fieldErr(field, "%q is listed twice", a)
		}
		seen[a] = true
		out = append(out, a)
	}
	sort.Strings(out)
	return out, nil
}

func checkServerOptions(opts map[string]json.RawMessage) error {
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		field := "ServerOptions." + k
		for _, r := range ReservedServerOptions {
			if strings.EqualFold(k, r) {
				return fieldErr(field, "is set by the agent itself and may not be configured")
			}
		}
		// Orthanc accepts only scalar user properties.
		var v any
		if err := json.Unmarshal(opts[k], &v); err != nil {
			return fieldErr(field, "is not valid JSON")
		}
		switch v.(type) {
		case string, bool, float64:
		default:
			return fieldErr(field, "must be a string, number or boolean")
		}
	}
	return nil
}

// ListenAddress returns the health address a configuration names, reading
// only what "agent status" needs: it neither reads the key nor requires the
// other fields, so an operator who cannot read the key can still ask.
func ListenAddress(path string, env LookupEnv) (string, error) {
	var f File
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("config: %w", err)
		}
		p, err := Parse(data)
		if err != nil {
			return "", fmt.Errorf("config %s: %w", path, err)
		}
		f = *p
	}
	if env == nil {
		env = os.LookupEnv
	}
	if v, ok := env("AGENT_LISTEN"); ok {
		f.Listen = &v
	}
	addr := DefaultListen
	if f.Listen != nil {
		addr = *f.Listen
	}
	if addr == "" {
		return "", fieldErr("Listen", "is empty: the agent serves no status")
	}
	return addr, nil
}
