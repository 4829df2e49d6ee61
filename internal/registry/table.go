package registry

import (
	"encoding/binary"
	"math/bits"

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
// shard's (see homeOf). It is not safe for concurrent use: the shard's mu
// guards it.
type entryTable struct {
	slots []*entry // homes slots, then the spare; nil when homes is 0
	homes int      // how many slots are homes
	n     int
}

// keyOf maps an ID to 64 bits that rise with it among the IDs of one
// shard: the two high bits of its first byte (the others are the shard's),
// then its next 62 bits. Ties are broken by the whole ID (lessID).
func keyOf(id *handle.ID) uint64 {
	return uint64(id[0]>>6)<<62 | binary.BigEndian.Uint64(id[1:9])>>2
}

// homeOf returns the home slot of an ID of key k: its key scaled to the
// homes, so that homes rise with keys and spread evenly over the slots.
func (t *entryTable) homeOf(k uint64) int {
	hi, _ := bits.Mul64(k, uint64(t.homes))
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
	for i := t.homeOf(keyOf(&id)); i < len(t.slots); i++ {
		e := t.slots[i]
		if e == nil || e.id == id {
			return e
		}
	}
	return nil
}

// put adds e, or replaces the entry of its ID.
func (t *entryTable) put(e *entry) {
	if (t.n+1)*4 > t.homes*3 {
		t.resize(max(8, t.homes*3/2), 0)
	}
	for {
		added, ok := t.insert(e)
		if ok {
			if added {
				t.n++
			}
			return
		}
		t.resize(t.homes, 2*t.spare()) // the last cluster ran past the spare
	}
}

// spare returns how many slots follow the last home.
func (t *entryTable) spare() int { return len(t.slots) - t.homes }

// spareFor returns the spare slots a table of homes homes starts with:
// the cluster at the end is as long as any, rarely more than a few dozen.
func spareFor(homes int) int { return 16 + homes/64 }

// insert puts e in its place in ID order, reporting whether it was absent;
// ok is false, changing nothing, when the cluster it joins would run past
// the last slot.
func (t *entryTable) insert(e *entry) (added, ok bool) {
	i := t.homeOf(keyOf(&e.id))
	for ; i < len(t.slots); i++ {
		cur := t.slots[i]
		if cur == nil || !lessID(&cur.id, &e.id) {
			break
		}
	}
	if i == len(t.slots) {
		return false, false
	}
	if cur := t.slots[i]; cur != nil && cur.id == e.id {
		t.slots[i] = e
		return false, true
	}
	j := i // the first empty slot from i: the cluster's rest moves up one
	for j < len(t.slots) && t.slots[j] != nil {
		j++
	}
	if j == len(t.slots) {
		return false, false
	}
	copy(t.slots[i+1:j+1], t.slots[i:j])
	t.slots[i] = e
	return true, true
}

// resize makes the table homes homes and at least spare spare slots, and
// places the entries again in order: each at its new home, or just after
// the one before it.
func (t *entryTable) resize(homes, spare int) {
	old := t.slots
	for {
		t.homes = homes
		t.slots = make([]*entry, homes+max(spare, spareFor(homes)))
		if t.place(old) {
			return
		}
		spare = 2 * (len(t.slots) - homes) // the last cluster ran past the spare
	}
}

// place puts old's entries, in order, into the empty slots, reporting
// false if they do not fit.
func (t *entryTable) place(old []*entry) bool {
	next := 0 // the first slot the next entry may take
	for _, e := range old {
		if e == nil {
			continue
		}
		i := max(t.homeOf(keyOf(&e.id)), next)
		if i == len(t.slots) {
			return false
		}
		t.slots[i] = e
		next = i + 1
	}
	return true
}

// del removes id's entry, if any.
func (t *entryTable) del(id handle.ID) {
	if t.n == 0 {
		return
	}
	i := t.homeOf(keyOf(&id))
	for {
		if i == len(t.slots) || t.slots[i] == nil {
			return
		}
		if t.slots[i].id == id {
			break
		}
		i++
	}
	// Shift back each later entry of the cluster that is past its home,
	// up to the first one at its home: in ID order, none after that one
	// may pass it.
	for ; i+1 < len(t.slots); i++ {
		next := t.slots[i+1]
		if next == nil || t.homeOf(keyOf(&next.id)) > i {
			break
		}
		t.slots[i] = next
	}
	t.slots[i] = nil
	t.n--
}

// len returns the number of entries.
func (t *entryTable) len() int { return t.n }

// each calls f with every entry, in ID order, until f returns false. f
// must not change the table.
func (t *entryTable) each(f func(*entry) bool) {
	for _, e := range t.slots {
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
	// Entries before from may lie past its home; none after it lies
	// before.
	for i := t.homeOf(keyOf(&from)); i < len(t.slots); i++ {
		if e := t.slots[i]; e != nil && !lessID(&e.id, &from) && !f(e) {
			return
		}
	}
}
