package stack

import (
	"slices"
	"testing"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/testbed/fakegcp"
)

// TestBucketPolicyFragments: with PolicyInBucket the policy is written as
// fragments (base, one per account, one per agent) under PolicyPrefix;
// an edit puts only what changed and deletes what is gone.
func TestBucketPolicyFragments(t *testing.T) {
	st := fakegcp.NewStorage()
	if err := st.Start(""); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := &Stack{AgentID: AgentID, PolicyPath: t.TempDir() + "/policy.json", Opts: Options{PolicyInBucket: true},
		Cloud: &fakegcp.Cloud{Storage: st}, stores: []Store{{Name: "store-a"}, {Name: "store-b"}}}
	p := &Policy{Audience: "http://127.0.0.1:1", BaseUrl: "http://127.0.0.1:2/v1/",
		Accounts: map[string]*PolicyAccount{"store-a": {DicomStore: "store-a"}, "store-b": {DicomStore: "store-b"}},
		Agents:   map[string]*PolicyAgent{AgentID: {PublicKey: "ed25519:x", Accounts: []string{"store-a", "store-b"}}}}
	if err := s.writeBucketPolicy(p); err != nil {
		t.Fatal(err)
	}
	s.policy = p
	list := func() []string {
		names, err := st.List(PolicyBucket, PolicyPrefix)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		return names
	}
	want := []string{"policy/accounts/store-a.json", "policy/accounts/store-b.json", "policy/agents/site-a.json", "policy/base.json"}
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("objects %q, want %q", got, want)
	}
	if s.PolicyRef() != "gs://demo-policy/policy/" {
		t.Fatalf("PolicyRef %q", s.PolicyRef())
	}
	gen := func(name string) int64 {
		g, err := st.Generation(PolicyBucket, name)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	baseGen, agentGen := gen("policy/base.json"), gen("policy/agents/site-a.json")
	if err := s.UpdatePolicy(func(p *Policy) { delete(p.Accounts, "store-b"); p.Agents[AgentID].Accounts = []string{"store-a"} }); err != nil {
		t.Fatal(err)
	}
	if got := list(); !slices.Equal(got, []string{"policy/accounts/store-a.json", "policy/agents/site-a.json", "policy/base.json"}) {
		t.Fatalf("after the edit: %q", got)
	}
	if gen("policy/base.json") != baseGen || gen("policy/agents/site-a.json") == agentGen {
		t.Fatal("the edit did not give exactly the agent fragment a new generation")
	}
}
