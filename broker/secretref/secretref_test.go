package secretref

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	gax "github.com/googleapis/gax-go/v2"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/clocktest"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/logcapture"
)

// startSM runs the Secret Manager fake and a real client for it.
func startSM(t *testing.T) (*fakegcp.SecretManager, *secretmanager.Client) {
	t.Helper()
	sm := fakegcp.NewSecretManager()
	if err := sm.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sm.Close)
	c, err := secretmanager.NewClient(context.Background(), fakegcp.ClientOptions(sm.Addr())...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return sm, c
}

func TestSecretManagerReferences(t *testing.T) {
	sm, client := startSM(t)
	clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	r := &Resolver{SM: client, TTL: 5 * time.Minute, Now: clk.Now}
	const secret = "projects/p/secrets/key"
	sm.AddVersion(secret, []byte("v1"))
	ctx := context.Background()
	get := func(ref string) string {
		t.Helper()
		v, err := r.Get(ctx, ref)
		if err != nil {
			t.Fatalf("Get(%s): %v", ref, err)
		}
		return string(v)
	}

	if got := get("sm://" + secret + "/versions/latest"); got != "v1" {
		t.Fatalf("got %q", got)
	}
	sm.AddVersion(secret, []byte("v2"))
	if got := get("sm://" + secret + "/versions/latest"); got != "v1" || sm.Accesses(secret) != 1 {
		t.Fatalf("within TTL: got %q after %d reads, want cached v1", got, sm.Accesses(secret))
	}
	clk.Advance(5 * time.Minute)
	if got := get("sm://" + secret + "/versions/latest"); got != "v2" {
		t.Fatalf("after TTL: %q", got)
	}
	if got := get("sm://" + secret + "/versions/1"); got != "v1" {
		t.Fatalf("pinned version: %q", got)
	}

	// Down after TTL: the last value is served rather than an error.
	sm.SetDown(true)
	clk.Advance(10 * time.Minute)
	if got := get("sm://" + secret + "/versions/latest"); got != "v2" {
		t.Fatalf("stale during outage: %q", got)
	}
	// ...and for the rest of that refresh period without another read.
	reads := sm.Accesses(secret)
	clk.Advance(4 * time.Minute)
	if got := get("sm://" + secret + "/versions/latest"); got != "v2" || sm.Accesses(secret) != reads {
		t.Fatalf("stale within the period: %q after %d more reads", got, sm.Accesses(secret)-reads)
	}
	// Invalidated: no stale value to hide behind, and the error says unavailable.
	r.Invalidate("sm://" + secret + "/versions/latest")
	_, err := r.Get(ctx, "sm://"+secret+"/versions/latest")
	var se *Error
	if !errors.As(err, &se) || !se.Unavailable {
		t.Fatalf("err = %v, want an unavailable *Error", err)
	}
	sm.SetDown(false)

	tests := []struct {
		name, ref, want string
	}{
		{"unknown secret", "sm://projects/p/secrets/nope/versions/latest", "not found"},
		{"disabled version", "sm://" + secret + "/versions/1", "disabled or destroyed"},
		{"denied", "sm://projects/p/secrets/denied/versions/latest", "permission denied"},
	}
	sm.SetVersionState(secret+"/versions/1", secretmanagerpb.SecretVersion_DISABLED)
	sm.AddVersion("projects/p/secrets/denied", []byte("x"))
	sm.Deny("projects/p/secrets/denied", true)
	for _, tt := range tests {
		_, err := r.Fetch(ctx, tt.ref)
		if err == nil || !strings.Contains(err.Error(), tt.want) || errors.As(err, &se) && se.Unavailable {
			t.Errorf("%s: %v, want %q (not unavailable)", tt.name, err, tt.want)
		}
	}
}

func TestFileReferences(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "key.json")
	big := filepath.Join(dir, "big.json")
	os.WriteFile(small, []byte(`{"type":"service_account"}`), 0o600)
	os.WriteFile(big, make([]byte, MaxSecretSize+1), 0o600)
	r := &Resolver{TTL: time.Minute}
	tests := []struct {
		ref, want string
	}{
		{small, ""},
		{big, "larger than"},
		{filepath.Join(dir, "missing.json"), "no such file"},
		{"sm://projects/p/secrets/s/versions/1", "no Secret Manager client"},
	}
	for _, tt := range tests {
		v, err := r.Get(context.Background(), tt.ref)
		switch {
		case tt.want == "" && (err != nil || string(v) != `{"type":"service_account"}`):
			t.Errorf("%s: %q %v", tt.ref, v, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: err %v, want %q", tt.ref, err, tt.want)
		}
	}
}

// corrupt answers with a payload whose checksum does not match, as a
// damaged response would.
type corrupt struct{}

func (corrupt) AccessSecretVersion(context.Context, *secretmanagerpb.AccessSecretVersionRequest, ...gax.CallOption) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	crc := int64(12345)
	return &secretmanagerpb.AccessSecretVersionResponse{Payload: &secretmanagerpb.SecretPayload{Data: []byte("x"), DataCrc32C: &crc}}, nil
}

func TestChecksumMismatchIsRefused(t *testing.T) {
	r := &Resolver{SM: corrupt{}, TTL: time.Minute}
	if _, err := r.Get(context.Background(), "sm://projects/p/secrets/s/versions/1"); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("err = %v", err)
	}
}

func TestReasonNamesNoReference(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "secret-project", "big.json")
	os.MkdirAll(filepath.Dir(big), 0o700)
	os.WriteFile(big, make([]byte, MaxSecretSize+1), 0o600)
	tests := []struct {
		name string
		r    *Resolver
		ref  string
		want string
	}{
		{"missing file", &Resolver{}, filepath.Join(dir, "secret-project", "missing.json"), "no such file"},
		{"big file", &Resolver{}, big, "larger than"},
		{"no client", &Resolver{}, "sm://projects/secret-project/secrets/s/versions/1", "no Secret Manager client"},
		{"corrupt", &Resolver{SM: corrupt{}}, "sm://projects/secret-project/secrets/s/versions/1", "checksum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.r.Fetch(context.Background(), tt.ref)
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if !strings.Contains(se.Reason(), tt.want) || strings.Contains(se.Reason(), "secret-project") || strings.Contains(se.Reason(), dir) {
				t.Errorf("Reason() = %q, want %q and no reference", se.Reason(), tt.want)
			}
			if !strings.Contains(se.Error(), tt.ref) {
				t.Errorf("Error() = %q should name the reference for the log", se.Error())
			}
		})
	}
}

// Google's rule: a disabled newest version makes latest fail. The last value
// keeps serving, with one warning per refresh period naming the reference
// and never the value, and a new version heals it at the next refresh.
func TestDisabledLatestServesLastValueAndLogsOncePerRefresh(t *testing.T) {
	sm, client := startSM(t)
	clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var logs logcapture.Buffer
	r := &Resolver{SM: client, TTL: 5 * time.Minute, Now: clk.Now, Log: slog.New(slog.NewJSONHandler(&logs, nil))}
	const secret = "projects/p/secrets/key"
	const ref = "sm://" + secret + "/versions/latest"
	sm.AddVersion(secret, []byte("good-value"))
	ctx := context.Background()
	if v, err := r.Get(ctx, ref); err != nil || string(v) != "good-value" {
		t.Fatalf("%q %v", v, err)
	}
	bad := sm.AddVersion(secret, []byte("bad-value"))
	if err := sm.SetVersionState(bad, secretmanagerpb.SecretVersion_DISABLED); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		advance  time.Duration
		calls    int
		wantLogs int
	}{
		{5 * time.Minute, 20, 1}, // TTL passed: one failed read, one line, for 20 calls
		{4 * time.Minute, 20, 1}, // same period: nothing new
		{2 * time.Minute, 5, 2},  // next period: one more line
	} {
		clk.Advance(step.advance)
		for range step.calls {
			if v, err := r.Get(ctx, ref); err != nil || string(v) != "good-value" {
				t.Fatalf("Get = %q, %v; want the last good value", v, err)
			}
		}
		if n := strings.Count(logs.String(), "secret re-read failed"); n != step.wantLogs {
			t.Fatalf("%d warnings, want %d:\n%s", n, step.wantLogs, logs.String())
		}
	}
	out := logs.String()
	if !strings.Contains(out, ref) || !strings.Contains(out, "disabled or destroyed") {
		t.Errorf("warning does not name the reference and the cause: %s", out)
	}
	if strings.Contains(out, "good-value") || strings.Contains(out, "bad-value") {
		t.Errorf("a secret value reached the log: %s", out)
	}
	sm.AddVersion(secret, []byte("new-value"))
	clk.Advance(5 * time.Minute)
	if v, err := r.Get(ctx, ref); err != nil || string(v) != "new-value" {
		t.Fatalf("after a new version: %q %v", v, err)
	}
}
