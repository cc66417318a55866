package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"cloud.google.com/go/storage"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policy"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/broker/policysrc"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
)

// The fleet's policy, in either form, is one the broker accepts: every
// agent with its 3 own stores, every store with its own key file; and a
// change to one agent is a change to that agent only.
func TestWriteFleetPolicyIsValid(t *testing.T) {
	cloud, err := fakegcp.StartCloud("broker@fleet.iam.gserviceaccount.com", "fleet")
	if err != nil {
		t.Fatal(err)
	}
	defer cloud.Close()
	for _, c := range []struct{ mode, layout string }{{"dir", "agent"}, {"dir", "site"}, {"file", "agent"}, {"gs", "agent"}, {"gs", "site"}} {
		mode := c.mode
		t.Run(mode+"/"+c.layout, func(t *testing.T) {
			f, err := writeFleet(cloud, 4, mode, c.layout)
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(f.dir)
			p := parseFleet(t, cloud, f)
			if p.NumAgents() != 4 || p.NumAccounts() != 4*storesPerAgent || len(f.keyIDs) != 4*storesPerAgent {
				t.Fatalf("%d agents, %d accounts, %d keys", p.NumAgents(), p.NumAccounts(), len(f.keyIDs))
			}
			if got := len(p.Grants(agentID(3))); got != storesPerAgent {
				t.Fatalf("agent 3 has %d stores", got)
			}
			wantFiles := map[string]int{"dir": 1 + 4 + 4*storesPerAgent, "gs": 1 + 4 + 4*storesPerAgent, "file": 1}[mode]
			if c.layout == "site" {
				wantFiles = 1 + 4
			}
			if f.files != wantFiles {
				t.Fatalf("%d policy files, want %d", f.files, wantFiles)
			}
			if err := f.changeAgent(3, false); err != nil {
				t.Fatal(err)
			}
			p = parseFleet(t, cloud, f)
			if got := len(p.Grants(agentID(3))); got != storesPerAgent-1 {
				t.Fatalf("changed agent has %d stores, want %d", got, storesPerAgent-1)
			}
			if got := len(p.Grants(agentID(2))); got != storesPerAgent {
				t.Fatalf("unchanged agent has %d stores", got)
			}
		})
	}
}

// parseFleet reads the policy as the broker would: one document, or the
// fragments merged (each name once, as the directory form requires).
func parseFleet(t *testing.T, cloud *fakegcp.Cloud, f *fleet) *policy.Policy {
	t.Helper()
	var data []byte
	if f.fragOf != nil { // gs: the broker's own reader, against the fake
		bucket, prefix, err := policysrc.ParseGS(f.cfg)
		if err != nil {
			t.Fatal(err)
		}
		store := &policysrc.GCS{Bucket: bucket, Prefix: prefix, Client: func(ctx context.Context) (*storage.Client, error) {
			return policysrc.NewStorageClient(ctx, cloud.Storage.URL())
		}}
		p, err := policysrc.NewFragmentLoader(store).Load(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	if f.agentFn == nil {
		var err error
		if data, err = os.ReadFile(f.cfg); err != nil {
			t.Fatal(err)
		}
	} else {
		doc := map[string]any{"Accounts": map[string]any{}, "Agents": map[string]any{}}
		paths, _ := filepath.Glob(filepath.Join(f.cfg, "*.json"))
		for _, path := range paths {
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var frag map[string]any
			if err := json.Unmarshal(raw, &frag); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			for k, v := range frag {
				if k == "Accounts" || k == "Agents" {
					for name, e := range v.(map[string]any) {
						if _, dup := doc[k].(map[string]any)[name]; dup {
							t.Fatalf("%s %s in two fragments", k, name)
						}
						doc[k].(map[string]any)[name] = e
					}
					continue
				}
				if _, dup := doc[k]; dup {
					t.Fatalf("%s in two fragments", k)
				}
				doc[k] = v
			}
		}
		data, _ = json.Marshal(doc)
	}
	p, err := policy.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProcReadsOwnProcess(t *testing.T) {
	if _, err := cpuTime(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	m, err := readMemory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.rss <= 0 || m.hwm < m.rss {
		t.Fatalf("RSS %d KiB, peak %d KiB", m.rss, m.hwm)
	}
}

func TestMintHist(t *testing.T) {
	if got := mintHist(map[int]int{1: 30000, 0: 2}); got != "0 × 2, 1 × 30000" {
		t.Fatalf("%q", got)
	}
}
