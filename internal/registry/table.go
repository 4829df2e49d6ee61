package registry

import (
	"encoding/binary"

	"github.com/weakref/registry/internal/handle"
)

// entryTable is a shard's map from ID to entry: an open-addressing hash
// table of bare entry pointers, probed linearly, whose key is the entry's
// own ID. A Go map[handle.ID]*entry keeps the 16-byte key beside the
// pointer in every slot and cost 53 bytes an object at 1M objects; this
// costs 8 bytes a slot at a load between 3/8 and 3/4, 11 to 21 bytes an
// object. A probe reads the entry it finds, which a hit reads anyway.
//
// IDs are 128 random bits of the registry's own minting, so their second
// half is the hash as it is (the first byte picks the shard), and nobody
// can choose IDs that crowd one cluster of the table. Deleting shifts the
// cluster back over the hole (no tombstones), so a probe ends at the first
// empty slot. It is not safe for concurrent use: the shard's mu guards it.
type entryTable struct {
	slots []*entry // nil, or a power of two long
	n     int
}

func hashID(id handle.ID) uint64 { return binary.LittleEndian.Uint64(id[8:]) }

// get returns id's entry, or nil.
func (t *entryTable) get(id handle.ID) *entry {
	if t.n == 0 {
		return nil
	}
	mask := uint64(len(t.slots) - 1)
	for i := hashID(id) & mask; ; i = (i + 1) & mask {
		e := t.slots[i]
		if e == nil || e.id == id {
			return e
		}
	}
}

// put adds e, or replaces the entry of its ID.
func (t *entryTable) put(e *entry) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.resize(max(8, 2*len(t.slots)))
	}
	if t.insert(e) {
		t.n++
	}
}

// putNew adds e, whose ID was just minted: 128 fresh random bits, in no
// entry yet. It takes the first empty slot of the probe, reading no
// entry on the way: put compares each occupant's ID, a cache miss apiece,
// and at a load of 3/4 an absent key's probe meets eight of them.
func (t *entryTable) putNew(e *entry) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.resize(max(8, 2*len(t.slots)))
	}
	mask := uint64(len(t.slots) - 1)
	i := hashID(e.id) & mask
	for t.slots[i] != nil {
		i = (i + 1) & mask
	}
	t.slots[i] = e
	t.n++
}

// insert puts e in its slot, reporting whether it was absent. There is
// room.
func (t *entryTable) insert(e *entry) bool {
	mask := uint64(len(t.slots) - 1)
	for i := hashID(e.id) & mask; ; i = (i + 1) & mask {
		switch cur := t.slots[i]; {
		case cur == nil:
			t.slots[i] = e
			return true
		case cur.id == e.id:
			t.slots[i] = e
			return false
		}
	}
}

func (t *entryTable) resize(size int) {
	old := t.slots
	t.slots = make([]*entry, size)
	for _, e := range old {
		if e != nil {
			t.insert(e)
		}
	}
}

// del removes id's entry, if any.
func (t *entryTable) del(id handle.ID) {
	if t.n == 0 {
		return
	}
	mask := uint64(len(t.slots) - 1)
	i := hashID(id) & mask
	for {
		e := t.slots[i]
		if e == nil {
			return
		}
		if e.id == id {
			break
		}
		i = (i + 1) & mask
	}
	// Shift back every later entry of the cluster that may move into the
	// hole at i: one whose home slot is not cyclically within (i, j].
	for j := (i + 1) & mask; t.slots[j] != nil; j = (j + 1) & mask {
		home := hashID(t.slots[j].id) & mask
		if (j-home)&mask >= (j-i)&mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = nil
	t.n--
}

// len returns the number of entries.
func (t *entryTable) len() int { return t.n }

// each calls f with every entry, in no order, until f returns false. f
// must not change the table.
func (t *entryTable) each(f func(*entry) bool) {
	for _, e := range t.slots {
		if e != nil && !f(e) {
			return
		}
	}
}
