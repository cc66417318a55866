package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

type cloudBuild struct {
	Substitutions map[string]string `yaml:"substitutions"`
	Options       map[string]any    `yaml:"options"`
	Steps         []struct {
		ID         string   `yaml:"id"`
		Name       string   `yaml:"name"`
		Entrypoint string   `yaml:"entrypoint"`
		Args       []string `yaml:"args"`
		Env        []string `yaml:"env"`
		WaitFor    []string `yaml:"waitFor"`
	} `yaml:"steps"`
}

var (
	reRule   = regexp.MustCompile(`^([A-Za-z0-9_./%$(){}-]+(?:[ \t]+[A-Za-z0-9_./%$(){}-]+)*)[ \t]*::?(?:[^=]|$)`)
	reAssign = regexp.MustCompile(`^[A-Za-z0-9_.-]+[ \t]*(?:[:+?!]?=|::=)`)
	reSubst  = regexp.MustCompile(`\$\{?(_[A-Z0-9_]+)\}?`)
	reGoPath = regexp.MustCompile(`(?:^|\s)(\./cmd/[A-Za-z0-9_/-]+)`)
)

// makeRules parses make files into target -> recipe lines. It understands what
// this repository uses: explicit rules, `.PHONY`, tab-indented recipes.
func makeRules(files ...string) (map[string][]string, error) {
	rules := map[string][]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var current []string
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "\t") {
				for _, t := range current {
					rules[t] = append(rules[t], strings.TrimSpace(line))
				}
				continue
			}
			current = nil
			trimmed := strings.TrimSpace(line)
			if trimmed == "" || strings.HasPrefix(trimmed, "#") || reAssign.MatchString(line) {
				continue
			}
			if m := reRule.FindStringSubmatch(line); m != nil {
				for _, t := range strings.Fields(m[1]) {
					if strings.HasPrefix(t, ".") { // .PHONY and friends
						continue
					}
					if _, ok := rules[t]; !ok {
						rules[t] = nil
					}
					current = append(current, t)
				}
			}
		}
	}
	return rules, nil
}

func TestMakeRules(t *testing.T) {
	dir := t.TempDir()
	mk := filepath.Join(dir, "x.mk")
	os.WriteFile(mk, []byte(`# comment: not a rule
VAR := a:b
OTHER ?= x
.PHONY: one two
one two: dep
	echo both
three:
	deploy/run.sh --flag
	go build ./cmd/thing
$(BIN)/%: src
	go build -o $@
`), 0o644)
	rules, err := makeRules(mk)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range rules {
		names = append(names, n)
	}
	sort.Strings(names)
	if got := strings.Join(names, ","); got != "$(BIN)/%,one,three,two" {
		t.Fatalf("targets %s", got)
	}
	if got := strings.Join(rules["three"], "|"); got != "deploy/run.sh --flag|go build ./cmd/thing" {
		t.Errorf("recipe of three: %s", got)
	}
	if len(rules["one"]) != 1 || len(rules["two"]) != 1 {
		t.Errorf("shared recipe: %v %v", rules["one"], rules["two"])
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestCloudBuildStepsAreMakeTargets(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "cloudbuild.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cb cloudBuild
	if err := yaml.Unmarshal(b, &cb); err != nil {
		t.Fatalf("cloudbuild.yaml: %v", err)
	}
	if len(cb.Steps) < 3 {
		t.Fatalf("want test, image and deploy steps, got %d", len(cb.Steps))
	}
	files := []string{filepath.Join(root, "Makefile")}
	mks, _ := filepath.Glob(filepath.Join(root, "mk", "*.mk"))
	files = append(files, mks...)
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%v (cloudbuild steps must map to make targets)", err)
		}
	}
	rules, err := makeRules(files...)
	if err != nil {
		t.Fatal(err)
	}

	ids := map[string]bool{}
	usedSubst := map[string]bool{}
	for i, s := range cb.Steps {
		if s.ID == "" || s.Name == "" {
			t.Errorf("step %d: needs id and name (image)", i)
		}
		ids[s.ID] = true
		for _, w := range s.WaitFor {
			if w != "-" && !ids[w] {
				t.Errorf("step %s waits for %q, not an earlier step", s.ID, w)
			}
		}
		for _, field := range append(append([]string{s.Name, s.Entrypoint}, s.Args...), s.Env...) {
			for _, m := range reSubst.FindAllStringSubmatch(field, -1) {
				usedSubst[m[1]] = true
				if _, ok := cb.Substitutions[m[1]]; !ok {
					t.Errorf("step %s uses %s, not declared in substitutions", s.ID, m[1])
				}
			}
		}

		var recipe []string
		switch s.Entrypoint {
		case "make":
			if len(s.Args) == 0 {
				t.Errorf("step %s: make without a target", s.ID)
				continue
			}
			target := s.Args[0]
			r, ok := rules[target]
			if !ok {
				t.Errorf("step %s: make target %q is not defined in Makefile or mk/*.mk", s.ID, target)
				continue
			}
			recipe = r
		case "bash", "sh":
			if len(s.Args) == 0 {
				t.Errorf("step %s: %s without a script", s.ID, s.Entrypoint)
				continue
			}
			script := s.Args[0]
			if fi, err := os.Stat(filepath.Join(root, script)); err != nil || fi.Mode()&0o111 == 0 {
				t.Errorf("step %s: script %s missing or not executable", s.ID, script)
			}
			// The same script must be reachable locally through make.
			found := false
			for target, lines := range rules {
				for _, l := range lines {
					if strings.Contains(l, script) {
						found = true
						t.Logf("step %s runs %s, also `make %s`", s.ID, script, target)
					}
				}
			}
			if !found {
				t.Errorf("step %s: no make target runs %s", s.ID, script)
			}
			recipe = []string{strings.Join(s.Args, " ")}
		default:
			t.Errorf("step %s: entrypoint %q: use make (or bash with a script a make target also runs)", s.ID, s.Entrypoint)
		}

		// Go packages the step builds must exist.
		for _, l := range recipe {
			for _, m := range reGoPath.FindAllStringSubmatch(l, -1) {
				if fi, err := os.Stat(filepath.Join(root, m[1])); err != nil || !fi.IsDir() {
					t.Errorf("step %s builds %s, which does not exist", s.ID, m[1])
				}
			}
		}
	}
	for name := range cb.Substitutions {
		if !usedSubst[name] {
			t.Errorf("substitution %s declared but unused (Cloud Build rejects that)", name)
		}
	}
	for _, want := range []string{"test", "image", "deploy"} {
		if !ids[want] {
			t.Errorf("no %q step", want)
		}
	}
}

// .ko.yaml builds the broker and the agent from packages that exist,
// statically, on a non-root distroless base by default.
func TestKoConfig(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, ".ko.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var ko struct {
		DefaultBaseImage string `yaml:"defaultBaseImage"`
		Builds           []struct {
			ID   string   `yaml:"id"`
			Main string   `yaml:"main"`
			Env  []string `yaml:"env"`
		} `yaml:"builds"`
	}
	if err := yaml.Unmarshal(b, &ko); err != nil {
		t.Fatal(err)
	}
	if ko.DefaultBaseImage != "gcr.io/distroless/static:nonroot" {
		t.Errorf("defaultBaseImage %q", ko.DefaultBaseImage)
	}
	want := map[string]string{"broker": "./cmd/broker", "agent": "./cmd/agent"}
	if len(ko.Builds) != len(want) {
		t.Fatalf("builds: %+v, want %v", ko.Builds, want)
	}
	for _, bd := range ko.Builds {
		if want[bd.ID] != bd.Main {
			t.Errorf("build %q: main %q, want %q", bd.ID, bd.Main, want[bd.ID])
		}
		if fi, err := os.Stat(filepath.Join(root, bd.Main)); err != nil || !fi.IsDir() {
			t.Errorf("build %s: main %s does not exist", bd.ID, bd.Main)
		}
		if !strings.Contains(strings.Join(bd.Env, " "), "CGO_ENABLED=0") {
			t.Errorf("build %s: env %v lacks CGO_ENABLED=0", bd.ID, bd.Env)
		}
	}
}

// No key material may be managed by Terraform (it would land in the state).
func TestTerraformHoldsNoKeys(t *testing.T) {
	root := repoRoot(t)
	files, _ := filepath.Glob(filepath.Join(root, "terraform", "*.tf"))
	ex, _ := filepath.Glob(filepath.Join(root, "terraform", "examples", "*.tf"))
	files = append(files, ex...)
	if len(files) < 4 {
		t.Fatalf("terraform files: %v", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, banned := range []string{`resource "google_service_account_key"`, "private_key", "refresh_token"} {
			if strings.Contains(string(b), banned) {
				t.Errorf("%s contains %q", f, banned)
			}
		}
	}
}
