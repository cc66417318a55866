package fakegcp

import (
	"context"
	"hash/crc32"
	"testing"
	"time"

	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func startSM(t *testing.T) (*SecretManager, *secretmanager.Client) {
	t.Helper()
	sm := NewSecretManager()
	if err := sm.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sm.Close)
	c, err := secretmanager.NewClient(context.Background(), ClientOptions(sm.Addr())...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return sm, c
}

func access(c *secretmanager.Client, name string) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name})
}

func TestSecretManagerVersionsAndLatest(t *testing.T) {
	sm, c := startSM(t)
	const sec = "projects/p/secrets/dicom-sa"
	v1 := sm.AddVersion(sec, []byte("one"))
	v2 := sm.AddVersion(sec, []byte("two"))
	if v1 != sec+"/versions/1" || v2 != sec+"/versions/2" {
		t.Fatalf("names %q %q", v1, v2)
	}
	v3 := sm.AddVersion(sec, []byte("three"))

	type want struct {
		name string
		data string
		code codes.Code
	}
	steps := []struct {
		desc   string
		before func()
		req    string
		want   want
	}{
		{"latest is newest", nil, sec + "/versions/latest", want{v3, "three", codes.OK}},
		{"explicit 1", nil, v1, want{v1, "one", codes.OK}},
		{"disabled newest -> latest fails, no fall-back", func() {
			if err := sm.SetVersionState(v3, secretmanagerpb.SecretVersion_DISABLED); err != nil {
				t.Fatal(err)
			}
		}, sec + "/versions/latest", want{code: codes.FailedPrecondition}},
		{"disabled explicit", nil, v3, want{code: codes.FailedPrecondition}},
		{"an older version pinned still works", nil, v2, want{v2, "two", codes.OK}},
		{"re-enabled newest -> latest again", func() {
			if err := sm.SetVersionState(v3, secretmanagerpb.SecretVersion_ENABLED); err != nil {
				t.Fatal(err)
			}
		}, sec + "/versions/latest", want{v3, "three", codes.OK}},
		{"destroyed explicit", func() {
			if err := sm.SetVersionState(v2, secretmanagerpb.SecretVersion_DESTROYED); err != nil {
				t.Fatal(err)
			}
		}, v2, want{code: codes.FailedPrecondition}},
		{"latest after destroying an older one", nil, sec + "/versions/latest", want{v3, "three", codes.OK}},
		{"unknown version", nil, sec + "/versions/9", want{code: codes.NotFound}},
		{"unknown secret", nil, "projects/p/secrets/nope/versions/latest", want{code: codes.NotFound}},
		{"malformed", nil, "projects/p/secrets/x", want{code: codes.InvalidArgument}},
		{"denied", func() { sm.Deny(sec, true) }, sec + "/versions/latest", want{code: codes.PermissionDenied}},
		{"denied even if missing", func() { sm.Deny("projects/p/secrets/ghost", true) }, "projects/p/secrets/ghost/versions/1", want{code: codes.PermissionDenied}},
		{"undenied", func() { sm.Deny(sec, false) }, sec + "/versions/1", want{v1, "one", codes.OK}},
		{"destroyed newest -> latest fails", func() {
			if err := sm.SetVersionState(v3, secretmanagerpb.SecretVersion_DESTROYED); err != nil {
				t.Fatal(err)
			}
		}, sec + "/versions/latest", want{code: codes.FailedPrecondition}},
		{"a newer version heals latest", func() { sm.AddVersion(sec, []byte("four")) }, sec + "/versions/latest", want{sec + "/versions/4", "four", codes.OK}},
	}
	for _, st := range steps {
		if st.before != nil {
			st.before()
		}
		resp, err := access(c, st.req)
		if got := status.Code(err); got != st.want.code {
			t.Fatalf("%s: code %v (%v), want %v", st.desc, got, err, st.want.code)
		}
		if err != nil {
			continue
		}
		if resp.Name != st.want.name || string(resp.Payload.Data) != st.want.data {
			t.Errorf("%s: got %s %q", st.desc, resp.Name, resp.Payload.Data)
		}
		if resp.Payload.DataCrc32C == nil || *resp.Payload.DataCrc32C != int64(crc32.Checksum(resp.Payload.Data, crc32.MakeTable(crc32.Castagnoli))) {
			t.Errorf("%s: bad data_crc32c", st.desc)
		}
	}
	// Every step above except the unknown, malformed and ghost names reads sec.
	if got := sm.Accesses(sec); got != 13 {
		t.Errorf("Accesses = %d, want 13", got)
	}
	if err := sm.SetVersionState(sec+"/versions/7", secretmanagerpb.SecretVersion_ENABLED); status.Code(err) != codes.NotFound {
		t.Errorf("SetVersionState unknown: %v", err)
	}
	if err := sm.SetVersionState(v2, secretmanagerpb.SecretVersion_ENABLED); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("enabling destroyed: %v", err)
	}
}

func TestSecretManagerRPCs(t *testing.T) {
	sm, c := startSM(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	clock := newClock()
	sm.SetNow(clock.Now)

	_, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: "projects/p", SecretId: "cfg",
		Secret: &secretmanagerpb.Secret{Labels: map[string]string{"a": "b"}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("create without replication: %v", err)
	}
	repl := &secretmanagerpb.Replication{Replication: &secretmanagerpb.Replication_Automatic_{Automatic: &secretmanagerpb.Replication_Automatic{}}}
	sec, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: "projects/p", SecretId: "cfg",
		Secret: &secretmanagerpb.Secret{Replication: repl, Labels: map[string]string{"a": "b"}}})
	if err != nil {
		t.Fatal(err)
	}
	if sec.Name != "projects/p/secrets/cfg" || sec.Labels["a"] != "b" || !sec.CreateTime.AsTime().Equal(clock.Now().Truncate(time.Nanosecond)) {
		t.Errorf("created %v", sec)
	}
	if _, err := c.CreateSecret(ctx, &secretmanagerpb.CreateSecretRequest{Parent: "projects/p", SecretId: "cfg",
		Secret: &secretmanagerpb.Secret{Replication: repl}}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("duplicate create: %v", err)
	}
	got, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: "projects/p/secrets/cfg"})
	if err != nil || got.Name != sec.Name {
		t.Fatalf("GetSecret %v %v", got, err)
	}
	if _, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: "projects/p/secrets/none"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetSecret missing: %v", err)
	}

	data := []byte(`{"Accounts":{}}`)
	crc := int64(crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
	for i := 0; i < 3; i++ {
		v, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: sec.Name,
			Payload: &secretmanagerpb.SecretPayload{Data: data, DataCrc32C: &crc}})
		if err != nil {
			t.Fatal(err)
		}
		if want := sec.Name + "/versions/" + string(rune('1'+i)); v.Name != want || v.State != secretmanagerpb.SecretVersion_ENABLED {
			t.Errorf("added %s %v, want %s ENABLED", v.Name, v.State, want)
		}
	}
	bad := crc + 1
	if _, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: sec.Name,
		Payload: &secretmanagerpb.SecretPayload{Data: data, DataCrc32C: &bad}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad crc: %v", err)
	}
	if _, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: "projects/p/secrets/none",
		Payload: &secretmanagerpb.SecretPayload{Data: data}}); status.Code(err) != codes.NotFound {
		t.Errorf("add to missing secret: %v", err)
	}
	if _, err := c.AddSecretVersion(ctx, &secretmanagerpb.AddSecretVersionRequest{Parent: sec.Name,
		Payload: &secretmanagerpb.SecretPayload{Data: make([]byte, maxPayload+1)}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("oversized payload: %v", err)
	}

	v, err := c.DisableSecretVersion(ctx, &secretmanagerpb.DisableSecretVersionRequest{Name: sec.Name + "/versions/3"})
	if err != nil || v.State != secretmanagerpb.SecretVersion_DISABLED {
		t.Fatalf("disable: %v %v", v, err)
	}
	if _, err := c.EnableSecretVersion(ctx, &secretmanagerpb.EnableSecretVersionRequest{Name: v.Name, Etag: `"999"`}); status.Code(err) != codes.Aborted {
		t.Errorf("stale etag: %v", err)
	}
	if v, err = c.EnableSecretVersion(ctx, &secretmanagerpb.EnableSecretVersionRequest{Name: v.Name, Etag: v.Etag}); err != nil || v.State != secretmanagerpb.SecretVersion_ENABLED {
		t.Fatalf("enable: %v %v", v, err)
	}
	clock.Advance(time.Minute)
	d, err := c.DestroySecretVersion(ctx, &secretmanagerpb.DestroySecretVersionRequest{Name: sec.Name + "/versions/1"})
	if err != nil || d.State != secretmanagerpb.SecretVersion_DESTROYED || !d.DestroyTime.AsTime().Equal(clock.Now()) {
		t.Fatalf("destroy: %v %v", d, err)
	}
	gv, err := c.GetSecretVersion(ctx, &secretmanagerpb.GetSecretVersionRequest{Name: sec.Name + "/versions/latest"})
	if err != nil || gv.Name != sec.Name+"/versions/3" {
		t.Fatalf("GetSecretVersion latest: %v %v", gv, err)
	}

	var names []string
	var states []secretmanagerpb.SecretVersion_State
	it := c.ListSecretVersions(ctx, &secretmanagerpb.ListSecretVersionsRequest{Parent: sec.Name, PageSize: 2})
	for {
		v, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, v.Name)
		states = append(states, v.State)
	}
	if len(names) != 3 || names[0] != sec.Name+"/versions/3" || names[2] != sec.Name+"/versions/1" ||
		states[2] != secretmanagerpb.SecretVersion_DESTROYED {
		t.Errorf("list = %v %v", names, states)
	}
}

func TestSecretManagerDown(t *testing.T) {
	sm, c := startSM(t)
	const sec = "projects/p/secrets/s"
	sm.AddVersion(sec, []byte("x"))
	sm.SetDown(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The client retries Unavailable on access (2 s initial backoff): turn that off to see the code.
	noRetry := gax.WithRetry(func() gax.Retryer { return nil })
	_, err := c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: sec + "/versions/latest"}, noRetry)
	if code := status.Code(err); code != codes.Unavailable {
		t.Fatalf("down: %v", err)
	}
	// With its default retries the client keeps trying until its deadline.
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	if _, err := c.AccessSecretVersion(short, &secretmanagerpb.AccessSecretVersionRequest{Name: sec + "/versions/latest"}); err == nil {
		t.Fatal("access succeeded while down")
	}
	if _, err := c.GetSecret(ctx, &secretmanagerpb.GetSecretRequest{Name: sec}); err == nil {
		t.Fatal("GetSecret succeeded while down")
	}
	// The retrying call may get a second attempt in (gax's backoff is
	// jittered from 0 s), so count at least one per call.
	if n := sm.Accesses(sec); n < 2 {
		t.Errorf("Accesses while down = %d, want at least 2", n)
	}
	sm.SetDown(false)
	resp, err := access(c, sec+"/versions/latest")
	if err != nil || string(resp.Payload.Data) != "x" {
		t.Fatalf("after up: %v", err)
	}
}
