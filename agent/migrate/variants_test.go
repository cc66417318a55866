package migrate

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestVariants: configurations sites write beyond the book's minimal ones.
func TestVariants(t *testing.T) {
	t.Parallel()
	sa := saKeyJSON("sa@osimis-test.iam.gserviceaccount.com")
	tests := []struct {
		name  string
		files map[string]string // "orthanc.json" (or a directory "etc/") is the configuration
		cfg   string            // the --orthanc-config, relative to the temp dir; default orthanc.json
		opts  Options
		check func(t *testing.T, dir string, r result)
	}{
		{
			name: "comments of both kinds, also inside strings",
			files: map[string]string{"sa.json": sa, "orthanc.json": "// Orthanc configuration\r\n{\r\n" +
				"  /* the plugin */ \"GoogleCloudPlatform\" /* : */ : {\n" +
				"    \"BaseUrl\" : \"https://healthcare.googleapis.com/v1/\", // v1, not the plugin's default\n" +
				"    \"Accounts\": { // one account\n" +
				"      \"my-google\" : {\n" +
				"        \"Project\" : \"osimis-test\", \"Location\" : \"europe-west2\",\n" +
				"        \"Dataset\" : \"test\", \"Note\" : \"/*not a comment*/ // nor this\",\n" +
				"        \"DicomStore\" : \"dicom\", \"ServiceAccountFile\" : \"sa.json\" /* relative */\n" +
				"      }\n    }\n  },\n" +
				"  \"Name\" : \"with \\\"// quotes\\\" and /* inside */ a string\", // trailing\n" +
				"  \"HttpTimeout\" : 600 /* seconds */\n}\n// the end, no newline after"},
			check: func(t *testing.T, dir string, r result) {
				if got := r.tfvars["accounts"]["my-google"]; got.Dataset != "test" || got.Mode != "key" {
					t.Errorf("account = %+v", got)
				}
				if !strings.Contains(r.plan, `account "my-google": Note is not an option of the plugin; ignored`) {
					t.Errorf("plan does not report the ignored option:\n%s", r.plan)
				}
				if strings.Contains(r.plan, "v1beta1") {
					t.Errorf("BaseUrl v1 still warns about v1beta1:\n%s", r.plan)
				}
				_, c := resolveAgent(t, r.agent)
				if string(c.ServerOptions["Timeout"]) != "600" {
					t.Errorf("ServerOptions.Timeout = %s, want HttpTimeout 600", c.ServerOptions["Timeout"])
				}
			},
		},
		{
			name: "several accounts, names with capitals, dots and underscores, relative and absolute paths",
			files: map[string]string{
				"etc/orthanc/orthanc.json": `{
					"GoogleCloudPlatform": {"Accounts": {
						` + acct("My.Store", `, "ServiceAccountFile": "keys/sa.json"`) + `,
						` + acct("my_store", `, "AuthorizedUserFile": "../shared/user.json"`) + `,
						` + acct("my-store", `, "ServiceAccountFile": "ABS/etc/orthanc/keys/sa.json"`) + `,
						` + acct("Radiology_CT.main", inlineCred) + `}}}`,
				"etc/orthanc/keys/sa.json": sa,
				"etc/shared/user.json":     adcUserJSON(),
			},
			cfg: "etc/orthanc/orthanc.json",
			check: func(t *testing.T, dir string, r result) {
				want := map[string]string{"My.Store": "key", "my_store": "authorized_user", "my-store": "key", "Radiology_CT.main": "authorized_user"}
				got := map[string]string{}
				for n, a := range r.tfvars["accounts"] {
					got[n] = a.Mode
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("modes = %v, want %v", got, want)
				}
				for _, line := range []string{
					`gcloud secrets versions add "${RESOURCE_PREFIX}-my-store-7329d7b8-sa-key" --project="$BROKER_PROJECT" --data-file='` + filepath.Join(dir, "etc/orthanc/keys/sa.json") + `'`,
					`gcloud secrets versions add "${RESOURCE_PREFIX}-my-store-e30d617d-user-token" --project="$BROKER_PROJECT" --data-file='` + filepath.Join(dir, "etc/shared/user.json") + `'`,
					`gcloud secrets versions add "${RESOURCE_PREFIX}-my-store-sa-key" --project="$BROKER_PROJECT" --data-file='` + filepath.Join(dir, "etc/orthanc/keys/sa.json") + `'`,
					`--print-credential 'Radiology_CT.main')`,
					`"${RESOURCE_PREFIX}-radiology-c-6bbc73c8-user-token"`,
				} {
					if !strings.Contains(r.script, line) {
						t.Errorf("load-secrets.sh lacks %s\n%s", line, r.script)
					}
				}
				for _, p := range []string{`account "My.Store": ServiceAccountFile "keys/sa.json" is relative; it was read as ` + filepath.Join(dir, "etc/orthanc/keys/sa.json"),
					`account "my_store": AuthorizedUserFile "../shared/user.json" is relative`, "secret ogb-my-store-7329d7b8-sa-key, store service account ogb-my-store-7329d7b8",
					"(accounts My.Store, Radiology_CT.main, my-store, my_store)"} {
					if !strings.Contains(r.plan, p) {
						t.Errorf("plan lacks %q\n%s", p, r.plan)
					}
				}
				if strings.Contains(r.plan, `account "my-store": ServiceAccountFile`) {
					t.Error("an absolute path is reported as relative")
				}
				_, c := resolveAgent(t, r.agent)
				if !reflect.DeepEqual(c.Accounts, []string{"My.Store", "Radiology_CT.main", "my-store", "my_store"}) {
					t.Errorf("Accounts = %v", c.Accounts)
				}
			},
		},
		{
			name: "Orthanc options and every warning",
			files: map[string]string{"sa.json": sa, "orthanc.json": `{
				"HttpPort": 8043, "SslEnabled": true, "HttpTimeout": 900,
				"HttpsVerifyPeers": false, "HttpVerbose": true,
				"RegisteredUsers": {"admin": "` + plantedPassword + `", "gcp-agent": "` + plantedPassword + `"},
				"Plugins": ["/usr/share/orthanc/plugins", "/usr/local/share/orthanc/plugins"],
				"DicomWeb": {"Enable": true, "Root": "dicom-web2", "ServersInDatabase": true, "Servers": {"my-google": ["https://x/"]}},
				"GoogleCloudPlatform": {"BaseUrl": "https://europe-west4-healthcare.googleapis.com/v1beta1", "RefreshInterval": 30, "Extra": 1,
					"Accounts": {` + acct("my-google", saCred) + `}}}`},
			check: func(t *testing.T, dir string, r result) {
				for _, p := range []string{
					"HttpsVerifyPeers is false", "HttpVerbose is true", "DicomWeb.ServersInDatabase is true: Orthanc stores its DICOMweb servers, bearer tokens included, in clear text",
					`BaseUrl "https://europe-west4-healthcare.googleapis.com/v1beta1" is Healthcare API v1beta1`,
					`healthcare_base_url = "https://europe-west4-healthcare.googleapis.com/v1/"`,
					"SslEnabled is true", `DicomWeb.Servers also defines "my-google"`,
					"GoogleCloudPlatform.RefreshInterval is not carried over", "GoogleCloudPlatform.Extra is not an option of the plugin",
					`Orthanc.Username "gcp-agent", chosen from RegisteredUsers (admin, gcp-agent)`,
					"into /etc/orthanc-gcp-agent/orthanc.password", "curl -u gcp-agent -X DELETE https://127.0.0.1:8043/dicom-web2/servers/my-google",
					`Plugins folders ("/usr/share/orthanc/plugins", "/usr/local/share/orthanc/plugins")`, "HttpTimeout 900 s",
				} {
					if !strings.Contains(r.plan, p) {
						t.Errorf("plan lacks %q\n%s", p, r.plan)
					}
				}
				f, c := resolveAgent(t, r.agent)
				if c.OrthancURL != "https://127.0.0.1:8043" || c.DicomWebRoot != "/dicom-web2/" || c.OrthancUsername != "gcp-agent" ||
					!reflect.DeepEqual(c.AllowedDicomWebHosts, []string{"europe-west4-healthcare.googleapis.com"}) || string(c.ServerOptions["Timeout"]) != "900" {
					t.Errorf("agent config = %+v", c)
				}
				if f.Orthanc.PasswordFile != AgentPasswordFile {
					t.Errorf("PasswordFile = %q", f.Orthanc.PasswordFile)
				}
			},
		},
		{
			name: "first user when none is the agent's, and a directory configuration",
			files: map[string]string{
				"etc/orthanc.json": `{"HttpPort": 8044, "RegisteredUsers": {"zed": "` + plantedPassword + `", "alice": "` + plantedPassword + `"}}`,
				"etc/gcp.json":     `/* GCP */ {"GoogleCloudPlatform": {"Accounts": {` + acct("my-google", `, "AuthorizedUserFile": "user.json"`) + `}}}`,
				"etc/user.json":    gcloudUserJSON(),
				"etc/notes.txt":    "not JSON, not read",
			},
			cfg: "etc",
			check: func(t *testing.T, dir string, r result) {
				_, c := resolveAgent(t, r.agent)
				if c.OrthancUsername != "alice" || c.OrthancURL != "http://127.0.0.1:8044" {
					t.Errorf("agent config = %+v", c)
				}
				if !strings.Contains(r.script, "--data-file='"+filepath.Join(dir, "etc/user.json")+"'") {
					t.Errorf("relative path not resolved against the configuration directory:\n%s", r.script)
				}
				if !strings.Contains(r.plan, "Migration of the Google Cloud Platform plugin configured in "+filepath.Join(dir, "etc")+"\n") {
					t.Errorf("plan:\n%s", r.plan)
				}
			},
		},
		{
			// The book's "Advanced options" excerpt on top of its service-account example.
			name: "book advanced options",
			files: map[string]string{"dicom-osimis.json": sa, "orthanc.json": `{
    "HttpsCACertificates": "/etc/ssl/certs/ca-certificates.crt",
    "Plugins" : [ "." ],
    // In seconds, must be large enough to send/receive your largest studies
    // using WADO or STOW, depending on the speed of your Internet connection
    "HttpTimeout" : 600,

    "GoogleCloudPlatform" : {
      "Accounts": {
        "my-google" : {
          "Project" : "osimis-test",
          "Location" : "europe-west2",
          "Dataset" : "test",
          "DicomStore" : "dicom",
          "ServiceAccountFile" : "dicom-osimis.json"
        }
      },
       // Path to the URL of the GCP services
      "BaseUrl" : "https://healthcare.googleapis.com/v1beta1/"
    }
  }`},
			check: func(t *testing.T, dir string, r result) {
				if !strings.Contains(r.plan, `GoogleCloudPlatform.BaseUrl "https://healthcare.googleapis.com/v1beta1/" is Healthcare API v1beta1 (the plugin's old default). The broker hands out v1 URLs`) {
					t.Errorf("plan:\n%s", r.plan)
				}
				_, c := resolveAgent(t, r.agent)
				if string(c.ServerOptions["Timeout"]) != "600" || !reflect.DeepEqual(c.AllowedDicomWebHosts, []string{"healthcare.googleapis.com"}) {
					t.Errorf("agent config = %+v", c)
				}
			},
		},
		{
			name:  "authentication disabled",
			files: map[string]string{"sa.json": sa, "orthanc.json": `{"AuthenticationEnabled": false, "RegisteredUsers": {"alice": "` + plantedPassword + `"}, "GoogleCloudPlatform": {"Accounts": {` + acct("my-google", saCred) + `}}}`},
			check: func(t *testing.T, dir string, r result) {
				f, _ := resolveAgent(t, r.agent)
				if f.Orthanc.Username != "" || f.Orthanc.PasswordFile != "" {
					t.Errorf("Orthanc = %+v, want no user", f.Orthanc)
				}
				if !strings.Contains(r.plan, "AuthenticationEnabled is false") {
					t.Errorf("plan:\n%s", r.plan)
				}
			},
		},
		{
			name:  "broker URL and agent id given",
			files: map[string]string{"sa.json": sa, "orthanc.json": gcp(acct("my-google", saCred))},
			opts:  Options{BrokerURL: "https://orthanc-gcp-broker-123456789012.europe-west2.run.app", AgentID: "clinic-a", AgentCommand: "/usr/local/bin/orthanc-gcp-agent"},
			check: func(t *testing.T, dir string, r result) {
				f, _ := resolveAgent(t, r.agent)
				if f.Broker.Url != "https://orthanc-gcp-broker-123456789012.europe-west2.run.app" || f.Broker.AgentId != "clinic-a" {
					t.Errorf("Broker = %+v", f.Broker)
				}
				if strings.Contains(r.plan, "FILL") || strings.Contains(r.plan, "Broker.Url     =") {
					t.Errorf("plan asks for what was given:\n%s", r.plan)
				}
				if !strings.Contains(r.plan, "sudo -u orthanc-gcp-agent /usr/local/bin/orthanc-gcp-agent enrol") {
					t.Errorf("plan does not use AgentCommand:\n%s", r.plan)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			files := map[string]string{}
			for k, v := range tc.files {
				// JSON strings: forward slashes, which Windows takes too.
				files[k] = strings.ReplaceAll(v, `"ABS/`, `"`+filepath.ToSlash(dir)+`/`)
			}
			writeTree(t, dir, files)
			o := tc.opts
			if o.OS == "" {
				o.OS = "linux" // the Linux plan, on any system
			}
			o.OrthancConfig = filepath.Join(dir, tc.cfg)
			if tc.cfg == "" {
				o.OrthancConfig = filepath.Join(dir, "orthanc.json")
			}
			o.OutDir = filepath.Join(t.TempDir(), "out")
			r := runOK(t, o)
			noPlanted(t, "plan", r.plan)
			noPlanted(t, "load-secrets.sh", r.script)
			noPlanted(t, "agent.json", string(r.agent))
			tc.check(t, dir, r)
		})
	}
}

// TestStripComments: comments go, strings stay, positions are kept.
func TestStripComments(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want, err string }{
		{in: `{"a": 1} // x`, want: `{"a": 1}     `},
		{in: "{\"a\": 1, // x\n\"b\": 2}", want: "{\"a\": 1,     \n\"b\": 2}"},
		{in: `{"url": "https://x/y"}`, want: `{"url": "https://x/y"}`},
		{in: `{"a": "/* no */"}`, want: `{"a": "/* no */"}`},
		{in: `{"a": "\"// no"}`, want: `{"a": "\"// no"}`},
		{in: `{"a": "\\"} // yes`, want: `{"a": "\\"}       `},
		{in: "/* a\nb */{}", want: "    \n    {}"},
		{in: `{"a": 1 /* x */ }`, want: `{"a": 1         }`},
		{in: `{} /`, want: `{} /`},
		{in: `{}/**/`, want: `{}    `},
		{in: `{} /* open`, err: "line 1, column 4: comment /* is never closed"},
	}
	for _, tc := range tests {
		got, err := stripComments([]byte(tc.in))
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("stripComments(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("stripComments(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestNoSecretInOutput: with every kind of credential planted (a private
// key, client secrets, refresh tokens, an access token, an Orthanc
// password), none appears in the output directory, on stdout or on stderr.
// Not parallel: it captures the process's stderr.
func TestNoSecretInOutput(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"orthanc.json": `{"RegisteredUsers": {"gcp-agent": "` + plantedPassword + `"}, "DicomWeb": {"ServersInDatabase": true},
			"GoogleCloudPlatform": {"Accounts": {` + acct("sa", saCred) + `, ` + acct("user", userCred) + `, ` + acct("adc", `, "AuthorizedUserFile": "adc.json"`) + `, ` + acct("inline", inlineCred) + `}}}`,
		"sa.json":   saKeyJSON("sa@osimis-test.iam.gserviceaccount.com"),
		"user.json": gcloudUserJSON(),
		"adc.json":  adcUserJSON(),
	})
	cfg := filepath.Join(dir, "orthanc.json")
	out := filepath.Join(t.TempDir(), "out")

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	var stdout bytes.Buffer
	runErr := Run(Options{OrthancConfig: cfg, OutDir: out}, &stdout)
	// The refusals speak too.
	var refusals []string
	for _, name := range []string{"sa", "user", "adc", "nope"} {
		got, err := printCredential(t, cfg, name)
		stdout.WriteString(got)
		if err != nil {
			refusals = append(refusals, err.Error())
		}
	}
	if err := PrintCredential(cfg, "inline", nil); err != nil {
		refusals = append(refusals, err.Error())
	}
	os.Stderr = saved
	w.Close()
	var stderr bytes.Buffer
	if _, err := stderr.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	if runErr != nil {
		t.Fatal(runErr)
	}
	if len(refusals) != 5 {
		t.Errorf("refusals = %v", refusals)
	}
	noPlanted(t, "stdout", stdout.String())
	noPlanted(t, "stderr", stderr.String())
	noPlanted(t, "errors", strings.Join(refusals, "\n"))
	entries, err := os.ReadDir(out)
	if err != nil || len(entries) != 3 {
		t.Fatalf("output directory: %v %v", entries, err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(out, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		noPlanted(t, e.Name(), string(data))
	}
	// Sanity: the fixture does carry the secrets, and the one sanctioned
	// path (a pipe) prints the inline ones.
	if cred, err := printCredential(t, cfg, "inline"); err != nil || !strings.Contains(cred, plantedInlineSecret) || !strings.Contains(cred, plantedInlineToken) {
		t.Errorf("PrintCredential(inline) = %q, %v", cred, err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "sa.json"))
	if !strings.Contains(string(raw), plantedKeyBody) {
		t.Fatal("fixture lacks the planted key")
	}
	var me *Error
	if _, err := printCredential(t, cfg, "sa"); !errors.As(err, &me) {
		t.Errorf("PrintCredential(sa) = %v", err)
	}
}
