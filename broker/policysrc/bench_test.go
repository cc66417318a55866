//go:build linux

package policysrc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/agentkey"
)

// The fleets of issue 16: N agents with 3 own stores each, written as one
// base fragment, one fragment per agent and one per account (as the
// Terraform module writes the bucket): 4N+1 fragments.
var fleetSizes = []int{10, 1000, 10000}

type fleet struct {
	files map[string][]byte // fragment name → content
	keys  []string
}

var fleets = map[int]*fleet{}

func makeFleet(b *testing.B, n int) *fleet {
	if f := fleets[n]; f != nil {
		return f
	}
	f := &fleet{files: map[string][]byte{"base.json": []byte(`{"Audience":"https://broker.example.run.app/"}`)}}
	for i := range n {
		pub, _, err := agentkey.Generate()
		if err != nil {
			b.Fatal(err)
		}
		f.keys = append(f.keys, agentkey.FormatPublicKey(pub))
		var accts []string
		for j := range 3 {
			name := fmt.Sprintf("site%05d-store%d", i, j)
			accts = append(accts, name)
			f.files["account-"+name+".json"], _ = json.Marshal(map[string]any{"Accounts": map[string]any{name: map[string]any{
				"Project": "imaging-prod", "Location": "europe-west2", "Dataset": fmt.Sprintf("site%05d", i), "DicomStore": fmt.Sprintf("store%d", j),
				"ServiceAccountSecret": fmt.Sprintf("sm://projects/imaging-prod/secrets/site%05d-store%d/versions/latest", i, j)}}})
		}
		f.files[fmt.Sprintf("agent-site%05d.json", i)] = agentJSON(i, f.keys[i], accts)
	}
	fleets[n] = f
	return f
}

func agentJSON(i int, key string, accts []string) []byte {
	b, _ := json.Marshal(map[string]any{"Agents": map[string]any{fmt.Sprintf("site%05d", i): map[string]any{
		"PublicKey": key, "Accounts": accts, "AllowedSourceRanges": []string{fmt.Sprintf("10.%d.%d.0/24", i/256%256, i%256)}}}})
	return b
}

// mem is an in-memory Store: listing costs next to nothing, so what is
// measured is the policy work (parse, merge) alone.
type mem struct {
	files map[string][]byte
	vers  map[string]Version
}

func (m *mem) String() string { return "mem" }
func (m *mem) List(context.Context) ([]Object, error) {
	out := make([]Object, 0, len(m.files))
	for name, data := range m.files {
		out = append(out, Object{Name: name, Size: int64(len(data)), Version: m.vers[name]})
	}
	return out, nil
}
func (m *mem) Read(_ context.Context, o Object) ([]byte, error) { return m.files[o.Name], nil }

// cpuTime is the process's user+system CPU time: what a reload costs the
// broker's core, syscalls included.
func cpuTime() time.Duration {
	var r syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r)
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// store builds the fleet as kind ("mem"; "dir", listed in full on every
// reload; "watched", a WatchedDir) and returns the store
// and a function that rewrites agent i's fragment as a new version.
func store(b *testing.B, kind string, f *fleet) (Store, func(i, v int)) {
	switch kind {
	case "mem":
		m := &mem{files: map[string][]byte{}, vers: map[string]Version{}}
		for k, v := range f.files {
			m.files[k], m.vers[k] = v, Version{Generation: 1}
		}
		return m, func(i, v int) {
			name := fmt.Sprintf("agent-site%05d.json", i)
			m.files[name] = agentJSON(i, f.keys[i], []string{fmt.Sprintf("site%05d-store%d", i, v%3)})
			m.vers[name] = Version{Generation: int64(v + 2)}
		}
	case "dir", "watched":
		dir := b.TempDir()
		for k, v := range f.files {
			if err := os.WriteFile(filepath.Join(dir, k), v, 0o600); err != nil {
				b.Fatal(err)
			}
		}
		at := time.Now()
		var s Store = Dir(dir)
		var wd *WatchedDir
		if kind == "watched" {
			wd = NewWatchedDir(dir, nil)
			b.Cleanup(func() { wd.Close() })
			s = wd
		}
		return s, func(i, v int) {
			p := filepath.Join(dir, fmt.Sprintf("agent-site%05d.json", i))
			var before int64
			if wd != nil {
				before = wd.slot.ev.seen.Load()
			}
			// One write in place (padded with spaces to at least the old
			// length) and a new modification time: exactly two events.
			fh, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			data := agentJSON(i, f.keys[i], []string{fmt.Sprintf("site%05d-store%d", i, v%3)})
			if fi, err := fh.Stat(); err == nil && int64(len(data)) < fi.Size() {
				data = append(data, bytes.Repeat([]byte(" "), int(fi.Size())-len(data))...)
			}
			if _, err := fh.WriteAt(data, 0); err != nil {
				b.Fatal(err)
			}
			fh.Close()
			at = at.Add(time.Second)
			os.Chtimes(p, at, at)
			for wd != nil && wd.slot.ev.seen.Load() < before+2 {
				time.Sleep(50 * time.Microsecond) // the events reach the watcher asynchronously
			}
		}
	}
	b.Fatalf("unknown store %q", kind)
	return nil, nil
}

// BenchmarkFullParse is the cost of a reload before issue 16: the whole
// policy as one document, parsed and validated on every refresh.
func BenchmarkFullParse(b *testing.B) {
	for _, n := range fleetSizes {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			f := makeFleet(b, n)
			whole := map[string]map[string]json.RawMessage{"Accounts": {}, "Agents": {}}
			for _, data := range f.files {
				var frag map[string]map[string]json.RawMessage
				json.Unmarshal(data, &frag)
				for k, v := range frag["Accounts"] {
					whole["Accounts"][k] = v
				}
				for k, v := range frag["Agents"] {
					whole["Agents"][k] = v
				}
			}
			doc, _ := json.Marshal(map[string]any{"Audience": "https://broker.example.run.app/", "Accounts": whole["Accounts"], "Agents": whole["Agents"]})
			if len(doc) > policy.MaxDocumentSize {
				b.Skipf("the document is %d bytes: over the %d-byte limit, refused before parsing", len(doc), policy.MaxDocumentSize)
			}
			b.ReportMetric(float64(len(doc))/(1<<20), "MiB-doc")
			var cpu time.Duration
			for b.Loop() {
				c0 := cpuTime()
				if _, err := policy.Parse(doc); err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime() - c0
			}
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}

// BenchmarkFirstLoad: every fragment listed, read, parsed and merged (start).
func BenchmarkFirstLoad(b *testing.B) {
	benchStores(b, func(b *testing.B, s Store, _ func(i, v int)) {
		var cpu time.Duration
		for b.Loop() {
			c0 := cpuTime()
			if p, err := NewFragmentLoader(s).Load(context.Background()); err != nil || p == nil {
				b.Fatal(err)
			}
			cpu += cpuTime() - c0
		}
		b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
	})
}

// BenchmarkReloadUnchanged: nothing changed: one listing, no parsing.
func BenchmarkReloadUnchanged(b *testing.B) {
	benchStores(b, func(b *testing.B, s Store, _ func(i, v int)) {
		l := NewFragmentLoader(s)
		if _, err := l.Load(context.Background()); err != nil {
			b.Fatal(err)
		}
		var cpu time.Duration
		for b.Loop() {
			c0 := cpuTime()
			if p, err := l.Load(context.Background()); err != nil || p != nil {
				b.Fatalf("unchanged reload: %v %v", p, err)
			}
			cpu += cpuTime() - c0
		}
		b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
	})
}

// BenchmarkReloadOneAgentChanged: one agent fragment rewritten between
// reloads: a listing, one read and parse, a merge.
func BenchmarkReloadOneAgentChanged(b *testing.B) {
	benchStores(b, func(b *testing.B, s Store, change func(i, v int)) {
		l := NewFragmentLoader(s)
		if _, err := l.Load(context.Background()); err != nil {
			b.Fatal(err)
		}
		var cpu time.Duration
		v := 0
		for b.Loop() {
			b.StopTimer()
			v++
			change(v%len(fleetKeysOf(b, s)), v)
			b.StartTimer()
			c0 := cpuTime()
			if p, err := l.Load(context.Background()); err != nil || p == nil {
				b.Fatalf("changed reload: %v %v", p, err)
			}
			cpu += cpuTime() - c0
		}
		b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
	})
}

var storeFleet = map[Store]*fleet{}

func fleetKeysOf(b *testing.B, s Store) []string { return storeFleet[s].keys }

func benchStores(b *testing.B, run func(b *testing.B, s Store, change func(i, v int))) {
	for _, kind := range []string{"mem", "dir", "watched"} {
		for _, n := range fleetSizes {
			b.Run(fmt.Sprintf("%s/agents=%d", kind, n), func(b *testing.B) {
				f := makeFleet(b, n)
				s, change := store(b, kind, f)
				storeFleet[s] = f
				defer delete(storeFleet, s) // keep the heap to the fleet under test
				b.ReportMetric(float64(len(f.files)), "fragments")
				run(b, s, change)
			})
		}
	}
}
