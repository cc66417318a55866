package policy

import (
	"fmt"
	"maps"
	"slices"
	"testing"
)

// TestTableEditLeavesTheOldTableAlone: an edit of a table in force copies
// only the shards it writes; the old table reads as before, and both
// count and list their own entries.
func TestTableEditLeavesTheOldTableAlone(t *testing.T) {
	old := newTable[int](1000)
	w := old.fresh()
	for i := range 1000 {
		w.set(fmt.Sprint("k", i), i)
	}
	want := maps.Collect(old.all())
	e := old.edit()
	for _, step := range []struct {
		op  string
		key string
	}{
		{"set", "k1"}, {"set", "new"}, {"delete", "k2"}, {"delete", "absent"}, {"set", "new"},
	} {
		if step.op == "set" {
			e.set(step.key, -1)
		} else {
			e.delete(step.key)
		}
	}
	if got := maps.Collect(old.all()); !maps.Equal(got, want) || old.len() != 1000 {
		t.Fatalf("the old table changed: %d entries, len %d", len(got), old.len())
	}
	got := maps.Collect(e.t.all())
	if e.t.len() != 1000 || len(got) != 1000 || got["k1"] != -1 || got["new"] != -1 {
		t.Fatalf("edited table: len %d, %d listed, k1=%d new=%d", e.t.len(), len(got), got["k1"], got["new"])
	}
	if _, ok := e.t.get("k2"); ok {
		t.Fatal("a deleted key is still there")
	}
	shared := 0
	for i := range e.t.shards {
		if e.t.shards[i] == old.shards[i] {
			shared++
		}
	}
	if shared < tableShards-3 {
		t.Fatalf("%d of %d shards shared after writing 3 keys", shared, tableShards)
	}
	gone, added := e.t.changes(old, func(a, b int) bool { return a == b })
	slices.Sort(gone)
	slices.Sort(added)
	if !slices.Equal(gone, []int{1, 2}) || !slices.Equal(added, []int{-1, -1}) {
		t.Fatalf("changes: gone %v, added %v; want [1 2] and [-1 -1] (k1 redefined, k2 removed, new added)", gone, added)
	}
}
