package urlrule

import (
	"strings"
	"testing"
)

func TestIsLoopbackHost(t *testing.T) {
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"localhost", true}, {"LocalHost", true}, {"127.0.0.1", true}, {"127.3.4.5", true},
		{"::1", true}, {"10.0.0.1", false}, {"example.com", false}, {"localhost.example.com", false}, {"", false},
	} {
		if got := IsLoopbackHost(tc.host); got != tc.want {
			t.Errorf("IsLoopbackHost(%q) = %v, want %v", tc.host, got, tc.want)
		}
	}
}

func TestCheckBearerURL(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		wantErr string // "" = allowed
	}{
		{"https://healthcare.googleapis.com/v1/x/dicomWeb/", ""},
		{"http://127.0.0.1:8080/v1/", ""},
		{"http://LOCALHOST:8080/", ""},
		{"http://[::1]:80/", ""},
		{"http://10.1.2.3/", "https"},
		{"http://example.com/", "https"},
		{"ftp://example.com/", "scheme"},
		{"/relative/path", "absolute"},
		{"https://user:hunter2@example.com/", "credentials"},
		{"mailto:x@example.com", "absolute"},
	} {
		err := CheckBearerURL(tc.raw)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("CheckBearerURL(%q) = %v, want nil", tc.raw, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("CheckBearerURL(%q) = %v, want error containing %q", tc.raw, err, tc.wantErr)
		case err != nil && strings.Contains(err.Error(), "hunter2"):
			t.Errorf("CheckBearerURL(%q) echoes the password: %v", tc.raw, err)
		}
	}
}
