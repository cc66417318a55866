package policysrc

import (
	"context"
	"io"
	"strings"
	"testing"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
)

// fakeBucket starts fake-gcs-server (a real GCS JSON API server) on
// loopback (PublicHost: XML API reads go to the same address) with a
// versioned bucket, and returns Google's storage client
// pointed at it the way the broker is (BROKER_STORAGE_ENDPOINT).
func fakeBucket(t *testing.T, bucket string) (*storage.Client, string) {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", PublicHost: "127.0.0.1", Writer: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: bucket, VersioningEnabled: true})
	c, err := NewStorageClient(context.Background(), srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, srv.URL()
}

func put(t *testing.T, c *storage.Client, bucket, name, content string) int64 {
	t.Helper()
	w := c.Bucket(bucket).Object(name).NewWriter(context.Background())
	w.ContentType = "application/json"
	if _, err := io.WriteString(w, content); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w.Attrs().Generation
}

func TestGCSReloadByGeneration(t *testing.T) {
	ctx := context.Background()
	c, _ := fakeBucket(t, "policy-bucket")
	put(t, c, "policy-bucket", "policy/base.json", baseFrag)
	put(t, c, "policy-bucket", "policy/accounts/s.json", accountFrag("s", "t")) // any depth under the prefix
	put(t, c, "policy-bucket", "policy/agents/site1.json", agentFrag(t, "site1", "s"))
	put(t, c, "policy-bucket", "policy/README.txt", "not json")
	put(t, c, "policy-bucket", "policy-old/base.json", `{"Audience":"https://old.example/"}`) // beside the prefix
	put(t, c, "policy-bucket", "other/x.json", "{")

	load, _, err := Open("gs://policy-bucket/policy/", Options{Storage: func(context.Context) (*storage.Client, error) { return c, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := load(ctx); err != nil || p.NumAgents() != 1 {
		t.Fatalf("Open's loader: %v, %v", p, err)
	}
	src := &counting{Store: &GCS{Client: func(context.Context) (*storage.Client, error) { return c, nil }, Bucket: "policy-bucket", Prefix: "policy/"}}
	l := NewFragmentLoader(src)
	p, err := l.Load(ctx)
	if err != nil {
		t.Fatalf("first load: %v", err)
	}
	if p.Audience != "https://broker.example.run.app/" || p.NumAccounts() != 2 || p.NumAgents() != 1 || src.reads.Load() != 3 {
		t.Fatalf("first load: %+v, %d reads", p, src.reads.Load())
	}

	var oldGen int64
	steps := []struct {
		name   string
		change func()
		reads  int64
		agents int // -1: no new policy
		err    string
	}{
		{"unchanged", func() {}, 0, -1, ""},
		{"object rewritten: new generation", func() {
			put(t, c, "policy-bucket", "policy/agents/site1.json", agentFrag(t, "site1", "s", "t"))
		}, 1, 1, ""},
		{"object added", func() { oldGen = put(t, c, "policy-bucket", "policy/agents/site2.json", agentFrag(t, "site2", "t")) }, 1, 2, ""},
		{"object deleted", func() {
			if err := c.Bucket("policy-bucket").Object("policy/agents/site1.json").Delete(ctx); err != nil {
				t.Fatal(err)
			}
		}, 0, 1, ""},
		{"bad fragment refused, naming the object", func() {
			put(t, c, "policy-bucket", "policy/agents/site2.json", `{"Agents":{"site2":{"PublicKey":"nope","Accounts":["t"]}}}`)
		}, 1, -1, `fragment "gs://policy-bucket/policy/agents/site2.json": agent "site2": PublicKey:`},
		{"still refused while unchanged, without a read", func() {}, 0, -1, `gs://policy-bucket/policy/agents/site2.json`},
		{"rolled back: the old generation copied over", func() {
			dst := c.Bucket("policy-bucket").Object("policy/agents/site2.json")
			if _, err := dst.CopierFrom(dst.Generation(oldGen)).Run(ctx); err != nil {
				t.Fatal(err)
			}
		}, 1, 1, ""},
	}
	for _, s := range steps {
		src.reads.Store(0)
		s.change()
		p, err := l.Load(ctx)
		switch {
		case s.err != "" && (err == nil || !strings.Contains(err.Error(), s.err)):
			t.Fatalf("%s: err = %v, want %q", s.name, err, s.err)
		case s.err == "" && err != nil:
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := src.reads.Load(); got != s.reads {
			t.Errorf("%s: %d reads, want %d", s.name, got, s.reads)
		}
		switch {
		case s.agents < 0 && p != nil:
			t.Errorf("%s: a new policy was built", s.name)
		case s.agents >= 0 && (p == nil || p.NumAgents() != s.agents):
			t.Errorf("%s: policy %v, want %d agents", s.name, p, s.agents)
		}
	}
}

func TestGCSErrors(t *testing.T) {
	ctx := context.Background()
	c, _ := fakeBucket(t, "policy-bucket")
	client := func(context.Context) (*storage.Client, error) { return c, nil }
	load, _, err := Open("gs://no-such-bucket/policy/", Options{Storage: client})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := load(ctx); err == nil || !strings.Contains(err.Error(), "cannot list gs://no-such-bucket/policy/") {
		t.Errorf("missing bucket: %v", err)
	}
	load, _, _ = Open("gs://policy-bucket/policy/", Options{Storage: client})
	if _, err := load(ctx); err == nil || !strings.Contains(err.Error(), "no fragments in gs://policy-bucket/policy/") {
		t.Errorf("empty prefix: %v", err)
	}
	put(t, c, "policy-bucket", "policy/big.json", `{"x":"`+strings.Repeat("a", 1<<20)+`"}`)
	if _, err := load(ctx); err == nil || !strings.Contains(err.Error(), `fragment "gs://policy-bucket/policy/big.json": cannot read: fragment is 1048584 bytes, limit 1048576`) {
		t.Errorf("oversize object: %v", err)
	}
	if _, _, err := Open("gs://policy-bucket/policy", Options{Storage: client}); err == nil {
		t.Error("a prefix without a trailing slash was accepted")
	}
}
