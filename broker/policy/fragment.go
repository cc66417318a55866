package policy

import (
	"cmp"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/strictjson"
	"github.com/orthanc-gcp-broker/orthanc-gcp-broker/internal/wire"
)

// Fragment is one piece of a policy read from a directory or a Cloud
// Storage prefix: the policy's own fields, each optional, parsed and
// checked on its own. What needs the whole policy (Audience present, an
// agent's accounts defined somewhere, no name twice) is checked by Merge,
// so a fragment that has not changed is parsed once and merged many times.
//
// A Fragment is not modified once ParseFragment returns it (Merge keeps a
// memo of its accounts resolved against a BaseUrl, under a lock), so one
// may be shared by the policy in force and the one being built.
type Fragment struct {
	name     string
	audience string
	baseURL  string // as written; "" when absent
	base     *url.URL
	accounts []*Account // as parsed; names unique (a JSON object's)
	agents   []*Agent

	mu           sync.Mutex
	resolvedBase string
	resolved     []*Account // accounts with their DICOMweb URL under resolvedBase
}

// Name returns the fragment's name as given to ParseFragment.
func (f *Fragment) Name() string { return f.name }

// where prefixes a problem with the fragment's name; a single document
// (name "") keeps the messages it has always had.
func (f *Fragment) where() string { return fragmentWhere(f.name) }

func fragmentWhere(name string) string {
	if name == "" {
		return "policy: "
	}
	return fmt.Sprintf("policy: fragment %q: ", name)
}

// ParseFragment decodes and checks one fragment named name (its path or
// object name, for messages). Every problem is reported, each naming the
// fragment, the account or agent and the field; the same strict JSON rules
// as Parse apply, and a fragment may be at most MaxDocumentSize bytes.
//
// When the JSON decodes but entries are refused, the fragment is returned
// with the error, so that Merge can report the whole policy's problems
// too; a policy built from a fragment that had an error must never be
// put in force.
func ParseFragment(name string, data []byte) (*Fragment, error) {
	if len(data) > MaxDocumentSize {
		where := fragmentWhere(name)
		what := "document"
		if name != "" {
			what = "fragment"
		}
		return nil, fmt.Errorf("%s%s is %d bytes, limit %d", where, what, len(data), MaxDocumentSize)
	}
	var p document
	if err := strictjson.Unmarshal(data, &p); err != nil {
		return nil, errors.New(fragmentWhere(name) + describeJSONError(err))
	}
	f := &Fragment{name: name, audience: p.Audience, baseURL: p.BaseUrl,
		accounts: make([]*Account, 0, len(p.Accounts)), agents: make([]*Agent, 0, len(p.Agents))}
	var errs []error
	where := "" // worked out at the first problem: most fragments have none
	add := func(format string, a ...any) {
		if where == "" {
			where = fragmentWhere(name)
		}
		errs = append(errs, fmt.Errorf(where+format, a...))
	}

	if p.Audience != "" {
		if _, err := checkURL(p.Audience); err != nil {
			add("Audience: %v", err)
		}
	}
	if p.BaseUrl != "" {
		if u, err := checkBaseURL(p.BaseUrl); err != nil {
			add("BaseUrl: %v", err)
		} else {
			if !strings.HasSuffix(u.Path, "/") {
				u.Path += "/"
			}
			f.base = u
		}
	}
	for name, a := range inOrder(p.Accounts) {
		if !wire.ValidStoreName(name) {
			add("account %q: name must be 1-63 letters, digits, '.', '_' or '-' (it becomes an Orthanc server name)", name)
			continue
		}
		if a == nil {
			add("account %q: must be an object", name)
			continue
		}
		a.name, a.from = name, f.name
		for _, e := range a.validate() {
			add("account %q: %v", name, e)
		}
		f.accounts = append(f.accounts, a)
	}
	for id, ag := range inOrder(p.Agents) {
		if !wire.ValidAgentID(id) {
			add("agent %q: id must be 1-128 letters, digits, '.', '_', '@' or '-'", id)
			continue
		}
		if ag == nil {
			add("agent %q: must be an object", id)
			continue
		}
		ag.id, ag.from = id, f.name
		keys, keyErrs := ag.parseKeys()
		for _, e := range keyErrs {
			add("agent %q: %v", id, e)
		}
		if len(keyErrs) == 0 {
			ag.keys = keys
		}
		ranges, rangeErrs := parseSourceRanges(ag.AllowedSourceRanges)
		for _, e := range rangeErrs {
			add("agent %q: %v", id, e)
		}
		ag.ranges = ranges
		for _, acct := range listedTwice(ag.Accounts) {
			add("agent %q: Accounts: %q listed twice", id, acct)
		}
		f.agents = append(f.agents, ag)
	}
	return f, errors.Join(errs...)
}

// listedTwice returns each entry of list that repeats an earlier one, in
// list order. An agent lists a few accounts: a scan of the list, not a map
// per agent, unless it is long.
func listedTwice(list []string) []string {
	var dups []string
	if len(list) <= 16 {
		for i, s := range list {
			if slices.Contains(list[:i], s) {
				dups = append(dups, s)
			}
		}
		return dups
	}
	seen := make(map[string]bool, len(list))
	for _, s := range list {
		if seen[s] {
			dups = append(dups, s)
		}
		seen[s] = true
	}
	return dups
}

// inOrder yields m's entries in key order, so problems are reported in a
// stable order. A fragment usually holds one entry, which needs no sorted
// copy of the keys.
func inOrder[V any](m map[string]V) iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		if len(m) <= 1 {
			for k, v := range m {
				if !yield(k, v) {
					return
				}
			}
			return
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if !yield(k, m[k]) {
				return
			}
		}
	}
}

// Merge builds the policy from fragments and checks what needs all of
// them: Audience and BaseUrl each set in at most one fragment, Audience
// set in one, no account or agent name in two fragments (both are named),
// at least one account, and every account an agent lists defined in some
// fragment. The error lists every problem. The fragments are not changed:
// the policy shares their agents and holds copies of their accounts.
func Merge(frags []*Fragment) (*Policy, error) {
	return new(Merger).Merge(frags)
}

// Merger merges fragment sets one after the other, reusing its last good
// merge: when only some fragments differ (by identity: a re-parsed
// fragment is a new *Fragment), the new policy is the last one with those
// fragments' entries taken out and put back, and only the cross-references
// are checked again over the whole policy. The result is what Merge would
// return. A Merger is not safe for concurrent use.
type Merger struct {
	last  *Policy
	frags map[string]*Fragment // by name: the fragments of last
}

// Merge merges frags (names unique) as the package-level Merge does. A
// refused set leaves the Merger at its last good merge.
func (m *Merger) Merge(frags []*Fragment) (*Policy, error) {
	if m.last == nil {
		return m.full(frags)
	}
	var added, removed []*Fragment // removed: replaced or gone
	fresh := 0
	for _, f := range frags {
		if old := m.frags[f.name]; old != f {
			added = append(added, f)
			if old != nil {
				removed = append(removed, old)
			} else {
				fresh++
			}
		}
	}
	if len(frags)-fresh != len(m.frags) { // some are gone
		names := make(map[string]bool, len(frags))
		for _, f := range frags {
			names[f.name] = true
		}
		for name, f := range m.frags {
			if !names[name] {
				removed = append(removed, f)
			}
		}
	}
	return m.apply(added, removed, func() []*Fragment { return frags })
}

// Update is Merge for the last good merge's fragments with changed put in
// (new fragments, or new versions by name) and the fragments named in gone
// taken out, without a pass over the fragments that did not change. It
// needs a last good merge (Merge first).
func (m *Merger) Update(changed []*Fragment, gone []string) (*Policy, error) {
	if m.last == nil {
		return nil, errors.New("policy: Merger.Update before a first Merge")
	}
	var added, removed []*Fragment
	for _, f := range changed {
		if old := m.frags[f.name]; old != f {
			added = append(added, f)
			if old != nil {
				removed = append(removed, old)
			}
		}
	}
	for _, name := range gone {
		if old := m.frags[name]; old != nil {
			removed = append(removed, old)
		}
	}
	return m.apply(added, removed, func() []*Fragment {
		set := maps.Clone(m.frags)
		for _, name := range gone {
			delete(set, name)
		}
		for _, f := range changed {
			set[f.name] = f
		}
		return slices.Collect(maps.Values(set))
	})
}

// apply patches the last merge with what was added and removed, or, when
// a fragment that sets Audience or BaseUrl (rare) comes or goes, merges
// all of them again.
func (m *Merger) apply(added, removed []*Fragment, all func() []*Fragment) (*Policy, error) {
	if len(added) == 0 && len(removed) == 0 {
		return m.last, nil
	}
	for _, f := range slices.Concat(added, removed) {
		if f.audience != "" || f.baseURL != "" {
			return m.full(all())
		}
	}
	return m.patch(added, removed)
}

// full merges every fragment from scratch.
func (m *Merger) full(frags []*Fragment) (*Policy, error) {
	frags = slices.SortedFunc(slices.Values(frags), func(a, b *Fragment) int { return cmp.Compare(a.name, b.name) })
	var errs []error
	var audFrom, baseFrom *Fragment
	nAccounts, nAgents := 0, 0
	for _, f := range frags {
		nAccounts += len(f.accounts)
		nAgents += len(f.agents)
		if f.audience != "" {
			if audFrom != nil {
				errs = append(errs, fmt.Errorf("policy: Audience is set in fragments %q and %q: set it in one fragment only", audFrom.name, f.name))
			} else {
				audFrom = f
			}
		}
		if f.baseURL != "" {
			if baseFrom != nil {
				errs = append(errs, fmt.Errorf("policy: BaseUrl is set in fragments %q and %q: set it in one fragment only", baseFrom.name, f.name))
			} else {
				baseFrom = f
			}
		}
	}
	p := &Policy{BaseUrl: DefaultBaseURL, accounts: newTable[*Account](nAccounts), agents: newTable[*Agent](nAgents)}
	accounts, agents := p.accounts.fresh(), p.agents.fresh()
	if audFrom != nil {
		p.Audience = audFrom.audience
	}
	if baseFrom != nil {
		p.BaseUrl, p.baseURL = baseFrom.baseURL, baseFrom.base
	}
	if p.baseURL == nil { // unset, or refused (already reported)
		p.baseURL, _ = url.Parse(DefaultBaseURL)
	}
	byName := make(map[string]*Fragment, len(frags))
	base := p.baseURL.String()
	for _, f := range frags {
		errs = p.add(f, base, accounts, agents, errs)
		byName[f.name] = f
	}
	return m.finish(p, byName, p.Agents(), errs)
}

// patch builds the policy from the last one: removed fragments' entries
// out, added ones' in.
func (m *Merger) patch(added, removed []*Fragment) (*Policy, error) {
	accounts, agents := m.last.accounts.edit(), m.last.agents.edit()
	p := &Policy{Audience: m.last.Audience, BaseUrl: m.last.BaseUrl, baseURL: m.last.baseURL,
		accounts: accounts.t, agents: agents.t}
	// m.frags is patched in place (a copy of 40,000 entries was a third
	// of a one-fragment change) and put back if the merge is refused.
	byName := m.frags
	var undo []*Fragment // the entries replaced or removed, in order
	var undoNames []string
	set := func(name string, f *Fragment) {
		undo, undoNames = append(undo, byName[name]), append(undoNames, name)
		if f == nil {
			delete(byName, name)
		} else {
			byName[name] = f
		}
	}
	var goneAccounts []string
	for _, f := range removed {
		set(f.name, nil)
		for _, a := range f.accounts {
			if cur := p.Account(a.name); cur != nil && cur.from == f.name {
				accounts.delete(a.name)
				goneAccounts = append(goneAccounts, a.name)
			}
		}
		for _, ag := range f.agents {
			if cur := p.Agent(ag.id); cur != nil && cur.from == f.name {
				agents.delete(ag.id)
			}
		}
	}
	slices.SortFunc(added, func(a, b *Fragment) int { return cmp.Compare(a.name, b.name) })
	var errs []error
	base := p.baseURL.String()
	for _, f := range added {
		errs = p.add(f, base, accounts, agents, errs)
		set(f.name, f)
	}
	// The last merge was good: every agent's accounts were defined. Unless
	// an account is gone for good, only the added agents need checking.
	check := func(yield func(string, *Agent) bool) {
		for _, f := range added {
			for _, ag := range f.agents {
				if p.Agent(ag.id) == ag && !yield(ag.id, ag) {
					return
				}
			}
		}
	}
	for _, name := range goneAccounts {
		if p.Account(name) == nil {
			check = p.Agents()
			break
		}
	}
	pol, err := m.finish(p, byName, check, errs)
	if err != nil {
		for i := len(undo) - 1; i >= 0; i-- {
			if undo[i] == nil {
				delete(byName, undoNames[i])
			} else {
				byName[undoNames[i]] = undo[i]
			}
		}
	}
	return pol, err
}

// add puts f's entries into p (through the tables' edits), refusing names
// p already has.
func (p *Policy) add(f *Fragment, base string, accounts *tableEdit[*Account], agents *tableEdit[*Agent], errs []error) []error {
	for _, a := range f.resolve(base) {
		if prev := p.Account(a.name); prev != nil {
			errs = append(errs, fmt.Errorf("policy: account %q is defined in fragments %q and %q: define it in one", a.name, prev.from, f.name))
			continue
		}
		accounts.set(a.name, a)
	}
	for _, ag := range f.agents {
		if prev := p.Agent(ag.id); prev != nil {
			errs = append(errs, fmt.Errorf("policy: agent %q is defined in fragments %q and %q: define it in one", ag.id, prev.from, f.name))
			continue
		}
		agents.set(ag.id, ag)
	}
	return errs
}

// finish checks what needs the whole policy, the agents' accounts for the
// agents in check, and, when all is well, makes p the Merger's last good
// merge.
func (m *Merger) finish(p *Policy, byName map[string]*Fragment, check iter.Seq2[string, *Agent], errs []error) (*Policy, error) {
	if p.Audience == "" {
		errs = append(errs, errors.New("policy: Audience: required (the broker's URL, as agents send it)"))
	}
	if p.NumAccounts() == 0 {
		errs = append(errs, errors.New("policy: Accounts: at least one account is required"))
	}
	for id, ag := range check {
		for _, acct := range ag.Accounts {
			if p.Account(acct) == nil {
				errs = append(errs, fmt.Errorf("%sagent %q: Accounts: unknown account %q", fragmentWhere(ag.from), id, acct))
			}
		}
	}
	if len(errs) > 0 {
		// Map order is random; a reader (and a diff of two runs) wants a stable list.
		slices.SortStableFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return nil, errors.Join(errs...)
	}
	m.last, m.frags = p, byName
	return p, nil
}

// resolve returns f's accounts with their DICOMweb URLs under base. The
// copies are kept until BaseUrl changes, so merging an unchanged fragment
// again allocates nothing, and the accounts of the policy in force are
// never written to.
func (f *Fragment) resolve(base string) []*Account {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resolved != nil && f.resolvedBase == base {
		return f.resolved
	}
	// One allocation for the copies: most fragments hold one account.
	copies := make([]Account, 0, len(f.accounts))
	out := make([]*Account, 0, len(f.accounts))
	for _, a := range f.accounts {
		copies = append(copies, *a)
		cp := &copies[len(copies)-1]
		// One concatenation, one string: StorePath, inlined.
		cp.dicomWebURL = base + "projects/" + a.Project + "/locations/" + a.Location + "/datasets/" + a.Dataset + "/dicomStores/" + a.DicomStore + "/dicomWeb/"
		out = append(out, cp)
	}
	f.resolvedBase, f.resolved = base, out
	return out
}
