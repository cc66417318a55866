//go:build !windows

package config

import (
	"io/fs"
	"strings"
	"testing"
	"time"
)

// fakeInfo is an os.FileInfo with a given mode.
type fakeInfo fs.FileMode

func (m fakeInfo) Name() string       { return "pw" }
func (m fakeInfo) Size() int64        { return 1 }
func (m fakeInfo) Mode() fs.FileMode  { return fs.FileMode(m) }
func (m fakeInfo) ModTime() time.Time { return time.Time{} }
func (m fakeInfo) IsDir() bool        { return fs.FileMode(m).IsDir() }
func (m fakeInfo) Sys() any           { return nil }

// TestCheckPasswordModeUnix: the Unix rule of Orthanc.PasswordFile, moved
// out of config.go unchanged: a regular file with no permission bit for
// others.
func TestCheckPasswordModeUnix(t *testing.T) {
	tests := []struct {
		mode    fs.FileMode
		wantErr string
	}{
		{0o600, ""},
		{0o400, ""},
		{0o640, ""},
		{0o660, ""},
		{0o604, "has mode 0604"},
		{0o644, "must not be readable or writable by others"},
		{0o602, "has mode 0602"},
		{0o601, "has mode 0601"},
		{0o444, "has mode 0444"},
		{fs.ModeNamedPipe | 0o600, "is not a regular file"},
		{fs.ModeDir | 0o700, "is not a regular file"},
		{fs.ModeSymlink | 0o777, "is not a regular file"},
	}
	for _, tc := range tests {
		err := checkPasswordMode("/etc/orthanc-gcp-agent/orthanc.password", fakeInfo(tc.mode))
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("mode %v refused: %v", tc.mode, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("mode %v: err %v, want %q", tc.mode, err, tc.wantErr)
		}
	}
}
