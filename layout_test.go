package function

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestProductDoesNotImportTestBed keeps what ships apart from the test bed:
// no product package (the broker, the agent, their binaries, the Cloud
// Functions entry and the internal packages they share) may depend on
// testbed/..., directly or through another package. Tests may.
func TestProductDoesNotImportTestBed(t *testing.T) {
	const module = "github.com/orthanc-gcp-broker/orthanc-gcp-broker"
	product := []string{".", "./broker/...", "./agent/...", "./cmd/broker", "./cmd/agent", "./internal/..."}
	out, err := exec.Command("go", append([]string{"list", "-deps", "-json=ImportPath,Imports"}, product...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(p.ImportPath, module) {
			continue
		}
		seen++
		if strings.HasPrefix(p.ImportPath, module+"/testbed") {
			t.Errorf("the product depends on test-bed package %s", p.ImportPath)
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module+"/testbed") {
				t.Errorf("%s imports test-bed package %s", p.ImportPath, imp)
			}
		}
	}
	if seen < 10 {
		t.Fatalf("go list found only %d product packages; the check would prove nothing", seen)
	}
}

// repoPath is a path into the folders that build, ship, check and document
// the project, as Makefiles, scripts, CI and docs name them from the
// repository root: "packaging/build-deb.sh", "$root/deploy/image-check.sh",
// "./scripts/demo.sh". One inside another path ("bin/tools/...") is not one.
// It stops at anything that is not a plain path character, so
// "$(PKG_DIST)/..." and "<version>" end it.
var repoPath = regexp.MustCompile(`(?:^|[^A-Za-z0-9_./-]|\$root/|\./)((?:deploy|docs|mk|packaging|scripts)/[A-Za-z0-9_./-]*)`)

// TestReferencedPathsExist keeps what builds, ships, tests and documents the
// project pointing at files that exist: a path moved (deploy/ -> packaging/)
// must be renamed everywhere make, CI, the scripts and the docs name it.
func TestReferencedPathsExist(t *testing.T) {
	files := []string{"Makefile", ".ci/run", ".ko.yaml", "cloudbuild.yaml", "README.md",
		"testbed/README.md", "packaging/nfpm.yaml", "packaging/docker-compose.yml"}
	for _, glob := range []string{"mk/*.mk", "docs/*.md", "deploy/*.sh", "packaging/*.sh",
		"packaging/scripts/*", "packaging/systemd/*", "scripts/*.sh"} {
		m, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		if len(m) == 0 {
			t.Errorf("%s matches nothing", glob)
		}
		files = append(files, m...)
	}
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, m := range repoPath.FindAllStringSubmatch(line, -1) {
				p := strings.TrimRight(m[1], ".")
				checked++
				if _, err := os.Stat(p); err != nil {
					t.Errorf("%s:%d names %s, which does not exist", f, i+1, p)
				}
			}
		}
	}
	if checked < 40 {
		t.Fatalf("only %d paths found in %d files; the check would prove nothing", checked, len(files))
	}
}
