package stack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/atomicfile"
)

// Policy is the broker policy document (see docs/design.md), as the stack writes it.
type Policy struct {
	Audience string
	BaseUrl  string //nolint:revive // name fixed by the document format
	Accounts map[string]*PolicyAccount
	Agents   map[string]*PolicyAgent
}

// PolicyAccount is one store of the policy (service-account key kind).
type PolicyAccount struct {
	Project, Location, Dataset, DicomStore string
	ServiceAccountSecret                   string
}

// PolicyAgent is one agent of the policy.
type PolicyAgent struct {
	PublicKey string
	Accounts  []string
	Disabled  bool `json:",omitempty"`
}

// writePolicy writes p to path atomically, mode 0600, so the broker's
// periodic re-read never sees half a document.
func writePolicy(path string, p *Policy) error {
	return atomicfile.WriteJSON(path, p, 0o600)
}

// The bucket and prefix of the policy with Options.PolicyInBucket.
const (
	PolicyBucket = "demo-policy"
	PolicyPrefix = "policy/"
)

// PolicyRef is BROKER_CONFIG as the stack sets it.
func (s *Stack) PolicyRef() string {
	if s.Opts.PolicyInBucket {
		return "gs://" + PolicyBucket + "/" + PolicyPrefix
	}
	return s.PolicyPath
}

// writeBucketPolicy writes p into the fake Cloud Storage as fragments,
// laid out as the Terraform module writes them: base.json (Audience,
// BaseUrl), accounts/NAME.json and agents/ID.json. Only fragments whose
// content changed get a new generation; ones no longer in p are deleted.
func (s *Stack) writeBucketPolicy(p *Policy) error {
	want := map[string]any{PolicyPrefix + "base.json": map[string]string{"Audience": p.Audience, "BaseUrl": p.BaseUrl}}
	for name, a := range p.Accounts {
		want[PolicyPrefix+"accounts/"+name+".json"] = map[string]any{"Accounts": map[string]*PolicyAccount{name: a}}
	}
	for id, ag := range p.Agents {
		want[PolicyPrefix+"agents/"+id+".json"] = map[string]any{"Agents": map[string]*PolicyAgent{id: ag}}
	}
	if s.bucketObjects == nil {
		s.Cloud.Storage.CreateBucket(PolicyBucket)
		s.bucketObjects = map[string][]byte{}
	}
	for name, v := range want {
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		if !bytes.Equal(s.bucketObjects[name], data) {
			s.Cloud.Storage.Put(PolicyBucket, name, data)
			s.bucketObjects[name] = data
		}
	}
	for name := range s.bucketObjects {
		if _, ok := want[name]; !ok {
			if err := s.Cloud.Storage.Delete(PolicyBucket, name); err != nil {
				return fmt.Errorf("delete gs://%s/%s: %w", PolicyBucket, name, err)
			}
			delete(s.bucketObjects, name)
		}
	}
	return nil
}

// UpdatePolicy applies edit to a copy of the policy in force and writes it;
// the broker picks it up within its refresh period (Options.BrokerRefresh).
func (s *Stack) UpdatePolicy(edit func(p *Policy)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := clonePolicy(s.policy)
	edit(cp)
	if err := writePolicy(s.PolicyPath, cp); err != nil {
		return fmt.Errorf("stack: write policy: %w", err)
	}
	if s.Opts.PolicyInBucket {
		if err := s.writeBucketPolicy(cp); err != nil {
			return fmt.Errorf("stack: write policy fragments: %w", err)
		}
	}
	s.policy = cp
	return nil
}

// Policy returns a copy of the policy last written.
func (s *Stack) Policy() *Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return clonePolicy(s.policy)
}

// RevokeStore removes store from the agent's accounts in the policy.
func (s *Stack) RevokeStore(store string) error {
	if s.Store(store) == nil {
		return fmt.Errorf("stack: no store %q", store)
	}
	return s.UpdatePolicy(func(p *Policy) {
		ag := p.Agents[s.AgentID]
		ag.Accounts = slices.DeleteFunc(ag.Accounts, func(a string) bool { return a == store })
	})
}

// GrantStore adds store back to the agent's accounts in the policy.
func (s *Stack) GrantStore(store string) error {
	if s.Store(store) == nil {
		return fmt.Errorf("stack: no store %q", store)
	}
	return s.UpdatePolicy(func(p *Policy) {
		ag := p.Agents[s.AgentID]
		if !slices.Contains(ag.Accounts, store) {
			ag.Accounts = append(ag.Accounts, store)
		}
	})
}

func clonePolicy(p *Policy) *Policy {
	cp := &Policy{Audience: p.Audience, BaseUrl: p.BaseUrl,
		Accounts: map[string]*PolicyAccount{}, Agents: map[string]*PolicyAgent{}}
	for k, v := range p.Accounts {
		a := *v
		cp.Accounts[k] = &a
	}
	for k, v := range p.Agents {
		a := *v
		a.Accounts = slices.Clone(v.Accounts)
		cp.Agents[k] = &a
	}
	return cp
}
