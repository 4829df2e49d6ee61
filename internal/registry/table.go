package registry

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"

	"github.com/weakref/registry/internal/handle"
)

// entryTable is a shard's map from ID to entry, and its index in ID order
// for List: an open-addressing hash table of bare entry pointers, probed
// linearly, whose key is the entry's own ID and whose hash keeps the IDs'
// order (an ordered hash table, as Amble and Knuth's). A Go
// map[handle.ID]*entry keeps the 16-byte key beside the pointer in every
// slot and cost 53 bytes an object at 1M objects, and a B-tree beside it
// for List another 22 to 27; this costs 8 bytes a slot at a load between
// 1/2 and 3/4, 11 to 16 bytes an object, for both. A probe reads the entry
// it finds, which a hit reads anyway.
//
// An ID's home slot is its place in the shard's part of the ID space
// scaled to the table (see homeOf), so homes rise with IDs; entries are
// kept in ID order across the whole table, each at or after its home, and
// no empty slot lies between an entry's home and the entry. A walk of the
// slots is then a walk in ID order, and the first entry at or after an ID
// lies at or after its home. IDs are 128 random bits of the registry's own
// minting, so they spread evenly over the homes, and nobody can choose IDs
// that crowd one cluster of the table. The slots run on past the last home
// (spare) for the cluster there, never wrapping round to the first, which
// would break the order; an insert that would run past them grows them.
// Deleting shifts the cluster back over the hole (no tombstones), so a
// probe ends at the first empty slot.
//
// Every ID in one table has the same first byte modulo shardCount, its
// shard's (see homeOf). Its writers hold the shard's write lock (through
// shard.lock); get, each and ascend hold at least its read lock; peek
// reads it holding neither (see slotArray).
type entryTable struct {
	// arr is the table's slots, swapped whole when they grow. peek loads
	// it atomically, the one word of the table it reads outside an
	// array.
	arr atomic.Pointer[slotArray] // nil until the first put
	n   int
}

// slotArray is a table's slots and how many of them are homes. Both are
// immutable once published in entryTable.arr: growing the table makes a
// new slotArray, fills it and only then stores it, and the old one is
// never written again. Only the slots' contents change in place, under
// the shard's write lock. So a reader without the lock that loads arr
// gets a length and a homes that belong together (the atomic store and
// load order their writes before its reads, for the race detector too),
// and every index it bounds by len(s) is inside s, whatever the writers
// do meanwhile.
type slotArray struct {
	homes int      // how many slots are homes
	s     []*entry // homes slots, then the spare
}

// slots returns the table's current array, nil while it has none.
func (t *entryTable) slots() *slotArray { return t.arr.Load() }

// keyOf maps an ID to 64 bits that rise with it among the IDs of one
// shard: the two high bits of its first byte (the others are the shard's),
// then its next 62 bits. Ties are broken by the whole ID (lessID).
//
// It reads the ID as its two aligned halves: a load of bytes 1 to 8
// straddles the two stores that just wrote a parsed ID, which the
// processor cannot forward, and that stall was a tenth of a Resolve hit.
func keyOf(id *handle.ID) uint64 {
	hi, lo := binary.BigEndian.Uint64(id[:8]), binary.BigEndian.Uint64(id[8:])
	return hi>>62<<62 | (hi<<8|lo>>56)>>2
}

// homeOf returns the home slot of an ID of key k: its key scaled to the
// homes, so that homes rise with keys and spread evenly over the slots.
func (a *slotArray) homeOf(k uint64) int {
	hi, _ := bits.Mul64(k, uint64(a.homes))
	return int(hi)
}

// lessID orders IDs bytewise, as List does.
func lessID(a, b *handle.ID) bool {
	if x, y := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8]); x != y {
		return x < y
	}
	return binary.BigEndian.Uint64(a[8:]) < binary.BigEndian.Uint64(b[8:])
}

// get returns id's entry, or nil.
func (t *entryTable) get(id handle.ID) *entry {
	if t.n == 0 {
		return nil
	}
	a := t.slots()
	for i := a.homeOf(keyOf(&id)); i < len(a.s); i++ {
		e := a.s[i]
		if e == nil || e.id == id {
			return e
		}
	}
	return nil
}

// put adds e, or replaces the entry of its ID.
func (t *entryTable) put(e *entry) {
	if a := t.slots(); a == nil || (t.n+1)*4 > a.homes*3 {
		homes := 0
		if a != nil {
			homes = a.homes
		}
		t.resize(max(8, homes*3/2), 0)
	}
	for {
		a := t.slots()
		added, ok := a.insert(e)
		if ok {
			if added {
				t.n++
			}
			return
		}
		t.resize(a.homes, 2*a.spare()) // the last cluster ran past the spare
	}
}

// spare returns how many slots follow the last home.
func (a *slotArray) spare() int { return len(a.s) - a.homes }

// spareFor returns the spare slots a table of homes homes starts with:
// the cluster at the end is as long as any, rarely more than a few dozen.
func spareFor(homes int) int { return 16 + homes/64 }

// insert puts e in its place in ID order, reporting whether it was absent;
// ok is false, changing nothing, when the cluster it joins would run past
// the last slot.
func (a *slotArray) insert(e *entry) (added, ok bool) {
	slots := a.s
	i := a.homeOf(keyOf(&e.id))
	for ; i < len(slots); i++ {
		cur := slots[i]
		if cur == nil || !lessID(&cur.id, &e.id) {
			break
		}
	}
	if i == len(slots) {
		return false, false
	}
	if cur := slots[i]; cur != nil && cur.id == e.id {
		slots[i] = e
		return false, true
	}
	j := i // the first empty slot from i: the cluster's rest moves up one
	for j < len(slots) && slots[j] != nil {
		j++
	}
	if j == len(slots) {
		return false, false
	}
	copy(slots[i+1:j+1], slots[i:j])
	slots[i] = e
	return true, true
}

// resize makes the table homes homes and at least spare spare slots, and
// places the entries again in order: each at its new home, or just after
// the one before it. The new array is published only once it is full
// (see slotArray).
func (t *entryTable) resize(homes, spare int) {
	var old []*entry
	if a := t.slots(); a != nil {
		old = a.s
	}
	for {
		a := &slotArray{homes: homes, s: make([]*entry, homes+max(spare, spareFor(homes)))}
		if a.place(old) {
			t.arr.Store(a)
			return
		}
		spare = 2 * (len(a.s) - homes) // the last cluster ran past the spare
	}
}

// place puts old's entries, in order, into the empty slots, reporting
// false if they do not fit.
func (a *slotArray) place(old []*entry) bool {
	next := 0 // the first slot the next entry may take
	for _, e := range old {
		if e == nil {
			continue
		}
		i := max(a.homeOf(keyOf(&e.id)), next)
		if i == len(a.s) {
			return false
		}
		a.s[i] = e
		next = i + 1
	}
	return true
}

// del removes id's entry, if any.
func (t *entryTable) del(id handle.ID) {
	if t.n == 0 {
		return
	}
	a := t.slots()
	slots := a.s
	i := a.homeOf(keyOf(&id))
	for {
		if i == len(slots) || slots[i] == nil {
			return
		}
		if slots[i].id == id {
			break
		}
		i++
	}
	// Shift back each later entry of the cluster that is past its home,
	// up to the first one at its home: in ID order, none after that one
	// may pass it.
	for ; i+1 < len(slots); i++ {
		next := slots[i+1]
		if next == nil || a.homeOf(keyOf(&next.id)) > i {
			break
		}
		slots[i] = next
	}
	slots[i] = nil
	t.n--
}

// len returns the number of entries.
func (t *entryTable) len() int { return t.n }

// each calls f with every entry, in ID order, until f returns false. f
// must not change the table.
func (t *entryTable) each(f func(*entry) bool) {
	a := t.slots()
	if a == nil {
		return
	}
	for _, e := range a.s {
		if e != nil && !f(e) {
			return
		}
	}
}

// ascend calls f with every entry whose ID is from or after it, in ID
// order, until f returns false. from has the table's shard, as every ID
// in it. f must not change the table.
func (t *entryTable) ascend(from handle.ID, f func(*entry) bool) {
	if t.n == 0 {
		return
	}
	a := t.slots()
	// Entries before from may lie past its home; none after it lies
	// before.
	for i := a.homeOf(keyOf(&from)); i < len(a.s); i++ {
		if e := a.s[i]; e != nil && !lessID(&e.id, &from) && !f(e) {
			return
		}
	}
}
