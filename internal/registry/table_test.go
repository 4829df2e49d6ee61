package registry

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/weakref/registry/internal/handle"
)

// TestEntryTableAgreesWithAMap runs random puts, replacements and deletes
// on a table and on a Go map, with IDs crowded onto few home slots so that
// clusters form, run into the spare slots past the last home and are cut
// by deletes, and checks after every step that the two agree on every ID
// ever used, and that a walk of the table, whole or from any ID, gives the
// map's IDs in order.
func TestEntryTableAgreesWithAMap(t *testing.T) {
	tests := []struct {
		name  string
		homes uint64 // distinct keys the IDs start with
		last  bool   // the keys are the largest there are: clusters at the end
	}{
		{name: "three keys", homes: 3},
		{name: "three keys at the end", homes: 3, last: true},
		{name: "64 keys at the end", homes: 64, last: true},
		{name: "random", homes: 1 << 62},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(tt.homes, 7))
			const shard = 5 // every ID's first byte is 5 modulo shardCount
			var tab entryTable
			ref := map[handle.ID]*entry{}
			var ids []handle.ID
			steps := 20000
			if tt.homes <= 64 {
				steps = 2000 // crowded: every probe walks a long cluster
			}
			newID := func() handle.ID {
				var id handle.ID
				k := rng.Uint64()
				if tt.homes <= 64 {
					k = rng.Uint64N(tt.homes) << 2
					if tt.last {
						k = ^k
					}
				}
				id[0] = shard + byte(k>>62)<<6
				binary.BigEndian.PutUint64(id[1:9], k<<2)
				for i := 9; i < len(id); i++ {
					id[i] = byte(rng.Uint32()) // ties broken here
				}
				return id
			}
			for step := range steps {
				switch op := rng.IntN(10); {
				case op < 5 || len(ids) == 0: // a new ID
					id := newID()
					ids = append(ids, id)
					e := &entry{id: id}
					tab.put(e)
					ref[id] = e
				case op < 6: // replace
					id := ids[rng.IntN(len(ids))]
					e := &entry{id: id}
					tab.put(e)
					ref[id] = e
				default:
					id := ids[rng.IntN(len(ids))]
					tab.del(id)
					delete(ref, id)
				}
				if tab.len() != len(ref) {
					t.Fatalf("step %d: %d entries, want %d", step, tab.len(), len(ref))
				}
				if step%97 == 0 || tt.homes <= 64 {
					for _, id := range ids {
						if got := tab.get(id); got != ref[id] {
							t.Fatalf("step %d: get(%x) = %p, want %p", step, id, got, ref[id])
						}
					}
				}
				if step%101 == 0 {
					wantTableOrder(t, &tab, ref, newID())
				}
			}
			wantTableOrder(t, &tab, ref, handle.ID{shard})
		})
	}
}

// wantTableOrder checks that each walks ref's entries in ID order, and
// that ascend from from walks those from from on.
func wantTableOrder(t *testing.T, tab *entryTable, ref map[handle.ID]*entry, from handle.ID) {
	t.Helper()
	var want []*entry
	for _, e := range ref {
		want = append(want, e)
	}
	slices.SortFunc(want, func(a, b *entry) int { return compareIDs(a.id, b.id) })
	var got []*entry
	tab.each(func(e *entry) bool { got = append(got, e); return true })
	if !slices.Equal(got, want) {
		t.Fatalf("each gave %d entries, not the map's %d in ID order", len(got), len(want))
	}
	got = got[:0]
	tab.ascend(from, func(e *entry) bool { got = append(got, e); return true })
	i, _ := slices.BinarySearchFunc(want, from, func(e *entry, id handle.ID) int { return compareIDs(e.id, id) })
	if !slices.Equal(got, want[i:]) {
		t.Fatalf("ascend from %x gave %d entries, want the %d from there in ID order", from, len(got), len(want)-i)
	}
	// A walk stops when told.
	n := 0
	tab.ascend(from, func(*entry) bool { n++; return n < 3 })
	if want := min(3, len(want)-i); n != want {
		t.Fatalf("ascend told to stop at the third entry called f %d times, want %d", n, want)
	}
}

// TestEntryTableSizes: the table grows by half as it fills, and a table
// of a million objects' shard costs at most 16 bytes an entry.
func TestEntryTableSizes(t *testing.T) {
	var tab entryTable
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1 << 14 { // a shard's part of a million
		var id handle.ID
		binary.BigEndian.PutUint64(id[:8], rng.Uint64())
		binary.BigEndian.PutUint64(id[8:], rng.Uint64())
		id[0] = id[0]&^(shardCount-1) | 9
		tab.put(&entry{id: id})
	}
	if load := float64(tab.n) / float64(tab.slots().homes); load < 0.5 || load > 0.75 {
		t.Fatalf("load %.2f, want between 1/2 and 3/4", load)
	}
	if per := 8 * float64(len(tab.slots().s)) / float64(tab.n); per > 16 {
		t.Fatalf("%.1f bytes an entry, want at most 16", per)
	}
}
