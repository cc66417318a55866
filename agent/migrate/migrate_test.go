package migrate

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestBookConfigurations: the three configurations of the Orthanc book's
// Google Cloud Platform plugin page, each with the credential file the page
// describes, migrate to the expected tfvars, script and agent configuration.
func TestBookConfigurations(t *testing.T) {
	t.Parallel()
	store := tfAccount{Project: "osimis-test", Location: "europe-west2", Dataset: "test", DicomStore: "dicom"}
	tests := []struct {
		name     string
		files    map[string]string
		mode     string
		secretID string
		script   string // the line that loads the secret (after the config dir is substituted for DIR)
		plan     []string
	}{
		{
			name:     "service-account",
			files:    map[string]string{"dicom-osimis.json": saKeyJSON("orthanc@osimis-test.iam.gserviceaccount.com")},
			mode:     "key",
			secretID: "ogb-my-google-sa-key",
			script:   `gcloud secrets versions add "${RESOURCE_PREFIX}-my-google-sa-key" --project="$BROKER_PROJECT" --data-file='DIR/dicom-osimis.json'`,
			plan: []string{"service_account key DIR/dicom-osimis.json (orthanc@osimis-test.iam.gserviceaccount.com, key id 0123456789abcdef0123456789abcdef01234567)",
				`mode "key", secret ogb-my-google-sa-key, store service account ogb-my-google`, "shred -u DIR/dicom-osimis.json"},
		},
		{
			name:     "user-file",
			files:    map[string]string{"dicom-osimis.json": gcloudUserJSON()},
			mode:     "authorized_user",
			secretID: "ogb-my-google-user-token",
			script:   `gcloud secrets versions add "${RESOURCE_PREFIX}-my-google-user-token" --project="$BROKER_PROJECT" --data-file='DIR/dicom-osimis.json'`,
			plan:     []string{"authorized_user file DIR/dicom-osimis.json", `mode "authorized_user", secret ogb-my-google-user-token`},
		},
		{
			name:     "user-inline",
			mode:     "authorized_user",
			secretID: "ogb-my-google-user-token",
			script: `credential=$('orthanc-gcp-agent' migrate --orthanc-config 'DIR/orthanc.json' --print-credential 'my-google')` + "\n" +
				`printf '%s' "$credential" | gcloud secrets versions add "${RESOURCE_PREFIX}-my-google-user-token" --project="$BROKER_PROJECT" --data-file=-`,
			plan: []string{"inline AuthorizedUserClientId/ClientSecret/RefreshToken", "my-google: its inline credential went with the GoogleCloudPlatform section in step 6"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := bookConfig(t, tc.name, tc.files)
			dir := filepath.Dir(cfg)
			out := filepath.Join(t.TempDir(), "migration")
			r := runOK(t, Options{OrthancConfig: cfg, OutDir: out, OS: "linux"}) // the Linux plan, on any system

			want := store
			want.Mode = tc.mode
			if got := r.tfvars["accounts"]; !reflect.DeepEqual(got, map[string]tfAccount{"my-google": want}) {
				t.Errorf("tfvars accounts = %+v, want my-google: %+v", got, want)
			}
			if line := inDir(tc.script, dir); !strings.Contains(r.script, line) {
				t.Errorf("load-secrets.sh lacks\n%s\n---\n%s", line, r.script)
			}
			if SecretID(DefaultResourcePrefix, "my-google", tc.mode) != tc.secretID {
				t.Errorf("SecretID = %q, want %q", SecretID(DefaultResourcePrefix, "my-google", tc.mode), tc.secretID)
			}
			for _, p := range append(tc.plan,
				"GoogleCloudPlatform.BaseUrl is not set, so the plugin used its default https://healthcare.googleapis.com/v1beta1/",
				`Plugins folders (".")`, "terraform apply", "load-secrets.sh", "enrol --config /etc/orthanc-gcp-agent/agent.json",
				"systemctl enable --now orthanc-gcp-agent", "Broker.Url     = the output of `terraform output -raw broker_url`") {
				if file, ok := strings.CutPrefix(p, "shred -u "); ok {
					p = "shred -u " + shellWord(inDir(file, dir)) // quoted when the path has a backslash
				}
				if p = inDir(p, dir); !strings.Contains(r.plan, p) {
					t.Errorf("plan lacks %q\n%s", p, r.plan)
				}
			}
			order := []string{"1. Terraform", "2. On this host", "3. Finish the agent", "4. Enrol", "5. Start the agent", "6. Remove the plugin", "7. Remove the credentials"}
			last := -1
			for _, step := range order {
				i := strings.Index(r.plan, step)
				if i <= last {
					t.Errorf("plan step %q out of order or missing", step)
				}
				last = i
			}
			noPlanted(t, "plan", r.plan)
			for _, v := range []string{"ZmssLNXXXXXX", "1/e2ngXXXXXX", "XXXXXXXXXX.apps.googleusercontent.com"} {
				for what, s := range map[string]string{"plan": r.plan, "script": r.script, "agent.json": string(r.agent)} {
					if strings.Contains(s, v) {
						t.Errorf("%s contains the book's inline credential value %q", what, v)
					}
				}
			}

			f, c := resolveAgent(t, r.agent)
			if f.Broker.Url != BrokerURLPlaceholder || f.Broker.AgentId != AgentIDPlaceholder {
				t.Errorf("without --broker-url/--agent-id the config holds %q/%q, want the placeholders", f.Broker.Url, f.Broker.AgentId)
			}
			if !reflect.DeepEqual(c.Accounts, []string{"my-google"}) || c.OrthancURL != "http://127.0.0.1:8042" || c.DicomWebRoot != "/dicom-web/" ||
				c.OrthancUsername != "" || !reflect.DeepEqual(c.AllowedDicomWebHosts, []string{"healthcare.googleapis.com"}) {
				t.Errorf("agent config = %+v", c)
			}
			if got := string(c.ServerOptions["HasDelete"]); got != "true" || len(c.ServerOptions) != 1 {
				t.Errorf("ServerOptions = %v, want only HasDelete true (the book sets no HttpTimeout)", c.ServerOptions)
			}
		})
	}
}

// TestBookInlinePrintCredential: the book's inline example prints exactly
// its three values as an authorized_user document, the one gcloud loads.
func TestBookInlinePrintCredential(t *testing.T) {
	t.Parallel()
	cfg := bookConfig(t, "user-inline", nil)
	out, err := printCredential(t, cfg, "my-google")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"authorized_user","client_id":"XXXXXXXXXX.apps.googleusercontent.com","client_secret":"ZmssLNXXXXXX","refresh_token":"1/e2ngXXXXXX"}`
	if out != want {
		t.Errorf("PrintCredential = %s\nwant %s", out, want)
	}
}

// TestPrintCredential covers the refusals: any output but a pipe (a
// regular file would keep the refresh token on disk), an unknown name, a
// file-based account, a broken configuration. Nothing reaches out then.
func TestPrintCredential(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"orthanc.json": `{"GoogleCloudPlatform": {"Accounts": {
			"Inline.User": {"Project": "osimis-test", "Location": "europe-west2", "Dataset": "d", "DicomStore": "s",
				"AuthorizedUserClientId": "id.apps.googleusercontent.com", "AuthorizedUserClientSecret": "` + plantedInlineSecret + `",
				"AuthorizedUserRefreshToken": "` + plantedInlineToken + `"},
			"sa": {"Project": "osimis-test", "Location": "europe-west2", "Dataset": "d", "DicomStore": "s", "ServiceAccountFile": "sa.json"},
			"user": {"Project": "osimis-test", "Location": "europe-west2", "Dataset": "d", "DicomStore": "s", "AuthorizedUserFile": "user.json"}}}}`,
		"sa.json":   saKeyJSON("sa@osimis-test.iam.gserviceaccount.com"),
		"user.json": adcUserJSON(),
		"bad.json":  `{"GoogleCloudPlatform": {"Accounts": {"x": {"Project": "osimis-test"}}}}`,
	})
	cfg := filepath.Join(dir, "orthanc.json")
	const refusedOutput = "only to a pipe, so it never lands on disk or screen; pipe it: … --print-credential NAME | gcloud secrets versions add"
	tests := []struct {
		name, config, account string
		// out is where it is printed: "" a pipe, "file" a regular file
		// (a shell's > redirect), "device" a character device as a
		// terminal is, "closed" a file that cannot be stat'ed, "nil".
		out            string
		want           string // output, or
		field, errPart string // the refusal
	}{
		{name: "inline", config: cfg, account: "Inline.User",
			want: `{"type":"authorized_user","client_id":"id.apps.googleusercontent.com","client_secret":"` + plantedInlineSecret + `","refresh_token":"` + plantedInlineToken + `"}`},
		{name: "regular file", config: cfg, account: "Inline.User", out: "file", field: "--print-credential", errPart: "to a regular file: it is written " + refusedOutput},
		{name: "terminal", config: cfg, account: "Inline.User", out: "device", field: "--print-credential", errPart: "to a terminal or device: it is written " + refusedOutput},
		{name: "closed file", config: cfg, account: "Inline.User", out: "closed", field: "--print-credential", errPart: "cannot be checked"},
		{name: "no file", config: cfg, account: "Inline.User", out: "nil", field: "--print-credential", errPart: "not a file"},
		{name: "unknown", config: cfg, account: "inline.user", field: "--print-credential", errPart: "no such account in GoogleCloudPlatform.Accounts (it has: Inline.User, sa, user)"},
		{name: "service-account file", config: cfg, account: "sa", field: "ServiceAccountFile", errPart: "load-secrets.sh loads directly"},
		{name: "authorized_user file", config: cfg, account: "user", field: "AuthorizedUserFile", errPart: "only inline AuthorizedUserClientId"},
		{name: "bad config", config: filepath.Join(dir, "bad.json"), account: "x", field: "Location", errPart: "is missing"},
		{name: "no config", config: filepath.Join(dir, "none.json"), account: "x", field: "--orthanc-config", errPart: notFound(t)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out string
			var err error
			switch tc.out {
			case "":
				out, err = printCredential(t, tc.config, tc.account)
			case "file", "closed":
				path := filepath.Join(t.TempDir(), "credential.json")
				f, ferr := os.Create(path)
				if ferr != nil {
					t.Fatal(ferr)
				}
				if tc.out == "closed" {
					f.Close()
				}
				err = PrintCredential(tc.config, tc.account, f)
				f.Close()
				data, rerr := os.ReadFile(path)
				if rerr != nil {
					t.Fatal(rerr)
				}
				out = string(data)
			case "device":
				null, ferr := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
				if ferr != nil {
					t.Fatal(ferr)
				}
				err = PrintCredential(tc.config, tc.account, null)
				null.Close()
			case "nil":
				err = PrintCredential(tc.config, tc.account, nil)
			}
			if tc.errPart == "" {
				if err != nil || out != tc.want {
					t.Fatalf("PrintCredential = %q, %v; want %q", out, err, tc.want)
				}
				return
			}
			var me *Error
			if !errors.As(err, &me) || me.Field != tc.field || !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("PrintCredential error = %v (%#v), want field %q and %q", err, me, tc.field, tc.errPart)
			}
			if out != "" {
				t.Errorf("refused, yet wrote %d bytes", len(out))
			}
			noPlanted(t, "error", err.Error())
		})
	}
}

// TestIsPipe: only a pipe is one; a regular file, a character device (here
// /dev/null, as a terminal is one), a closed file and nil are not.
func TestIsPipe(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	closed, _ := os.Create(filepath.Join(t.TempDir(), "closed"))
	closed.Close()
	for _, tc := range []struct {
		name string
		f    *os.File
		want bool
	}{{"pipe (write end)", w, true}, {"pipe (read end)", r, true}, {"regular file", f, false},
		{"character device", null, false}, {"closed file", closed, false}, {"nil", nil, false}} {
		if got := IsPipe(tc.f); got != tc.want {
			t.Errorf("IsPipe(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestResourceIDVectors: ResourceID derives what the terraform module
// derives, on the vectors terraform/tests/naming.tftest.hcl checks too.
func TestResourceIDVectors(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("..", "..", "terraform", "tests", "naming_vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Vectors []struct{ Name, ID string }
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Vectors) < 10 {
		t.Fatalf("only %d vectors", len(doc.Vectors))
	}
	seen := map[string]string{}
	for _, v := range doc.Vectors {
		if got := ResourceID(v.Name); got != v.ID {
			t.Errorf("ResourceID(%q) = %q, want %q (naming_vectors.json)", v.Name, got, v.ID)
		}
		if prev, dup := seen[v.ID]; dup {
			t.Errorf("%q and %q share the id %q", prev, v.Name, v.ID)
		}
		seen[v.ID] = v.Name
	}
}

// TestResourceIDRule: every name the broker accepts gets a valid service
// account id with the shortest and the longest resource_prefix, names that
// were valid before keep their id, and normalising collisions get apart.
func TestResourceIDRule(t *testing.T) {
	t.Parallel()
	long := "A" + strings.Repeat("b.C_d-", 10) + "xy" // 63 characters
	if len(long) != 63 {
		t.Fatalf("len = %d", len(long))
	}
	tests := []struct {
		name, want string // want "" = hashed (only the shape is checked)
	}{
		{"my-google", "my-google"},
		{"abc", "abc"},
		{"abcdefghij-klmnopqrs", "abcdefghij-klmnopqrs"},
		{"My.Store", "my-store-7329d7b8"},
		{"my_store", "my-store-e30d617d"},
		{"my-store", "my-store"},
		{"CAPITALS", ""},
		{"dots.in.name", ""},
		{"under_score", ""},
		{long, ""},
		{"0", ""},
		{"a-", ""},
		{"x.-_y", "x---y-acbe5402"},
	}
	for _, tc := range tests {
		got := ResourceID(tc.name)
		if tc.want != "" && got != tc.want {
			t.Errorf("ResourceID(%q) = %q, want %q", tc.name, got, tc.want)
		}
		for _, prefix := range []string{"ab", "abcdefgh"} {
			if sa := prefix + "-" + got; !projectRE.MatchString(sa) { // the service account id rule is the project id rule
				t.Errorf("service account id %q (name %q) is not 6-30 [a-z0-9-] starting with a letter", sa, tc.name)
			}
		}
	}
	if ResourceID("My.Store") == ResourceID("my_store") || ResourceID("My.Store") == ResourceID("my-store") {
		t.Error("names that normalise alike share an id")
	}
}
