package migrate

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/urlrule"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// Credential sources of the old plugin, and the terraform modes they become.
const (
	fieldServiceAccountFile = "ServiceAccountFile"
	fieldAuthorizedUserFile = "AuthorizedUserFile"
	fieldClientID           = "AuthorizedUserClientId"
	fieldClientSecret       = "AuthorizedUserClientSecret"
	fieldRefreshToken       = "AuthorizedUserRefreshToken"

	modeKey            = "key"
	modeAuthorizedUser = "authorized_user"

	// pluginDefaultBaseURL is what the plugin used when BaseUrl is unset.
	pluginDefaultBaseURL = "https://healthcare.googleapis.com/v1beta1/"
	brokerBaseURL        = "https://healthcare.googleapis.com/v1/"
	defaultGoogleHost    = "healthcare.googleapis.com"

	defaultHTTPPort     = 8042
	defaultDicomWebRoot = "/dicom-web/"

	maxCredentialFile = 1 << 20
)

// Every option the plugin reads, per level; anything else is ignored by the
// plugin and reported as such. A key that matches one of these only
// case-insensitively is refused: the plugin would not see it.
var (
	sectionKeys = []string{"Accounts", "BaseUrl", "Timeout", "RefreshInterval"}
	accountKeys = []string{"Project", "Location", "Dataset", "DicomStore",
		fieldServiceAccountFile, fieldAuthorizedUserFile, fieldClientID, fieldClientSecret, fieldRefreshToken}
	// Orthanc's own options this migration reads (near misses only warn:
	// Orthanc ignores them and so does the migration).
	topKeys      = []string{"GoogleCloudPlatform", "HttpPort", "SslEnabled", "HttpTimeout", "RegisteredUsers", "AuthenticationEnabled", "DicomWeb", "HttpsVerifyPeers", "HttpVerbose", "HttpServerEnabled", "Plugins"}
	dicomWebKeys = []string{"Root", "ServersInDatabase", "Servers"}
)

// The terraform module's rules for a store's path (variables.tf), so that a
// written tfvars file always passes the module's validation.
var (
	projectRE   = regexp.MustCompile(`^[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
	locationRE  = regexp.MustCompile(`^[a-z0-9-]+$`)
	storePartRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,256}$`)
	googleAPIRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+googleapis\.com$`)
)

// account is one migrated account. The inline credential is kept in memory
// only, for PrintCredential; nothing else here is secret.
type account struct {
	Name, Project, Location, Dataset, DicomStore string
	// Source is the credential field the plugin used.
	Source string
	// File is the credential file's absolute path (file sources).
	File string
	// Written is the path as the configuration gives it; Relative reports
	// that it was relative (and resolved against the configuration's directory).
	Written  string
	Relative bool
	// ClientEmail and KeyID identify a service-account key (not secret).
	ClientEmail, KeyID string
	inline             *inlineCredential
	notes              []string // ignored options
}

type inlineCredential struct {
	ClientID, ClientSecret, RefreshToken string
}

// sourceLabel names the credential source for the plan and the script.
func (a *account) sourceLabel() string {
	if a.inline != nil {
		return "inline AuthorizedUserClientId/ClientSecret/RefreshToken"
	}
	return a.Source + " " + a.File
}

func (a *account) mode() string {
	if a.Source == fieldServiceAccountFile {
		return modeKey
	}
	return modeAuthorizedUser
}

// site is everything the migration needs from an Orthanc configuration.
type site struct {
	ConfigPath string
	Accounts   []*account // sorted by name

	BaseURL     string // as configured; "" when unset (the plugin then used v1beta1)
	GoogleHost  string // the host tokens are used on
	BaseVersion string // the path of the base URL, e.g. "/v1beta1/"

	HTTPPort     int
	SSL          bool
	HTTPTimeout  int // seconds; 0 when unset
	DicomWebRoot string

	ServersInDatabase bool
	VerifyPeersOff    bool
	Verbose           bool
	HTTPServerOff     bool
	AuthDisabled      bool
	Users             []string // RegisteredUsers names, sorted
	Plugins           []string
	StaticServers     []string // DicomWeb.Servers that share a name with an account

	Notes []string // ignored options, near misses outside the plugin's section
}

// loadSite reads and validates everything; any problem is an *Error.
func loadSite(configPath string) (*site, error) {
	cfg, err := readOrthancConfig(configPath)
	if err != nil {
		return nil, err
	}
	s := &site{ConfigPath: cfg.path, HTTPPort: defaultHTTPPort, DicomWebRoot: defaultDicomWebRoot}
	top := cfg.top
	for _, k := range top.dups {
		if slices.Contains(topKeys, k) {
			return nil, &Error{Field: k, Msg: "is defined more than once; keep one"}
		}
	}
	s.Notes = append(s.Notes, nearMisses(top, topKeys, "")...)

	raw, ok := top.members["GoogleCloudPlatform"]
	if !ok {
		return nil, &Error{Field: "GoogleCloudPlatform", Msg: "section is missing: " + cfg.path + " does not configure the Google Cloud Platform plugin"}
	}
	gcp, ok := subObject(raw)
	if !ok {
		return nil, &Error{Field: "GoogleCloudPlatform", Msg: "must be a JSON object"}
	}
	if err := checkSection(gcp, "GoogleCloudPlatform", "", sectionKeys); err != nil {
		return nil, err
	}
	for _, k := range sortedKeys(gcp.members) {
		if !slices.Contains(sectionKeys, k) {
			s.Notes = append(s.Notes, fmt.Sprintf("GoogleCloudPlatform.%s is not an option of the plugin; ignored", clip(k)))
		}
	}
	for _, k := range []string{"Timeout", "RefreshInterval"} {
		if _, ok := gcp.members[k]; ok {
			s.Notes = append(s.Notes, fmt.Sprintf("GoogleCloudPlatform.%s is not carried over: the broker and the agent decide when tokens are refreshed", k))
		}
	}
	if err := s.baseURL(gcp); err != nil {
		return nil, err
	}

	rawAccounts, ok := gcp.members["Accounts"]
	if !ok {
		return nil, &Error{Field: "GoogleCloudPlatform.Accounts", Msg: "is missing: there is no account to migrate"}
	}
	accounts, ok := subObject(rawAccounts)
	if !ok {
		return nil, &Error{Field: "GoogleCloudPlatform.Accounts", Msg: "must be a JSON object (account name → settings)"}
	}
	if len(accounts.dups) > 0 {
		return nil, &Error{Account: accounts.dups[0], Field: "GoogleCloudPlatform.Accounts", Msg: "the account is defined more than once; keep one"}
	}
	if len(accounts.members) == 0 {
		return nil, &Error{Field: "GoogleCloudPlatform.Accounts", Msg: "is empty: there is no account to migrate"}
	}
	for _, name := range sortedKeys(accounts.members) {
		a, err := loadAccount(cfg.dir, name, accounts.members[name])
		if err != nil {
			return nil, err
		}
		s.Accounts = append(s.Accounts, a)
		s.Notes = append(s.Notes, a.notes...)
	}
	if err := s.orthanc(top); err != nil {
		return nil, err
	}
	return s, nil
}

// checkSection refuses duplicate keys and keys that match an option only
// case-insensitively, in the plugin's section or an account.
func checkSection(obj object, where, acct string, known []string) error {
	if len(obj.dups) > 0 {
		return &Error{Account: acct, Field: obj.dups[0], Msg: "is defined more than once in " + where + "; keep one"}
	}
	for _, k := range sortedKeys(obj.members) {
		if slices.Contains(known, k) {
			continue
		}
		for _, want := range known {
			if strings.EqualFold(k, want) {
				return &Error{Account: acct, Field: clip(k), Msg: fmt.Sprintf("matches the option %q only case-insensitively, so the plugin ignores it; spell it %q", want, want)}
			}
		}
	}
	return nil
}

func nearMisses(obj object, known []string, prefix string) []string {
	var out []string
	for _, k := range sortedKeys(obj.members) {
		if slices.Contains(known, k) {
			continue
		}
		for _, want := range known {
			if strings.EqualFold(k, want) {
				out = append(out, fmt.Sprintf("%s%s is not Orthanc's %s%s (case differs), so Orthanc ignores it; so does this migration", prefix, clip(k), prefix, want))
			}
		}
	}
	return out
}

func (s *site) baseURL(gcp object) error {
	const field = "GoogleCloudPlatform.BaseUrl"
	raw, ok := gcp.members["BaseUrl"]
	if !ok {
		s.GoogleHost, s.BaseVersion = defaultGoogleHost, "/v1beta1/"
		return nil
	}
	v, err := asString(raw)
	if err != nil {
		return &Error{Field: field, Msg: err.Error()}
	}
	u, err := url.Parse(v)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		return &Error{Field: field, Msg: "is not an absolute URL"}
	case u.User != nil:
		return &Error{Field: field, Msg: "must not carry credentials (user:password@)"}
	case u.Scheme != "https" || u.Port() != "" || !googleAPIRE.MatchString(u.Hostname()):
		return &Error{Field: field, Msg: fmt.Sprintf("must be https:// to a *.googleapis.com host (the broker hands out only Google's URLs), got host %q", u.Host)}
	case u.RawQuery != "" || u.Fragment != "":
		return &Error{Field: field, Msg: "must not have a query or fragment"}
	}
	s.BaseURL = v
	s.GoogleHost = u.Hostname()
	s.BaseVersion = u.EscapedPath()
	if !strings.HasSuffix(s.BaseVersion, "/") {
		s.BaseVersion += "/"
	}
	return nil
}

func loadAccount(dir, name string, raw json.RawMessage) (*account, error) {
	if !wire.ValidStoreName(name) {
		return nil, &Error{Account: name, Field: "GoogleCloudPlatform.Accounts",
			Msg: fmt.Sprintf("the name cannot be a broker account (rule %s; it is also the Orthanc DICOMweb server name): rename it", wire.StoreNameRule)}
	}
	obj, ok := subObject(raw)
	if !ok {
		return nil, &Error{Account: name, Field: "GoogleCloudPlatform.Accounts." + name, Msg: "must be a JSON object"}
	}
	if err := checkSection(obj, "the account", name, accountKeys); err != nil {
		return nil, err
	}
	a := &account{Name: name}
	for _, k := range sortedKeys(obj.members) {
		if !slices.Contains(accountKeys, k) {
			a.notes = append(a.notes, fmt.Sprintf("account %q: %s is not an option of the plugin; ignored", name, clip(k)))
		}
	}
	for _, f := range []struct {
		key  string
		dst  *string
		rule *regexp.Regexp
		want string
	}{
		{"Project", &a.Project, projectRE, "a project ID (6-30 lower-case letters, digits or '-', starting with a letter)"},
		{"Location", &a.Location, locationRE, "a location such as europe-west2"},
		{"Dataset", &a.Dataset, storePartRE, "a dataset ID (letters, digits, '_', '.', '-')"},
		{"DicomStore", &a.DicomStore, storePartRE, "a DICOM store ID (letters, digits, '_', '.', '-')"},
	} {
		v, present, err := stringField(obj, f.key)
		switch {
		case err != nil:
			return nil, &Error{Account: name, Field: f.key, Msg: err.Error()}
		case !present || v == "":
			return nil, &Error{Account: name, Field: f.key, Msg: "is missing (the plugin requires Project, Location, Dataset and DicomStore)"}
		case !f.rule.MatchString(v):
			return nil, &Error{Account: name, Field: f.key, Msg: fmt.Sprintf("%q is not %s", clip(v), f.want)}
		}
		*f.dst = v
	}

	var sources []string
	for _, k := range []string{fieldServiceAccountFile, fieldAuthorizedUserFile} {
		if _, ok := obj.members[k]; ok {
			sources = append(sources, k)
		}
	}
	var inline []string
	for _, k := range []string{fieldClientID, fieldClientSecret, fieldRefreshToken} {
		if _, ok := obj.members[k]; ok {
			inline = append(inline, k)
		}
	}
	if len(inline) > 0 {
		sources = append(sources, "AuthorizedUserClientId/ClientSecret/RefreshToken")
	}
	switch len(sources) {
	case 0:
		return nil, &Error{Account: name, Field: fieldServiceAccountFile,
			Msg: "no credential: set exactly one of ServiceAccountFile, AuthorizedUserFile, or the three AuthorizedUserClientId, AuthorizedUserClientSecret and AuthorizedUserRefreshToken"}
	case 1:
	default:
		return nil, &Error{Account: name, Field: strings.Split(sources[1], "/")[0],
			Msg: fmt.Sprintf("several credentials (%s): keep exactly one", strings.Join(sources, ", "))}
	}

	if len(inline) > 0 {
		if len(inline) < 3 {
			var missing []string
			for _, k := range []string{fieldClientID, fieldClientSecret, fieldRefreshToken} {
				if !slices.Contains(inline, k) {
					missing = append(missing, k)
				}
			}
			return nil, &Error{Account: name, Field: missing[0],
				Msg: fmt.Sprintf("is missing: an inline user credential needs all three AuthorizedUser fields (missing %s)", strings.Join(missing, ", "))}
		}
		c := &inlineCredential{}
		for _, f := range []struct {
			key string
			dst *string
		}{{fieldClientID, &c.ClientID}, {fieldClientSecret, &c.ClientSecret}, {fieldRefreshToken, &c.RefreshToken}} {
			v, _, err := stringField(obj, f.key)
			if err != nil {
				return nil, &Error{Account: name, Field: f.key, Msg: err.Error()}
			}
			if v == "" {
				return nil, &Error{Account: name, Field: f.key, Msg: "is empty"}
			}
			*f.dst = v
		}
		a.Source, a.inline = fieldClientID, c
		return a, nil
	}

	a.Source = sources[0]
	p, _, err := stringField(obj, a.Source)
	if err != nil {
		return nil, &Error{Account: name, Field: a.Source, Msg: err.Error()}
	}
	if p == "" {
		return nil, &Error{Account: name, Field: a.Source, Msg: "is empty"}
	}
	if strings.ContainsFunc(p, isControl) {
		return nil, &Error{Account: name, Field: a.Source, Msg: "the path contains control characters"}
	}
	a.Written = p
	a.Relative = !filepath.IsAbs(p)
	if a.Relative {
		p = filepath.Join(dir, p)
	}
	a.File = filepath.Clean(p)
	if err := a.checkCredentialFile(); err != nil {
		return nil, err
	}
	return a, nil
}

// checkCredentialFile reads the file to check its kind; the content is
// dropped at once and never quoted in an error.
func (a *account) checkCredentialFile() error {
	fail := func(format string, args ...any) error {
		return &Error{Account: a.Name, Field: a.Source, Msg: a.File + ": " + fmt.Sprintf(format, args...)}
	}
	data, err := readRegular(a.File, maxCredentialFile)
	if err != nil {
		return &Error{Account: a.Name, Field: a.Source, Msg: "cannot read the credential file: " + err.Error()}
	}
	obj, err := decodeObject(data)
	if err != nil {
		return fail("%s", describeJSONError(data, err))
	}
	if len(obj.dups) > 0 {
		return fail("the key %q appears more than once", clip(obj.dups[0]))
	}
	str := func(k string) string {
		v, _, err := stringField(obj, k)
		if err != nil {
			return ""
		}
		return v
	}
	typ, hasType, err := stringField(obj, "type")
	if err != nil {
		return fail("\"type\" %v", err)
	}
	userShaped := str("client_id") != "" && str("client_secret") != "" && str("refresh_token") != ""
	switch {
	case typ == "service_account":
		if a.Source != fieldServiceAccountFile {
			return fail("is a service_account key, not an authorized_user credential: name it in ServiceAccountFile")
		}
		if str("private_key") == "" || str("client_email") == "" {
			return fail("is a service_account document without private_key or client_email")
		}
		a.ClientEmail, a.KeyID = clip(str("client_email")), clip(str("private_key_id"))
	case typ == "authorized_user" || (!hasType && userShaped):
		// gcloud auth print-access-token --format json writes no "type".
		if a.Source != fieldAuthorizedUserFile {
			return fail("is an authorized_user credential, not a service-account key: name it in AuthorizedUserFile")
		}
		if !userShaped {
			return fail("is an authorized_user document without client_id, client_secret or refresh_token")
		}
	case hasType:
		return fail("has type %q; only service_account and authorized_user credentials can be migrated", clip(typ))
	default:
		return fail("is neither a service_account key nor an authorized_user credential (client_id, client_secret, refresh_token)")
	}
	if uri, present, _ := stringField(obj, "token_uri"); present && uri != "" {
		u, err := url.Parse(uri)
		if err != nil || !tokenURIAllowed(u) {
			return fail("its token_uri is not Google's token endpoint (https on oauth2.googleapis.com, accounts.google.com or *.googleapis.com); the broker would refuse it")
		}
	}
	return nil
}

// tokenURIAllowed is the broker's rule for where a credential's grant may go.
func tokenURIAllowed(u *url.URL) bool {
	host := u.Hostname()
	switch u.Scheme {
	case "https":
		return host == "accounts.google.com" || googleAPIRE.MatchString(host) || urlrule.IsLoopbackHost(host)
	case "http":
		return urlrule.IsLoopbackHost(host)
	}
	return false
}

func (s *site) orthanc(top object) error {
	m := top.members
	if raw, ok := m["HttpPort"]; ok {
		n, err := asInt(raw)
		if err != nil || n < 1 || n > 65535 {
			return &Error{Field: "HttpPort", Msg: "must be a port number (1-65535)"}
		}
		s.HTTPPort = int(n)
	}
	var err error
	if s.SSL, err = boolField(m, "SslEnabled", false); err != nil {
		return err
	}
	if raw, ok := m["HttpTimeout"]; ok {
		n, err := asInt(raw)
		if err != nil || n < 0 || n > 1<<31-1 {
			return &Error{Field: "HttpTimeout", Msg: "must be a whole number of seconds"}
		}
		s.HTTPTimeout = int(n)
	}
	verify, err := boolField(m, "HttpsVerifyPeers", true)
	if err != nil {
		return err
	}
	s.VerifyPeersOff = !verify
	if s.Verbose, err = boolField(m, "HttpVerbose", false); err != nil {
		return err
	}
	serverOn, err := boolField(m, "HttpServerEnabled", true)
	if err != nil {
		return err
	}
	s.HTTPServerOff = !serverOn
	authOn, err := boolField(m, "AuthenticationEnabled", true)
	if err != nil {
		return err
	}
	s.AuthDisabled = !authOn
	if raw, ok := m["RegisteredUsers"]; ok {
		users, ok := subObject(raw)
		if !ok {
			return &Error{Field: "RegisteredUsers", Msg: "must be a JSON object (user → password)"}
		}
		for _, u := range sortedKeys(users.members) {
			s.Users = append(s.Users, u)
		}
	}
	if raw, ok := m["Plugins"]; ok {
		var list []string
		if json.Unmarshal(raw, &list) == nil {
			s.Plugins = list
		}
	}
	if raw, ok := m["DicomWeb"]; ok {
		dw, ok := subObject(raw)
		if !ok {
			return &Error{Field: "DicomWeb", Msg: "must be a JSON object"}
		}
		for _, k := range dw.dups {
			if slices.Contains(dicomWebKeys, k) {
				return &Error{Field: "DicomWeb." + k, Msg: "is defined more than once; keep one"}
			}
		}
		s.Notes = append(s.Notes, nearMisses(dw, dicomWebKeys, "DicomWeb.")...)
		if raw, ok := dw.members["Root"]; ok {
			root, err := asString(raw)
			if err != nil {
				return &Error{Field: "DicomWeb.Root", Msg: err.Error()}
			}
			if root, err = normalizeRoot(root); err != nil {
				return &Error{Field: "DicomWeb.Root", Msg: err.Error()}
			}
			s.DicomWebRoot = root
		}
		if s.ServersInDatabase, err = boolField(dw.members, "ServersInDatabase", false); err != nil {
			err.(*Error).Field = "DicomWeb." + err.(*Error).Field
			return err
		}
		if raw, ok := dw.members["Servers"]; ok {
			if servers, ok := subObject(raw); ok {
				for _, a := range s.Accounts {
					if _, clash := servers.members[a.Name]; clash {
						s.StaticServers = append(s.StaticServers, a.Name)
					}
				}
			}
		}
	}
	return nil
}

// normalizeRoot is the agent's rule for Orthanc.DicomWebRoot.
func normalizeRoot(root string) (string, error) {
	if root == "" {
		return defaultDicomWebRoot, nil
	}
	if strings.ContainsAny(root, "?#") || strings.Contains(root, "..") || strings.ContainsFunc(root, isControl) {
		return "", fmt.Errorf("must be a plain path such as %q", defaultDicomWebRoot)
	}
	if !strings.HasPrefix(root, "/") {
		root = "/" + root
	}
	if !strings.HasSuffix(root, "/") {
		root += "/"
	}
	return root, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// clip makes a non-secret value fit for a message: no control characters,
// at most 80 bytes.
func clip(s string) string {
	s = strings.Map(func(r rune) rune {
		if isControl(r) {
			return '?'
		}
		return r
	}, s)
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// stringField is a member that Orthanc reads as a string: absent is fine,
// any other JSON type (null included) is an error, as it is for Orthanc.
func stringField(obj object, key string) (string, bool, error) {
	raw, ok := obj.members[key]
	if !ok {
		return "", false, nil
	}
	v, err := asString(raw)
	return v, true, err
}

func asString(raw json.RawMessage) (string, error) {
	var v string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &v) != nil {
		return "", fmt.Errorf("must be a string")
	}
	return v, nil
}

func asInt(raw json.RawMessage) (int64, error) {
	return strconv.ParseInt(string(raw), 10, 64)
}

func boolField(m map[string]json.RawMessage, key string, def bool) (bool, error) {
	raw, ok := m[key]
	if !ok {
		return def, nil
	}
	switch string(raw) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, &Error{Field: key, Msg: "must be true or false"}
}
