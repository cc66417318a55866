package tfcheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/tools/tfschema/cdktf"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/tools/tfschema/mirror"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/tools/tfschema/schema"
)

var (
	cliConfig string           // TF_CLI_CONFIG_FILE for the mirror
	derived   *schema.Provider // what tfschema derived
	terraform string
	moduleDir = filepath.Join("..", "..", "..", "terraform")
)

func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tfcheck:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	pkg := os.Getenv("TFSCHEMA_PACKAGE")
	if pkg == "" {
		return 0, fmt.Errorf("TFSCHEMA_PACKAGE is not set: run `make tfschema-test`, which fetches the CDKTF package")
	}
	var err error
	if terraform, err = exec.LookPath("terraform"); err != nil {
		return 0, fmt.Errorf("terraform not on PATH (CI's machine image has /usr/local/bin/terraform): %w", err)
	}
	tmp, err := os.MkdirTemp("", "tfcheck")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "terraform-provider-google")
	build := exec.Command("go", "build", "-o", bin, "../cmd/terraform-provider-google")
	if out, err := build.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("building the provider: %v\n%s", err, out)
	}
	f, err := os.Open(pkg)
	if err != nil {
		return 0, err
	}
	p, info, err := cdktf.ReadPackage(f, nil)
	f.Close()
	if err != nil {
		return 0, err
	}
	derived = p
	cliConfig, err = mirror.Install(filepath.Join(tmp, "mirror"), mirror.Provider{
		Hostname: "registry.terraform.io", Namespace: "hashicorp", Type: "google",
		Version: info.ProviderVersion, Platform: runtime.GOOS + "_" + runtime.GOARCH,
	}, bin, p)
	if err != nil {
		return 0, err
	}
	return m.Run(), nil
}

// tf runs terraform in dir with the mirror's CLI configuration.
func tf(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(terraform, append([]string{"-chdir=" + dir}, args...)...)
	cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE="+cliConfig, "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// copyModule copies terraform/ (module and examples) without local state.
func copyModule(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "terraform")
	err := filepath.WalkDir(moduleDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(moduleDir, path)
		if d.IsDir() && d.Name() == ".terraform" {
			return filepath.SkipDir
		}
		if d.Name() == ".terraform.lock.hcl" {
			return nil
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func validate(t *testing.T, dir string) (string, error) {
	t.Helper()
	if out, err := tf(t, dir, "init", "-backend=false", "-no-color"); err != nil {
		t.Fatalf("terraform init: %v\n%s", err, out)
	}
	return tf(t, dir, "validate", "-no-color")
}

func TestPristineModuleValidates(t *testing.T) {
	dir := copyModule(t)
	for _, d := range []string{dir, filepath.Join(dir, "examples")} {
		out, err := validate(t, d)
		if err != nil || !strings.Contains(out, "The configuration is valid") {
			t.Errorf("%s: %v\n%s", d, err, out)
		}
	}
}

// Each case breaks a copy of the module one way and expects validate to fail
// with Terraform's message for exactly that mistake.
func TestValidateCatchesMistakes(t *testing.T) {
	cases := []struct {
		name     string
		file     string
		old, new string
		want     []string
	}{
		{
			name: "misspelled argument",
			file: "main.tf", old: `display_name = "Orthanc GCP broker"`, new: `dispaly_name = "Orthanc GCP broker"`,
			want: []string{"Error: Unsupported argument", `An argument named "dispaly_name" is not expected here. Did you mean "display_name"?`},
		},
		{
			name: "missing required argument",
			file: "main.tf", old: "  role               = \"roles/iam.serviceAccountTokenCreator\"\n", new: "",
			want: []string{"Error: Missing required argument", `The argument "role" is required, but no definition was found.`},
		},
		{
			name: "missing required nested block",
			file: "main.tf", old: "  replication {\n    auto {}\n  }\n\n  depends_on = [google_project_service.apis]\n}\n\nresource \"google_secret_manager_secret_iam_member\" \"credential\"",
			new:  "  depends_on = [google_project_service.apis]\n}\n\nresource \"google_secret_manager_secret_iam_member\" \"credential\"",
			want: []string{"Error: Insufficient replication blocks", `At least 1 "replication" blocks are required.`},
		},
		{
			name: "block over its max items",
			file: "main.tf", old: "    scaling {\n", new: "    scaling {\n      min_instance_count = 0\n    }\n    scaling {\n",
			want: []string{"Error: Too many scaling blocks", `No more than 1 "scaling" blocks are allowed`},
		},
		{
			name: "misspelled nested block",
			file: "main.tf", old: "startup_probe {", new: "startup_prob {",
			want: []string{"Error: Unsupported block type", `Blocks of type "startup_prob" are not expected here. Did you mean "startup_probe"?`},
		},
		{
			name: "wrong attribute type",
			file: "main.tf", old: "max_instance_request_concurrency = 80", new: `max_instance_request_concurrency = "lots"`,
			want: []string{"Error: Incorrect attribute value type", `Inappropriate value for attribute "max_instance_request_concurrency": a number is required.`},
		},
		{
			name: "misspelled resource type",
			file: "main.tf", old: `resource "google_service_account_iam_member" "token_creator"`, new: `resource "google_service_acount_iam_member" "token_creator"`,
			want: []string{"Error: Invalid resource type", `The provider hashicorp/google does not support resource type "google_service_acount_iam_member".`},
		},
		{
			name: "unknown exported attribute",
			file: "outputs.tf", old: "google_cloud_run_v2_service.broker.uri", new: "google_cloud_run_v2_service.broker.url",
			want: []string{"Error: Unsupported attribute", `This object has no argument, nested block, or exported attribute named "url".`},
		},
		{
			name: "computed-only attribute set",
			file: "main.tf", old: `display_name = "Orthanc GCP broker"`, new: `email = "x@example.com"`,
			want: []string{"Error: Value for unconfigurable attribute", `Can't configure a value for "email"`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := copyModule(t)
			path := filepath.Join(dir, tc.file)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(b, []byte(tc.old)) {
				t.Fatalf("%s no longer contains %q: update the test", tc.file, tc.old)
			}
			if err := os.WriteFile(path, bytes.Replace(b, []byte(tc.old), []byte(tc.new), 1), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := validate(t, dir)
			if err == nil {
				t.Fatalf("validate passed on a broken module:\n%s", out)
			}
			flat := strings.Join(strings.Fields(out), " ")
			for _, w := range tc.want {
				if !strings.Contains(flat, strings.Join(strings.Fields(w), " ")) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// What Terraform reports through `providers schema -json` must be exactly
// what was derived, for every type the module uses.
func TestServedSchemaEqualsDerived(t *testing.T) {
	dir := copyModule(t)
	if out, err := tf(t, dir, "init", "-backend=false", "-no-color"); err != nil {
		t.Fatalf("init: %v\n%s", err, out)
	}
	out, err := tf(t, dir, "providers", "schema", "-json")
	if err != nil {
		t.Fatalf("providers schema: %v\n%s", err, out)
	}
	var served struct {
		ProviderSchemas map[string]schema.Provider `json:"provider_schemas"`
	}
	if err := json.Unmarshal([]byte(out), &served); err != nil {
		t.Fatal(err)
	}
	got, ok := served.ProviderSchemas["registry.terraform.io/hashicorp/google"]
	if !ok {
		t.Fatalf("no google provider schema in %v", served.ProviderSchemas)
	}
	norm := func(v any) any {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var out any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	used := []string{
		"google_project_service", "google_service_account", "google_healthcare_dicom_store_iam_member",
		"google_service_account_iam_member", "google_secret_manager_secret", "google_secret_manager_secret_iam_member",
		"google_secret_manager_secret_version", "google_cloud_run_v2_service",
	}
	for _, name := range used {
		if !reflect.DeepEqual(norm(got.Resources[name].Block), norm(derived.Resources[name].Block)) {
			t.Errorf("%s: served schema differs from derived", name)
		}
	}
	if !reflect.DeepEqual(norm(got.DataSources["google_project"].Block), norm(derived.DataSources["google_project"].Block)) {
		t.Errorf("data google_project: served schema differs from derived")
	}
	if !reflect.DeepEqual(norm(got.Provider.Block), norm(derived.Provider.Block)) {
		t.Errorf("provider block: served schema differs from derived")
	}
	if len(got.Resources) != len(derived.Resources) || len(got.Resources) < 1000 {
		t.Errorf("served %d resource types, derived %d", len(got.Resources), len(derived.Resources))
	}
}

// Spot checks against facts about google provider 6.50.0 that anyone can read
// in its documentation, so a derivation bug cannot pass unnoticed.
func TestDerivedFacts(t *testing.T) {
	r := derived.Resources
	attr := func(typ, name string) *schema.Attribute {
		t.Helper()
		s, ok := r[typ]
		if !ok {
			t.Fatalf("no resource %s", typ)
		}
		a, ok := s.Block.Attributes[name]
		if !ok {
			t.Fatalf("%s has no attribute %s", typ, name)
		}
		return a
	}
	cases := []struct {
		name string
		got  *schema.Attribute
		want string
	}{
		{"service account account_id is required", attr("google_service_account", "account_id"), `{"type":"string","required":true}`},
		{"service account email is computed", attr("google_service_account", "email"), `{"type":"string","computed":true}`},
		{"project is optional+computed", attr("google_service_account", "project"), `{"type":"string","optional":true,"computed":true}`},
		{"secret version data is optional", attr("google_secret_manager_secret_version", "secret_data"), `{"type":"string","optional":true}`},
		{"cloud run labels are a string map", attr("google_cloud_run_v2_service", "labels"), `{"type":["map","string"],"optional":true}`},
		{"cloud run uri is computed", attr("google_cloud_run_v2_service", "uri"), `{"type":"string","computed":true}`},
	}
	for _, tc := range cases {
		b, _ := json.Marshal(tc.got)
		var g, w any
		json.Unmarshal(b, &g)
		json.Unmarshal([]byte(tc.want), &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: got %s, want %s", tc.name, b, tc.want)
		}
	}
	tmpl := r["google_cloud_run_v2_service"].Block.BlockTypes["template"]
	if tmpl == nil || tmpl.NestingMode != schema.NestingList || tmpl.MinItems != 1 || tmpl.MaxItems != 1 {
		t.Errorf("cloud run template block: %+v, want list with exactly one", tmpl)
	}
	repl := r["google_secret_manager_secret"].Block.BlockTypes["replication"]
	if repl == nil || repl.MinItems != 1 || repl.MaxItems != 1 || repl.Block.BlockTypes["auto"] == nil {
		t.Errorf("secret replication block: %+v", repl)
	}
	if _, ok := r["google_service_account_key"]; !ok {
		t.Errorf("google_service_account_key missing from derived schema (it exists in 6.50.0)")
	}
}
