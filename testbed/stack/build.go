package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Binaries are the paths of the broker and agent executables.
type Binaries struct {
	Broker, Agent string
}

// BinariesIn returns the paths Build writes into dir.
func BinariesIn(dir string) Binaries {
	return Binaries{Broker: filepath.Join(dir, "broker"), Agent: filepath.Join(dir, "agent")}
}

// Exist reports whether both files are present.
func (b Binaries) Exist() bool {
	for _, p := range []string{b.Broker, b.Agent} {
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return false
		}
	}
	return true
}

// ModuleRoot finds the directory of this module's go.mod, starting at the
// working directory and going up.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/orthanc-gcp-broker/orthanc-gcp-broker\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("stack: go.mod of github.com/orthanc-gcp-broker/orthanc-gcp-broker not found above the working directory")
		}
		dir = parent
	}
}

// Build compiles ./cmd/broker and ./cmd/agent into dir with the go tool.
func Build(ctx context.Context, dir string) (Binaries, error) {
	root, err := ModuleRoot()
	if err != nil {
		return Binaries{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Binaries{}, err
	}
	b := BinariesIn(dir)
	for _, t := range []struct{ pkg, out string }{{"./cmd/broker", b.Broker}, {"./cmd/agent", b.Agent}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", t.out, t.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, fmt.Errorf("stack: go build %s: %v\n%s", t.pkg, err, out)
		}
	}
	return b, nil
}
