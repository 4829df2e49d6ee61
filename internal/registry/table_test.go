package registry

import (
	"math/rand/v2"
	"testing"

	"github.com/weakref/registry/internal/handle"
)

// TestEntryTableAgreesWithAMap runs random puts (put and putNew, both),
// replacements and deletes on a table and on a Go map, with IDs crowded
// onto few home slots so that clusters form, wrap around the end and are
// cut by deletes, and checks after every step that the two agree on every
// ID ever used.
func TestEntryTableAgreesWithAMap(t *testing.T) {
	for _, homes := range []uint64{3, 64, 1 << 62} {
		rng := rand.New(rand.NewPCG(homes, 7))
		var tab entryTable
		ref := map[handle.ID]*entry{}
		var ids []handle.ID
		steps := 20000
		if homes <= 64 {
			steps = 2000 // crowded: every probe walks a long cluster
		}
		for step := range steps {
			switch op := rng.IntN(10); {
			case op < 5 || len(ids) == 0: // a new ID
				var id handle.ID
				id[0] = byte(step)
				id[1] = byte(step >> 8)
				id[2] = byte(step >> 16)
				h := ^uint64(0) - rng.Uint64N(homes) // the last slots: clusters wrap
				if homes > 64 {
					h = rng.Uint64()
				}
				for i := range 8 {
					id[8+i] = byte(h >> (8 * i))
				}
				ids = append(ids, id)
				e := &entry{id: id}
				if step%2 == 0 {
					tab.putNew(e) // as Put adds a minted ID
				} else {
					tab.put(e)
				}
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
				t.Fatalf("homes %d, step %d: %d entries, want %d", homes, step, tab.len(), len(ref))
			}
			if step%97 == 0 || homes <= 64 {
				for _, id := range ids {
					if got := tab.get(id); got != ref[id] {
						t.Fatalf("homes %d, step %d: get(%x) = %p, want %p", homes, step, id, got, ref[id])
					}
				}
			}
		}
		seen := 0
		tab.each(func(e *entry) bool {
			if ref[e.id] != e {
				t.Fatalf("each gave %x, which the map does not hold", e.id)
			}
			seen++
			return true
		})
		if seen != len(ref) {
			t.Fatalf("each gave %d entries, want %d", seen, len(ref))
		}
	}
}
