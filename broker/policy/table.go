package policy

import (
	"hash/maphash"
	"iter"
	"maps"
)

// tableShards is how many maps a table is split into.
const tableShards = 64

// seed is the process's hash seed for choosing shards (maphash keeps it
// secret, so names cannot be picked to pile into one shard).
var seed = maphash.MakeSeed()

// table is a merged policy's accounts or agents, split into shards so that
// the next policy, one fragment changed, shares every shard but the ones
// it touches: a change copies about 1/64 of the fleet, not 30,000 entries
// (a copy of which held requests off the one vCPU for milliseconds). A
// table is read-only once its policy is built.
type table[V any] struct {
	shards [tableShards]*shard[V] // a shard is shared until written
	n      int
}

// shard is one part of a table; tables share a shard by pointer, which is
// also how two tables tell the shards they share (changes).
type shard[V any] struct{ m map[string]V }

func shardOf(k string) int { return int(maphash.String(seed, k) % tableShards) }

// newTable returns an empty table sized for about n entries.
func newTable[V any](n int) *table[V] {
	t := &table[V]{}
	for i := range t.shards {
		t.shards[i] = &shard[V]{m: make(map[string]V, n/tableShards+1)}
	}
	return t
}

func (t *table[V]) get(k string) (V, bool) {
	v, ok := t.shards[shardOf(k)].m[k]
	return v, ok
}

func (t *table[V]) len() int { return t.n }

// all yields every entry, in no order.
func (t *table[V]) all() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for _, sh := range t.shards {
			for k, v := range sh.m {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}

// tableEdit builds a new table from an old one, copying a shard the first
// time it is written (the old table, perhaps in force, is never written).
type tableEdit[V any] struct {
	t     *table[V]
	owned uint64 // bit i: shard i is the new table's own
}

// edit starts a new table sharing every shard of t.
func (t *table[V]) edit() *tableEdit[V] {
	cp := *t
	return &tableEdit[V]{t: &cp}
}

// fresh edits t as a table of its own (being built: nothing shares it).
func (t *table[V]) fresh() *tableEdit[V] { return &tableEdit[V]{t: t, owned: ^uint64(0)} }

func (e *tableEdit[V]) shard(k string) map[string]V {
	i := shardOf(k)
	if e.owned&(1<<i) == 0 {
		e.t.shards[i] = &shard[V]{m: maps.Clone(e.t.shards[i].m)}
		e.owned |= 1 << i
	}
	return e.t.shards[i].m
}

func (e *tableEdit[V]) set(k string, v V) {
	m := e.shard(k)
	if _, ok := m[k]; !ok {
		e.t.n++
	}
	m[k] = v
}

func (e *tableEdit[V]) delete(k string) {
	if _, ok := e.t.get(k); !ok {
		return
	}
	delete(e.shard(k), k)
	e.t.n--
}

// changes yields, shard by shard where t and old do not share one, the
// entries of old that t has not (or holds another value for: compared
// with same), then those of t that old has not. Shared shards cost
// nothing, so after a patch this is the size of what changed.
func (t *table[V]) changes(old *table[V], same func(a, b V) bool) (gone, added []V) {
	for i, sh := range t.shards {
		was := old.shards[i]
		if sh == was {
			continue
		}
		for k, v := range was.m {
			if now, ok := sh.m[k]; !ok || !same(now, v) {
				gone = append(gone, v)
			}
		}
		for k, v := range sh.m {
			if prev, ok := was.m[k]; !ok || !same(prev, v) {
				added = append(added, v)
			}
		}
	}
	return gone, added
}
