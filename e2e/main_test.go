package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/stack"
)

// bins are the broker and agent binaries, built once for every test.
var bins stack.Binaries

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	bins, err = stack.Build(ctx, dir)
	cancel()
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
