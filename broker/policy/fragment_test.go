package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

func frag(t *testing.T, name, doc string) *Fragment {
	t.Helper()
	f, err := ParseFragment(name, []byte(doc))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return f
}

func accountDoc(names ...string) string {
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf(`%q:{"Project":"p","Location":"l","Dataset":"d","DicomStore":%q,"ServiceAccountSecret":"/k"}`, n, n))
	}
	return `{"Accounts":{` + strings.Join(parts, ",") + `}}`
}

func agentDoc(t *testing.T, id string, accts ...string) string {
	q := make([]string, len(accts))
	for i, a := range accts {
		q[i] = fmt.Sprintf("%q", a)
	}
	return fmt.Sprintf(`{"Agents":{%q:{"PublicKey":%q,"Accounts":[%s]}}}`, id, pubKey(t), strings.Join(q, ","))
}

// TestMergerMatchesFullMerge: each step's incremental merge gives what a
// merge from scratch of the same fragments gives, policy or errors, and a
// refused step leaves the Merger at its last good merge.
func TestMergerMatchesFullMerge(t *testing.T) {
	base := frag(t, "base", `{"Audience":"https://b.example/"}`)
	base2 := frag(t, "base", `{"Audience":"https://b.example/","BaseUrl":"http://127.0.0.1:9/v1/"}`)
	a1 := frag(t, "a1", accountDoc("s1", "s2"))
	a1b := frag(t, "a1", accountDoc("s1"))
	a2 := frag(t, "a2", accountDoc("s3"))
	a2dup := frag(t, "a2", accountDoc("s3", "s1"))
	g1 := frag(t, "g1", agentDoc(t, "site1", "s1", "s2"))
	g2 := frag(t, "g2", agentDoc(t, "site2", "s3"))
	g2dup := frag(t, "g3", agentDoc(t, "site2", "s1"))
	aud2 := frag(t, "zz", `{"Audience":"https://c.example/"}`)
	g4 := frag(t, "g4", agentDoc(t, "site4", "s3", "nope"))
	a3 := frag(t, "a3", accountDoc("s2"))

	steps := []struct {
		name  string
		frags []*Fragment
		err   string
	}{
		{"start", []*Fragment{base, a1, g1}, ""},
		{"agent and account added", []*Fragment{base, a1, a2, g1, g2}, ""},
		{"unchanged", []*Fragment{base, a1, a2, g1, g2}, ""},
		{"account removed that an agent uses", []*Fragment{base, a1b, a2, g1, g2}, `fragment "g1": agent "site1": Accounts: unknown account "s2"`},
		{"account defined twice", []*Fragment{base, a1, a2dup, g1, g2}, `account "s1" is defined in fragments "a1" and "a2"`},
		{"agent defined twice", []*Fragment{base, a1, a2, g1, g2, g2dup}, `agent "site2" is defined in fragments "g2" and "g3"`},
		{"Audience twice", []*Fragment{base, a1, a2, g1, g2, aud2}, `Audience is set in fragments "base" and "zz"`},
		{"agent added with an unknown account", []*Fragment{base, a1, a2, g1, g2, g4}, `fragment "g4": agent "site4": Accounts: unknown account "nope"`},
		{"account moved to another fragment", []*Fragment{base, a1b, a2, a3, g1, g2}, ""},
		{"moved back", []*Fragment{base, a1, a2, g1, g2}, ""},
		{"agent gone", []*Fragment{base, a1, a2, g1}, ""},
		{"BaseUrl set", []*Fragment{base2, a1, a2, g1}, ""},
		{"Audience gone", []*Fragment{a1, a2, g1}, "Audience: required"},
		{"back", []*Fragment{base, a1, a2, g1, g2}, ""},
	}
	var m, u Merger // u is given only what changed (Update)
	var good *Policy
	var goodFrags map[string]*Fragment
	for i, s := range steps {
		got, err := m.Merge(s.frags)
		want, wantErr := Merge(s.frags)
		if fmt.Sprint(err) != fmt.Sprint(wantErr) {
			t.Fatalf("%s: incremental error %v, full %v", s.name, err, wantErr)
		}
		var upd *Policy
		var updErr error
		if i == 0 {
			upd, updErr = u.Merge(s.frags)
		} else {
			var changed []*Fragment
			gone := slices.Collect(maps.Keys(u.frags))
			for _, f := range s.frags {
				if u.frags[f.name] != f {
					changed = append(changed, f)
				}
				gone = slices.DeleteFunc(gone, func(n string) bool { return n == f.name })
			}
			upd, updErr = u.Update(changed, gone)
		}
		if fmt.Sprint(updErr) != fmt.Sprint(wantErr) {
			t.Fatalf("%s: Update error %v, full %v", s.name, updErr, wantErr)
		}
		if updErr == nil && (!slices.Equal(slices.Sorted(maps.Keys(maps.Collect(upd.Accounts()))), slices.Sorted(maps.Keys(maps.Collect(want.Accounts())))) ||
			!slices.Equal(slices.Sorted(maps.Keys(maps.Collect(upd.Agents()))), slices.Sorted(maps.Keys(maps.Collect(want.Agents())))) || upd.Audience != want.Audience) {
			t.Fatalf("%s: Update %+v, full %+v", s.name, upd, want)
		}
		if s.err != "" {
			if err == nil || !strings.Contains(err.Error(), s.err) {
				t.Fatalf("%s: err = %v, want %q", s.name, err, s.err)
			}
			if m.last != good || !maps.Equal(m.frags, goodFrags) || !maps.Equal(u.frags, goodFrags) {
				t.Fatalf("%s: a refused merge moved the Merger", s.name)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		good, goodFrags = got, maps.Clone(m.frags)
		if got.Audience != want.Audience || got.BaseUrl != want.BaseUrl ||
			!slices.Equal(slices.Sorted(maps.Keys(maps.Collect(got.Accounts()))), slices.Sorted(maps.Keys(maps.Collect(want.Accounts())))) ||
			!slices.Equal(slices.Sorted(maps.Keys(maps.Collect(got.Agents()))), slices.Sorted(maps.Keys(maps.Collect(want.Agents())))) {
			t.Fatalf("%s: incremental %+v, full %+v", s.name, got, want)
		}
		for name, a := range got.Accounts() {
			if a.DICOMwebURL() != want.Account(name).DICOMwebURL() || a.CacheKey() != want.Account(name).CacheKey() {
				t.Fatalf("%s: account %s differs", s.name, name)
			}
		}
	}
}

// TestMergeLeavesPolicyInForceAlone: merging against a new BaseUrl does
// not write to the accounts of a policy already built (they may be in
// force, read by requests).
func TestMergeLeavesPolicyInForceAlone(t *testing.T) {
	base := frag(t, "base", `{"Audience":"https://b.example/"}`)
	a := frag(t, "a", accountDoc("s"))
	p1, err := Merge([]*Fragment{base, a})
	if err != nil {
		t.Fatal(err)
	}
	before := p1.Account("s").DICOMwebURL()
	if _, err := Merge([]*Fragment{frag(t, "base", `{"Audience":"https://b.example/","BaseUrl":"http://127.0.0.1:9/v1/"}`), a}); err != nil {
		t.Fatal(err)
	}
	if p1.Account("s").DICOMwebURL() != before {
		t.Fatal("the earlier policy's account changed")
	}
}
