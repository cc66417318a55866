package migrate

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// acct is one account of a test configuration, with the store fields set.
func acct(name, creds string) string {
	return `"` + name + `": {"Project": "osimis-test", "Location": "europe-west2", "Dataset": "test", "DicomStore": "dicom"` + creds + `}`
}

func gcp(accounts ...string) string {
	return `{"GoogleCloudPlatform": {"Accounts": {` + strings.Join(accounts, ",") + `}}}`
}

const (
	saCred     = `, "ServiceAccountFile": "sa.json"`
	userCred   = `, "AuthorizedUserFile": "user.json"`
	inlineCred = `, "AuthorizedUserClientId": "id.apps.googleusercontent.com", "AuthorizedUserClientSecret": "` + plantedInlineSecret + `", "AuthorizedUserRefreshToken": "` + plantedInlineToken + `"`
)

// TestRefusals: every bad input is refused with an *Error naming the
// account and the field, no planted secret in the message, and nothing
// written: no output directory, no temporary one, nothing changed next to
// the configuration.
func TestRefusals(t *testing.T) {
	t.Parallel()
	goodFiles := map[string]string{"sa.json": saKeyJSON("sa@osimis-test.iam.gserviceaccount.com"), "user.json": gcloudUserJSON()}
	tests := []struct {
		name    string
		config  string            // orthanc.json
		files   map[string]string // more files next to it (goodFiles when nil)
		opts    func(*Options)
		account string
		field   string
		msg     string
	}{
		{name: "malformed JSON", config: `{"GoogleCloudPlatform": {"Accounts": {` + acct("a", inlineCred) + `}}`, field: "--orthanc-config", msg: "is not valid JSON"},
		{name: "malformed next to a secret", config: `{"GoogleCloudPlatform": {"Accounts": {"a": {"AuthorizedUserClientSecret": "` + plantedInlineSecret + `" "x": 1}}}}`, field: "--orthanc-config", msg: "line 1, column"},
		{name: "unclosed comment", config: "{\n/* never closed\n" + gcp(acct("a", saCred))[1:], field: "--orthanc-config", msg: "line 2, column 1: comment /* is never closed"},
		{name: "trailing data", config: gcp(acct("a", saCred)) + ` {}`, field: "--orthanc-config", msg: "has data after the JSON object"},
		{name: "not an object", config: `["GoogleCloudPlatform"]`, field: "--orthanc-config", msg: "is not a JSON object"},
		{name: "empty file", config: ``, field: "--orthanc-config", msg: "is not valid JSON"},
		{name: "no GoogleCloudPlatform section", config: `{"HttpPort": 8042, "DicomWeb": {"Enable": true}}`, field: "GoogleCloudPlatform", msg: "section is missing"},
		{name: "section not an object", config: `{"GoogleCloudPlatform": []}`, field: "GoogleCloudPlatform", msg: "must be a JSON object"},
		{name: "no Accounts", config: `{"GoogleCloudPlatform": {"BaseUrl": "https://healthcare.googleapis.com/v1/"}}`, field: "GoogleCloudPlatform.Accounts", msg: "is missing"},
		{name: "empty Accounts", config: gcp(), field: "GoogleCloudPlatform.Accounts", msg: "is empty"},
		{name: "Accounts not an object", config: `{"GoogleCloudPlatform": {"Accounts": ["a"]}}`, field: "GoogleCloudPlatform.Accounts", msg: "must be a JSON object"},
		{name: "account not an object", config: gcp(`"a": "sa.json"`), account: "a", field: "GoogleCloudPlatform.Accounts.a", msg: "must be a JSON object"},
		{name: "account twice", config: gcp(acct("a", saCred), acct("a", userCred)), account: "a", field: "GoogleCloudPlatform.Accounts", msg: "defined more than once"},
		{name: "name outside the broker's rule", config: gcp(acct("../evil", saCred)), account: "../evil", field: "GoogleCloudPlatform.Accounts", msg: "cannot be a broker account"},
		{name: "64-character name", config: gcp(acct(strings.Repeat("a", 64), saCred)), account: strings.Repeat("a", 64), field: "GoogleCloudPlatform.Accounts", msg: "cannot be a broker account"},
		{name: "missing Project", config: gcp(`"a": {"Location": "l", "Dataset": "d", "DicomStore": "s", "ServiceAccountFile": "sa.json"}`), account: "a", field: "Project", msg: "is missing"},
		{name: "missing Location", config: gcp(`"a": {"Project": "osimis-test", "Dataset": "d", "DicomStore": "s", "ServiceAccountFile": "sa.json"}`), account: "a", field: "Location", msg: "is missing"},
		{name: "missing Dataset", config: gcp(`"a": {"Project": "osimis-test", "Location": "l", "DicomStore": "s", "ServiceAccountFile": "sa.json"}`), account: "a", field: "Dataset", msg: "is missing"},
		{name: "missing DicomStore", config: gcp(`"a": {"Project": "osimis-test", "Location": "l", "Dataset": "d", "ServiceAccountFile": "sa.json"}`), account: "a", field: "DicomStore", msg: "is missing"},
		{name: "empty DicomStore", config: gcp(`"a": {"Project": "osimis-test", "Location": "l", "Dataset": "d", "DicomStore": "", "ServiceAccountFile": "sa.json"}`), account: "a", field: "DicomStore", msg: "is missing"},
		{name: "Project not a string", config: gcp(`"a": {"Project": 42, "Location": "l", "Dataset": "d", "DicomStore": "s", "ServiceAccountFile": "sa.json"}`), account: "a", field: "Project", msg: "must be a string"},
		{name: "Project null", config: gcp(`"a": {"Project": null, "Location": "l", "Dataset": "d", "DicomStore": "s", "ServiceAccountFile": "sa.json"}`), account: "a", field: "Project", msg: "must be a string"},
		{name: "Project not an ID", config: gcp(`"a": {"Project": "Osimis_Test", "Location": "l", "Dataset": "d", "DicomStore": "s", "ServiceAccountFile": "sa.json"}`), account: "a", field: "Project", msg: "is not a project ID"},
		{name: "DicomStore with a slash", config: gcp(`"a": {"Project": "osimis-test", "Location": "l", "Dataset": "d", "DicomStore": "s/../x", "ServiceAccountFile": "sa.json"}`), account: "a", field: "DicomStore", msg: "is not a DICOM store ID"},
		{name: "no credential", config: gcp(acct("a", "")), account: "a", field: "ServiceAccountFile", msg: "no credential"},
		{name: "two files", config: gcp(acct("a", saCred+userCred)), account: "a", field: "AuthorizedUserFile", msg: "several credentials (ServiceAccountFile, AuthorizedUserFile)"},
		{name: "file and inline", config: gcp(acct("a", saCred+inlineCred)), account: "a", field: "AuthorizedUserClientId", msg: "several credentials"},
		{name: "inline without refresh token", config: gcp(acct("a", `, "AuthorizedUserClientId": "id", "AuthorizedUserClientSecret": "`+plantedInlineSecret+`"`)), account: "a", field: "AuthorizedUserRefreshToken", msg: "missing AuthorizedUserRefreshToken"},
		{name: "inline refresh token only", config: gcp(acct("a", `, "AuthorizedUserRefreshToken": "`+plantedInlineToken+`"`)), account: "a", field: "AuthorizedUserClientId", msg: "missing AuthorizedUserClientId, AuthorizedUserClientSecret"},
		{name: "inline empty secret", config: gcp(acct("a", `, "AuthorizedUserClientId": "id", "AuthorizedUserClientSecret": "", "AuthorizedUserRefreshToken": "`+plantedInlineToken+`"`)), account: "a", field: "AuthorizedUserClientSecret", msg: "is empty"},
		{name: "inline secret not a string", config: gcp(acct("a", `, "AuthorizedUserClientId": "id", "AuthorizedUserClientSecret": ["`+plantedInlineSecret+`"], "AuthorizedUserRefreshToken": "t"`)), account: "a", field: "AuthorizedUserClientSecret", msg: "must be a string"},
		{name: "option in the wrong case", config: gcp(acct("a", `, "AuthorizedUserfile": "user.json"`)), account: "a", field: "AuthorizedUserfile", msg: `matches the option "AuthorizedUserFile" only case-insensitively`},
		{name: "option twice", config: gcp(acct("a", saCred+saCred)), account: "a", field: "ServiceAccountFile", msg: "defined more than once"},
		{name: "missing credential file", config: gcp(acct("a", `, "ServiceAccountFile": "missing.json"`)), account: "a", field: "ServiceAccountFile", msg: "cannot read the credential file"},
		{name: "credential file is a directory", config: gcp(acct("a", `, "ServiceAccountFile": "keys"`)), files: map[string]string{"keys/x": "x"}, account: "a", field: "ServiceAccountFile", msg: "is not a regular file"},
		{name: "credential path with a newline", config: gcp(acct("a", `, "ServiceAccountFile": "sa.json\nrm -rf /"`)), account: "a", field: "ServiceAccountFile", msg: "control characters"},
		{name: "credential file not JSON", config: gcp(acct("a", saCred)), files: map[string]string{"sa.json": plantedPEM}, account: "a", field: "ServiceAccountFile", msg: "is not valid JSON"},
		{name: "credential file is an array", config: gcp(acct("a", saCred)), files: map[string]string{"sa.json": `["` + plantedKeyBody + `"]`}, account: "a", field: "ServiceAccountFile", msg: "is not a JSON object"},
		{name: "external_account", config: gcp(acct("a", saCred)), files: map[string]string{"sa.json": `{"type": "external_account", "audience": "//iam", "token_url": "https://evil.example/token"}`}, account: "a", field: "ServiceAccountFile", msg: `has type "external_account"`},
		{name: "neither kind", config: gcp(acct("a", userCred)), files: map[string]string{"user.json": `{"client_id": "x", "refresh_token": "` + plantedRefreshToken + `"}`}, account: "a", field: "AuthorizedUserFile", msg: "is neither a service_account key nor an authorized_user credential"},
		{name: "user file in ServiceAccountFile", config: gcp(acct("a", `, "ServiceAccountFile": "user.json"`)), account: "a", field: "ServiceAccountFile", msg: "is an authorized_user credential, not a service-account key: name it in AuthorizedUserFile"},
		{name: "typed user file in ServiceAccountFile", config: gcp(acct("a", saCred)), files: map[string]string{"sa.json": adcUserJSON()}, account: "a", field: "ServiceAccountFile", msg: "is an authorized_user credential"},
		{name: "key in AuthorizedUserFile", config: gcp(acct("a", `, "AuthorizedUserFile": "sa.json"`)), account: "a", field: "AuthorizedUserFile", msg: "is a service_account key, not an authorized_user credential: name it in ServiceAccountFile"},
		{name: "key without private_key", config: gcp(acct("a", saCred)), files: map[string]string{"sa.json": `{"type": "service_account", "client_email": "x@y"}`}, account: "a", field: "ServiceAccountFile", msg: "without private_key or client_email"},
		{name: "typed user without refresh_token", config: gcp(acct("a", userCred)), files: map[string]string{"user.json": `{"type": "authorized_user", "client_id": "x", "client_secret": "` + plantedClientSecret + `"}`}, account: "a", field: "AuthorizedUserFile", msg: "without client_id, client_secret or refresh_token"},
		{name: "token_uri elsewhere", config: gcp(acct("a", userCred)), files: map[string]string{"user.json": `{"type": "authorized_user", "client_id": "x", "client_secret": "` + plantedClientSecret + `", "refresh_token": "` + plantedRefreshToken + `", "token_uri": "https://evil.example/token"}`}, account: "a", field: "AuthorizedUserFile", msg: "token_uri is not Google's"},
		{name: "credential with duplicate key", config: gcp(acct("a", userCred)), files: map[string]string{"user.json": `{"client_id": "x", "client_secret": "s", "refresh_token": "t", "refresh_token": "u"}`}, account: "a", field: "AuthorizedUserFile", msg: `the key "refresh_token" appears more than once`},
		{name: "second account bad", config: gcp(acct("good", saCred), acct("zz", `, "ServiceAccountFile": "missing.json"`)), account: "zz", field: "ServiceAccountFile", msg: "cannot read"},
		{name: "BaseUrl not Google", config: `{"GoogleCloudPlatform": {"BaseUrl": "https://proxy.example.org/v1/", "Accounts": {` + acct("a", saCred) + `}}}`, field: "GoogleCloudPlatform.BaseUrl", msg: "*.googleapis.com"},
		{name: "BaseUrl http", config: `{"GoogleCloudPlatform": {"BaseUrl": "http://healthcare.googleapis.com/v1/", "Accounts": {` + acct("a", saCred) + `}}}`, field: "GoogleCloudPlatform.BaseUrl", msg: "must be https://"},
		{name: "BaseUrl with credentials", config: `{"GoogleCloudPlatform": {"BaseUrl": "https://u:` + plantedPassword + `@healthcare.googleapis.com/v1/", "Accounts": {` + acct("a", saCred) + `}}}`, field: "GoogleCloudPlatform.BaseUrl", msg: "must not carry credentials"},
		{name: "BaseUrl not a string", config: `{"GoogleCloudPlatform": {"BaseUrl": true, "Accounts": {` + acct("a", saCred) + `}}}`, field: "GoogleCloudPlatform.BaseUrl", msg: "must be a string"},
		{name: "section option in the wrong case", config: `{"GoogleCloudPlatform": {"baseUrl": "https://healthcare.googleapis.com/v1/", "Accounts": {` + acct("a", saCred) + `}}}`, field: "baseUrl", msg: "only case-insensitively"},
		{name: "HttpPort a string", config: `{"HttpPort": "8042", "GoogleCloudPlatform": {"Accounts": {` + acct("a", saCred) + `}}}`, field: "HttpPort", msg: "port number"},
		{name: "HttpPort out of range", config: `{"HttpPort": 70000, "GoogleCloudPlatform": {"Accounts": {` + acct("a", saCred) + `}}}`, field: "HttpPort", msg: "port number"},
		{name: "HttpTimeout negative", config: `{"HttpTimeout": -1, "GoogleCloudPlatform": {"Accounts": {` + acct("a", saCred) + `}}}`, field: "HttpTimeout", msg: "whole number"},
		{name: "SslEnabled a string", config: `{"SslEnabled": "yes", "GoogleCloudPlatform": {"Accounts": {` + acct("a", saCred) + `}}}`, field: "SslEnabled", msg: "true or false"},
		{name: "HttpPort twice", config: `{"HttpPort": 8042, "HttpPort": 8043, "GoogleCloudPlatform": {"Accounts": {` + acct("a", saCred) + `}}}`, field: "HttpPort", msg: "defined more than once"},
		{name: "DicomWeb.Root with ..", config: `{"DicomWeb": {"Root": "/../system"}, "GoogleCloudPlatform": {"Accounts": {` + acct("a", saCred) + `}}}`, field: "DicomWeb.Root", msg: "plain path"},
		{name: "ServersInDatabase a string", config: `{"DicomWeb": {"ServersInDatabase": "true"}, "GoogleCloudPlatform": {"Accounts": {` + acct("a", saCred) + `}}}`, field: "DicomWeb.ServersInDatabase", msg: "true or false"},
		{name: "RegisteredUsers not an object", config: `{"RegisteredUsers": ["admin"], "GoogleCloudPlatform": {"Accounts": {` + acct("a", saCred) + `}}}`, field: "RegisteredUsers", msg: "must be a JSON object"},
		{name: "bad --agent-id", config: gcp(acct("a", saCred)), opts: func(o *Options) { o.AgentID = "clinic a" }, field: "--agent-id", msg: "terraform module's rule for agent ids"},
		{name: "bad --broker-url", config: gcp(acct("a", saCred)), opts: func(o *Options) { o.BrokerURL = "http://broker.example.org" }, field: "--broker-url", msg: "must use https"},
		{name: "--broker-url with a password", config: gcp(acct("a", saCred)), opts: func(o *Options) { o.BrokerURL = "https://u:" + plantedPassword + "@broker.example.org" }, field: "--broker-url", msg: "must not carry credentials"},
		{name: "no --out", config: gcp(acct("a", saCred)), opts: func(o *Options) { o.OutDir = "" }, field: "--out", msg: "is required"},
		{name: "no --orthanc-config", config: gcp(acct("a", saCred)), opts: func(o *Options) { o.OrthancConfig = "" }, field: "--orthanc-config", msg: "is required"},
		{name: "missing configuration", config: gcp(acct("a", saCred)), opts: func(o *Options) { o.OrthancConfig += ".missing" }, field: "--orthanc-config", msg: notFound(t)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfgDir := t.TempDir()
			files := tc.files
			if files == nil {
				files = goodFiles
			}
			all := map[string]string{"orthanc.json": tc.config}
			for k, v := range goodFiles {
				all[k] = v
			}
			for k, v := range files {
				all[k] = v
			}
			writeTree(t, cfgDir, all)
			parent := t.TempDir()
			o := Options{OrthancConfig: filepath.Join(cfgDir, "orthanc.json"), OutDir: filepath.Join(parent, "out")}
			if tc.opts != nil {
				tc.opts(&o)
			}
			before := listTree(t, cfgDir)
			var stdout bytes.Buffer
			err := Run(o, &stdout)
			var me *Error
			if !errors.As(err, &me) {
				t.Fatalf("Run = %v, want an *Error", err)
			}
			if me.Account != tc.account || me.Field != tc.field || !strings.Contains(me.Msg, tc.msg) {
				t.Errorf("Run error = %v\n(account %q field %q), want account %q field %q and %q", err, me.Account, me.Field, tc.account, tc.field, tc.msg)
			}
			if tc.account != "" && !strings.Contains(err.Error(), `account "`+tc.account+`"`) {
				t.Errorf("error %q does not name the account", err)
			}
			noPlanted(t, "error", err.Error())
			if stdout.Len() != 0 {
				t.Errorf("refused, yet printed: %s", stdout.String())
			}
			if entries, _ := os.ReadDir(parent); len(entries) != 0 {
				t.Errorf("refused, yet wrote next to the output directory: %v", entries)
			}
			if after := listTree(t, cfgDir); !slices.Equal(before, after) {
				t.Errorf("the configuration's directory changed:\n%v\n%v", before, after)
			}
		})
	}
}

// TestOutDir: a new directory (its parent existing) or an empty one is
// used; anything else is refused before the configuration is even read,
// and an existing directory is never touched.
func TestOutDir(t *testing.T) {
	t.Parallel()
	cfgDir := t.TempDir()
	writeTree(t, cfgDir, map[string]string{"orthanc.json": gcp(acct("a", saCred)), "sa.json": saKeyJSON("sa@osimis-test.iam.gserviceaccount.com")})
	cfg := filepath.Join(cfgDir, "orthanc.json")
	tests := []struct {
		name  string
		setup func(t *testing.T, parent string) string // returns --out
		msg   string                                   // "" = accepted
	}{
		{"new", func(t *testing.T, p string) string { return filepath.Join(p, "out") }, ""},
		{"existing empty", func(t *testing.T, p string) string {
			d := filepath.Join(p, "out")
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			return d
		}, ""},
		{"relative", func(t *testing.T, p string) string {
			if wd := mustGetwd(t); filepath.VolumeName(wd) != filepath.VolumeName(p) {
				t.Skipf("no relative path leads from the working directory %s to %s, on another drive", wd, p)
			}
			rel, err := filepath.Rel(mustGetwd(t), filepath.Join(p, "out"))
			if err != nil {
				t.Fatal(err)
			}
			return rel
		}, ""},
		{"existing non-empty", func(t *testing.T, p string) string {
			writeTree(t, p, map[string]string{"out/agent.json": "{}"})
			return filepath.Join(p, "out")
		}, "exists and is not empty"},
		{"existing hidden file", func(t *testing.T, p string) string {
			writeTree(t, p, map[string]string{"out/.keep": ""})
			return filepath.Join(p, "out")
		}, "exists and is not empty"},
		{"a file", func(t *testing.T, p string) string {
			writeTree(t, p, map[string]string{"out": "x"})
			return filepath.Join(p, "out")
		}, "is not a directory"},
		{"a symlink", func(t *testing.T, p string) string {
			if err := os.Mkdir(filepath.Join(p, "target"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(p, "target"), filepath.Join(p, "out")); err != nil {
				if runtime.GOOS == "windows" {
					t.Skipf("making a symbolic link needs SeCreateSymbolicLinkPrivilege or developer mode on Windows: %v", err)
				}
				t.Fatal(err)
			}
			fi, err := os.Lstat(filepath.Join(p, "out"))
			if err != nil && runtime.GOOS == "windows" {
				// wine's CreateSymbolicLink succeeds, but its link cannot be opened or stat'ed
				t.Skipf("the new symbolic link cannot be seen (wine): %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&os.ModeSymlink == 0 {
				t.Fatalf("the new symbolic link has mode %v", fi.Mode())
			}
			return filepath.Join(p, "out")
		}, "is not a directory"},
		{"no parent", func(t *testing.T, p string) string { return filepath.Join(p, "a", "b") }, "does not exist"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			parent := t.TempDir()
			out := tc.setup(t, parent)
			before := listTree(t, parent)
			var stdout bytes.Buffer
			err := Run(Options{OrthancConfig: cfg, OutDir: out}, &stdout)
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				abs, _ := filepath.Abs(out)
				checkModes(t, abs)
				if entries, _ := os.ReadDir(parent); len(entries) != 1 {
					t.Errorf("parent holds %v, want only the output directory (no temporary left)", entries)
				}
				return
			}
			var me *Error
			if !errors.As(err, &me) || me.Field != "--out" || !strings.Contains(me.Msg, tc.msg) {
				t.Fatalf("Run = %v, want --out: %q", err, tc.msg)
			}
			if after := listTree(t, parent); !slices.Equal(before, after) {
				t.Errorf("refused, yet changed:\n%v\n%v", before, after)
			}
		})
	}
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}
