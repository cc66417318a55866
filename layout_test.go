package function

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
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
