package policysrc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
)

func pubKey(t testing.TB) string {
	t.Helper()
	pub, _, err := agentkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return agentkey.FormatPublicKey(pub)
}

const baseFrag = `{"Audience":"https://broker.example.run.app/","BaseUrl":"https://healthcare.googleapis.com/v1/"}`

func accountFrag(names ...string) string {
	m := map[string]any{}
	for _, n := range names {
		m[n] = map[string]any{"Project": "p", "Location": "l", "Dataset": "d", "DicomStore": n,
			"ServiceAccountSecret": "sm://projects/p/secrets/" + n + "/versions/latest"}
	}
	b, _ := json.Marshal(map[string]any{"Accounts": m})
	return string(b)
}

func agentFrag(t testing.TB, id string, accounts ...string) string {
	b, _ := json.Marshal(map[string]any{"Agents": map[string]any{id: map[string]any{"PublicKey": pubKey(t), "Accounts": accounts}}})
	return string(b)
}

// writeDir writes files (name → content; a name ending in "/" is a
// directory) into a new directory.
func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestFragmentMergeRules(t *testing.T) {
	big := `{"Accounts":{},"Agents":{}, "x":"` + strings.Repeat("a", policy.MaxDocumentSize) + `"}`
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error ("{dir}" is the directory); none: valid
		check func(t *testing.T, p *policy.Policy)
	}{
		{name: "split policy, agent uses accounts of other fragments",
			files: map[string]string{"base.json": baseFrag, "acct-a.json": accountFrag("a1", "a2"), "acct-b.json": accountFrag("b1"),
				"agent-a.json": agentFrag(t, "site-a", "a1", "b1")},
			check: func(t *testing.T, p *policy.Policy) {
				if p.NumAccounts() != 3 || p.NumAgents() != 1 {
					t.Fatalf("accounts %d agents %d", p.NumAccounts(), p.NumAgents())
				}
				a, ok := p.Allowed("site-a", "b1")
				if !ok || a.DICOMwebURL() != "https://healthcare.googleapis.com/v1/projects/p/locations/l/datasets/d/dicomStores/b1/dicomWeb/" {
					t.Fatalf("Allowed(site-a, b1) = %v, %v", a, ok)
				}
				if _, ok := p.AgentKeys("site-a"); !ok {
					t.Fatal("agent key not parsed")
				}
			}},
		{name: "BaseUrl defaults when no fragment sets it",
			files: map[string]string{"base.json": `{"Audience":"https://b.example/"}`, "a.json": accountFrag("s")},
			check: func(t *testing.T, p *policy.Policy) {
				if p.BaseUrl != policy.DefaultBaseURL {
					t.Fatalf("BaseUrl %q", p.BaseUrl)
				}
			}},
		{name: "non-.json files and subdirectories are ignored",
			files: map[string]string{"base.json": baseFrag, "a.json": accountFrag("s"), "README.txt": "not json {",
				"a.json.bak": "{", "sub/agent.json": "{broken", "dir.json/": ""},
			check: func(t *testing.T, p *policy.Policy) {
				if p.NumAccounts() != 1 {
					t.Fatalf("accounts %d", p.NumAccounts())
				}
			}},
		{name: "account in two fragments",
			files: map[string]string{"base.json": baseFrag, "a.json": accountFrag("s", "t"), "b.json": accountFrag("s")},
			want:  []string{`account "s" is defined in fragments "{dir}/a.json" and "{dir}/b.json"`}},
		{name: "agent in two fragments",
			files: map[string]string{"base.json": baseFrag, "acct.json": accountFrag("s"), "x.json": agentFrag(t, "site", "s"), "y.json": agentFrag(t, "site", "s")},
			want:  []string{`agent "site" is defined in fragments "{dir}/x.json" and "{dir}/y.json"`}},
		{name: "Audience twice",
			files: map[string]string{"base.json": baseFrag, "other.json": `{"Audience":"https://other.example/"}`, "a.json": accountFrag("s")},
			want:  []string{`Audience is set in fragments "{dir}/base.json" and "{dir}/other.json"`}},
		{name: "BaseUrl twice",
			files: map[string]string{"base.json": baseFrag, "other.json": `{"BaseUrl":"https://healthcare.googleapis.com/v1/"}`, "a.json": accountFrag("s")},
			want:  []string{`BaseUrl is set in fragments "{dir}/base.json" and "{dir}/other.json"`}},
		{name: "no Audience anywhere",
			files: map[string]string{"a.json": accountFrag("s")},
			want:  []string{"Audience: required"}},
		{name: "unknown account names the agent's fragment",
			files: map[string]string{"base.json": baseFrag, "a.json": accountFrag("s"), "site.json": agentFrag(t, "site", "s", "gone")},
			want:  []string{`fragment "{dir}/site.json": agent "site": Accounts: unknown account "gone"`}},
		{name: "bad entry names fragment, entry and field",
			files: map[string]string{"base.json": baseFrag, "a.json": `{"Accounts":{"s":{"Project":"p","Location":"l","DicomStore":"x","ServiceAccountSecret":"/k.json"}}}`},
			want:  []string{`fragment "{dir}/a.json": account "s": Dataset: required`}},
		{name: "every bad fragment is reported",
			files: map[string]string{"base.json": baseFrag, "a.json": `{"Accounts":{"s":{}}}`, "b.json": `{"Agents":{"x":{"Accounts":[]}}}`},
			want:  []string{`fragment "{dir}/a.json": account "s": Project: required`, `fragment "{dir}/b.json": agent "x": no key`}},
		{name: "oversize fragment",
			files: map[string]string{"base.json": baseFrag, "a.json": accountFrag("s"), "big.json": big},
			want:  []string{`fragment "{dir}/big.json": cannot read: fragment is larger than 1048576 bytes`}},
		{name: "strict JSON: duplicate key",
			files: map[string]string{"base.json": baseFrag, "a.json": `{"Accounts":{},"Accounts":{}}`},
			want:  []string{`fragment "{dir}/a.json":`, "Accounts"}},
		{name: "strict JSON: key differing in case",
			files: map[string]string{"base.json": baseFrag, "a.json": `{"accounts":{}}`},
			want:  []string{`fragment "{dir}/a.json":`, "accounts"}},
		{name: "strict JSON: unknown field",
			files: map[string]string{"base.json": baseFrag, "a.json": `{"Acounts":{}}`},
			want:  []string{`fragment "{dir}/a.json": unknown field "Acounts"`}},
		{name: "strict JSON: data after the document",
			files: map[string]string{"base.json": baseFrag + "{}", "a.json": accountFrag("s")},
			want:  []string{`fragment "{dir}/base.json": unexpected data after the JSON document`}},
		{name: "empty directory",
			files: map[string]string{"notes.txt": "x"},
			want:  []string{"no fragments in"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeDir(t, tt.files)
			p, err := NewFragmentLoader(Dir(dir)).Load(context.Background())
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				tt.check(t, p)
				return
			}
			if err == nil {
				t.Fatal("Load accepted the policy")
			}
			if p != nil {
				t.Fatal("a policy came back with the error")
			}
			for _, w := range tt.want {
				if w = strings.ReplaceAll(w, "{dir}", dir); !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// counting counts reads, to show what a reload fetched.
type counting struct {
	Store
	reads atomic.Int64
}

func (c *counting) Read(ctx context.Context, o Object) ([]byte, error) {
	c.reads.Add(1)
	return c.Store.Read(ctx, o)
}

// touch rewrites a file and moves its modification time on, so a rewrite
// within the file system's timestamp granularity is still seen.
func touch(t *testing.T, path, content string, at time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

func TestDirReloadByChange(t *testing.T) {
	ctx := context.Background()
	dir := writeDir(t, map[string]string{"base.json": baseFrag, "a.json": accountFrag("s", "t"), "site1.json": agentFrag(t, "site1", "s")})
	src := &counting{Store: Dir(dir)}
	l := NewFragmentLoader(src)
	p, err := l.Load(ctx)
	if err != nil || p == nil {
		t.Fatalf("first load: %v", err)
	}
	steps := []struct {
		name   string
		change func()
		reads  int64
		agents int // -1: unchanged (no new policy)
	}{
		{"unchanged", func() {}, 0, -1},
		{"one fragment changed", func() {
			touch(t, filepath.Join(dir, "site1.json"), agentFrag(t, "site1", "s", "t"), time.Now().Add(time.Minute))
		}, 1, 1},
		{"one fragment added", func() { touch(t, filepath.Join(dir, "site2.json"), agentFrag(t, "site2", "t"), time.Now()) }, 1, 2},
		{"one fragment removed", func() { os.Remove(filepath.Join(dir, "site1.json")) }, 0, 1},
		{"a non-fragment added", func() { touch(t, filepath.Join(dir, "notes.md"), "x", time.Now()) }, 0, -1},
		{"unchanged again", func() {}, 0, -1},
	}
	for _, s := range steps {
		src.reads.Store(0)
		s.change()
		p, err := l.Load(ctx)
		if err != nil {
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

// TestReloadRefusedKeepsLastGood: a re-read with a bad fragment is refused
// as a whole, the last good policy stays, and the log names the fragment
// but no value from it.
func TestReloadRefusedKeepsLastGood(t *testing.T) {
	ctx := context.Background()
	dir := writeDir(t, map[string]string{"base.json": baseFrag, "a.json": accountFrag("s"), "site1.json": agentFrag(t, "site1", "s")})
	var logs bytes.Buffer
	load, src, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	w, err := policy.NewLoaderWatcher(ctx, load, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	good := w.Current()
	// A bad inline account first, then a valid new agent beside it: nothing
	// of that version may apply. One file at a time, because on Linux the
	// directory is watched and each change reaches the watcher on its own
	// (a reload between the two would rightly take a good site2 alone).
	touch(t, filepath.Join(dir, "inline.json"), `{"Accounts":{"u":{"Project":"p","Location":"l","Dataset":"d","DicomStore":"u",
		"AuthorizedUserClientId":"id","AuthorizedUserRefreshToken":"rt-secret-value"}}}`, time.Now())
	eventually(t, func() bool { return w.Reload(ctx) != nil })
	if w.Current() != good {
		t.Fatal("the policy in force changed")
	}
	touch(t, filepath.Join(dir, "site2.json"), agentFrag(t, "site2", "s"), time.Now())
	for range 3 { // refused again, site2 or not, and the policy in force stays
		if err := w.Reload(ctx); err == nil {
			t.Fatal("Reload accepted a bad fragment")
		}
		if w.Current() != good {
			t.Fatal("the policy in force changed")
		}
		time.Sleep(5 * time.Millisecond) // let site2's events arrive
	}
	if _, ok := w.Current().AgentKeys("site2"); ok {
		t.Fatal("site2 from the refused version is in force")
	}
	out := logs.String()
	if !strings.Contains(out, filepath.Join(dir, "inline.json")) || !strings.Contains(out, "AuthorizedUserClientSecret: required") {
		t.Errorf("log does not name the fragment and field:\n%s", out)
	}
	if strings.Contains(out, "rt-secret-value") {
		t.Errorf("log holds a value from the fragment:\n%s", out)
	}
	os.Remove(filepath.Join(dir, "inline.json"))
	eventually(t, func() bool { return w.Reload(ctx) == nil })
	if _, ok := w.Current().AgentKeys("site2"); !ok {
		t.Fatal("site2 not in force once the bad fragment is gone")
	}
}

// eventually waits until cond holds (for inotify's events to arrive).
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
	}
}

func TestBadFragmentStopsStart(t *testing.T) {
	dir := writeDir(t, map[string]string{"base.json": baseFrag, "a.json": `{"Accounts":{"s":{"Project":"p","Location":"l","Dataset":"d","DicomStore":"s","TokenLifetime":"5m","ServiceAccountSecret":"/k"}}}`})
	load, src, _ := Open(dir, Options{})
	t.Cleanup(func() { src.Close() })
	_, err := policy.NewLoaderWatcher(context.Background(), load, slog.New(slog.DiscardHandler))
	want := fmt.Sprintf(`fragment %q: account "s": TokenLifetime:`, filepath.Join(dir, "a.json"))
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// TestDocumentFormsReadEveryTime: sm:// and a file stay single documents,
// read and parsed on every load as before.
func TestDocumentFormsReadEveryTime(t *testing.T) {
	doc := `{"Audience":"https://b.example/","Accounts":{"s":{"Project":"p","Location":"l","Dataset":"d","DicomStore":"s","ServiceAccountSecret":"/k"}}}`
	file := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"sm://projects/p/secrets/policy/versions/latest", file} {
		var fetched []string
		load, _, err := Open(ref, Options{Fetch: func(_ context.Context, r string) ([]byte, error) {
			fetched = append(fetched, r)
			if r != ref {
				return nil, errors.New("wrong ref")
			}
			return []byte(doc), nil
		}})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if p, err := load(context.Background()); err != nil || p == nil {
				t.Fatalf("%s: %v %v", ref, p, err)
			}
		}
		if len(fetched) != 2 {
			t.Errorf("%s: fetched %d times, want 2", ref, len(fetched))
		}
	}
}

func TestKindOfAndParseGS(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.json")
	os.WriteFile(file, []byte("{}"), 0o600)
	for ref, want := range map[string]Kind{
		"sm://projects/p/secrets/s/versions/1": Document, file: Document, dir: Directory, dir + "/": Directory,
		"gs://bucket/policy/": Bucket, "/nonexistent/policy.json": Document,
	} {
		if got := KindOf(ref); got != want {
			t.Errorf("KindOf(%q) = %d, want %d", ref, got, want)
		}
	}
	for _, tc := range []struct{ ref, bucket, prefix, err string }{
		{ref: "gs://my-bucket/policy/", bucket: "my-bucket", prefix: "policy/"},
		{ref: "gs://my-bucket/a/b/", bucket: "my-bucket", prefix: "a/b/"},
		{ref: "gs://my-bucket", bucket: "my-bucket"},
		{ref: "gs://my-bucket/", bucket: "my-bucket"},
		{ref: "gs://my-bucket/policy", err: `the prefix must end in "/"`},
		{ref: "gs://My_Bucket/p/", err: "bucket name"},
		{ref: "gs:///p/", err: "bucket name"},
	} {
		b, p, err := ParseGS(tc.ref)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseGS(%q) err = %v, want %q", tc.ref, err, tc.err)
		case tc.err == "" && (err != nil || b != tc.bucket || p != tc.prefix):
			t.Errorf("ParseGS(%q) = %q, %q, %v", tc.ref, b, p, err)
		}
	}
}

// TestDirFollowsLinks: a Kubernetes ConfigMap mount is symbolic links to
// files in a ..data directory; they are fragments, the directory itself
// and dangling links are not, and swapping ..data is seen as a change.
func TestDirFollowsLinks(t *testing.T) {
	dir := writeDir(t, map[string]string{"..v1/base.json": baseFrag, "..v1/a.json": accountFrag("s"),
		"..v2/base.json": baseFrag, "..v2/a.json": accountFrag("s", "t")})
	for _, l := range [][2]string{{"..v1", "..data"}, {"..data/base.json", "base.json"}, {"..data/a.json", "a.json"},
		{"missing.json", "dangling.json"}, {"..v1", "dir.json"}} {
		if err := os.Symlink(l[0], filepath.Join(dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	l := NewFragmentLoader(Dir(dir))
	p, err := l.Load(context.Background())
	if err != nil || p.NumAccounts() != 1 {
		t.Fatalf("load: %v %v", p, err)
	}
	// The kubelet's update: a new ..data link renamed over the old one.
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	p, err = l.Load(context.Background())
	if err != nil || p == nil || p.NumAccounts() != 2 {
		t.Fatalf("after the swap: %v %v", p, err)
	}
}

// slowReads is a store whose reads take a while, as Cloud Storage GETs
// do; it records how many run at once, and fails the names in bad.
type slowReads struct {
	*mem
	bad          map[string]bool
	now, maxSeen atomic.Int64
}

func (s *slowReads) remote() {}

func (s *slowReads) Read(ctx context.Context, o Object) ([]byte, error) {
	n := s.now.Add(1)
	defer s.now.Add(-1)
	for m := s.maxSeen.Load(); n > m && !s.maxSeen.CompareAndSwap(m, n); m = s.maxSeen.Load() {
	}
	time.Sleep(2 * time.Millisecond)
	if s.bad[o.Name] {
		return nil, errors.New("unavailable")
	}
	return s.mem.Read(ctx, o)
}

// TestLoadReadsInParallel: a first load from a remote store reads
// Readers fragments at once (a directory is read one file at a time),
// and a read that fails is reported by name and refuses the load, while
// every fragment that was read is kept.
func TestLoadReadsInParallel(t *testing.T) {
	files := map[string][]byte{"base.json": []byte(baseFrag)}
	for i := range 200 {
		site := fmt.Sprintf("site%d", i)
		files[site+"-a.json"] = []byte(accountFrag(site))
		files[site+".json"] = []byte(agentFrag(t, site, site))
	}
	s := &slowReads{mem: &mem{files: files, vers: map[string]Version{}}, bad: map[string]bool{"site7.json": true}}
	l := NewFragmentLoader(s)
	_, err := l.Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), `fragment "site7.json": cannot read: unavailable`) {
		t.Fatalf("err = %v", err)
	}
	if got := s.maxSeen.Load(); got < 2 || got > Readers {
		t.Fatalf("%d reads at once, want 2..%d", got, Readers)
	}
	if len(l.parsed) != len(files)-1 {
		t.Fatalf("%d fragments kept, want %d", len(l.parsed), len(files)-1)
	}
	delete(s.bad, "site7.json")
	p, err := l.Load(context.Background())
	if err != nil || p.NumAgents() != 200 || p.NumAccounts() != 200 {
		t.Fatalf("second load: %v, %v", p, err)
	}
}
