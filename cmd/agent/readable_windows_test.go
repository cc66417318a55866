package main

import (
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/winacl"
)

// makeWorldReadable lets others read path: on Windows, where mode bits
// mean nothing, an entry granting Everyone read (which wine keeps too).
func makeWorldReadable(t *testing.T, path string) {
	t.Helper()
	if !winacl.SetKept(t, path, "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;OW)(A;;FR;;;WD)", "S-1-1-0") {
		t.Fatal("Everyone's read entry was not kept on the key")
	}
}
