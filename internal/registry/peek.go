package registry

import (
	"time"

	"github.com/weakref/registry/internal/handle"
)

// A Resolve hit reads its entry without the shard's lock: taking and
// releasing the read lock were two atomic additions on the shard's cache
// line, an eighth of a hit on one core and, with two cores resolving in one
// shard, the line moving between them on every call. peek reads instead as
// a seqlock's reader does: the shard's seq, then the table and the entry's
// changing fields, copied, then seq again. If no writer held or took the
// lock in between (seq even and unchanged), the copy is what a reader
// holding the read lock would have seen at the first read of seq; otherwise
// it is thrown away and the caller takes the lock.
//
// peek's reads race with writers by design, and no value it reads is used
// before seq says it is whole. What keeps the reading itself safe, whatever
// a writer does meanwhile:
//
//   - The table's slots are reached through one atomic pointer to a
//     slotArray whose length and homes never change once published (a
//     table grows into a new array, filled before it is stored, and the
//     old one is never written again). peek bounds its probe by that
//     array's own length: no torn slice header, no index out of bounds,
//     and a probe that ends even if a shift hides every empty slot.
//   - A slot is one pointer word, which a racing read sees whole: the
//     table's writes are single stores, and the runtime's memmove, by
//     which an insert shifts a cluster one slot right, copies each pointer
//     indivisibly (so does a delete's shift left, slot by slot). The
//     entry read is kept alive by the collector, stale or not.
//   - A hit is decided on the entry's ID, immutable from before the entry
//     entered the table: an entry met in the wrong slot mid-shift, or
//     twice, or missed, is at worst a miss or the right entry. A miss
//     says nothing (ok false): the caller asks under the lock.
//   - The entry's changing fields are copied, not followed (except x, one
//     pointer word to an entryExtra whose meta is immutable), and the copy
//     is trusted only if seq was even and the same before and after.
//     Writers bump seq, an atomic read-modify-write, before their first
//     store and after their last: on a machine that keeps loads in order
//     and stores in order (peek_tso.go), a copy whose loads saw any
//     writer's store also sees seq changed at its second load, and a copy
//     that saw none is the state at the first load of seq, as a reader
//     holding the read lock would have seen it. A torn or stale copy, a
//     wrong slot during a shift, an array about to be replaced: each is
//     only ever discarded.
//
// The race detector is told not to look at peek (go:norace); everything
// its callers do after a successful peek is ordered after the writers by
// seq's atomics, which the detector sees.
//
// The compiler keeps the plain loads between the atomic ones, which it
// does not move loads across; the processor must too, which only one that
// orders loads does (peek_tso.go): elsewhere peek declines.
//
// What peek copies is what Resolve answers with beyond the entry's
// immutable fields (ID, tag, size, creation, owner, weak pointer, set
// before the entry enters the table) and its atomic ones (access time,
// checksum, soft-cache flag, weak age).

// entryView is a copy of an entry's fields that change under the shard's
// write lock, as Resolve answers with them.
type entryView struct {
	state       State
	npins       uint32
	stateSince  int64
	strong      *payload
	meta        objectMeta
	lingerUntil time.Time // while LINGERING
}

// peek finds id's entry in s without s's lock and copies its changing
// fields into v. ok false says nothing: the entry may be there, being
// changed, or not there; the caller asks again under the lock.
//
//go:norace
func (s *shard) peek(id handle.ID, v *entryView) (e *entry, ok bool) {
	if !orderedLoads {
		return nil, false
	}
	seq := s.seq.Load()
	if seq&1 != 0 {
		return nil, false
	}
	a := s.m.slots() // the array's length and homes belong together (slotArray)
	if a == nil {
		return nil, false
	}
	for i := a.homeOf(keyOf(&id)); i < len(a.s); i++ {
		c := a.s[i]
		if c == nil {
			return nil, false
		}
		if c.id == id {
			e = c
			break
		}
	}
	if e == nil {
		return nil, false
	}
	v.state = e.state
	v.npins = e.npins
	v.stateSince = e.stateSince
	v.strong = e.strong
	if x := e.x; x != nil {
		v.meta = x.meta
		if v.state == Lingering {
			v.lingerUntil = x.lingerUntil
		}
	}
	if s.seq.Load() != seq {
		return nil, false
	}
	return e, true
}

// infoOf sets in, zero, to e.info for a view peek copied: the same Info a
// reader holding the shard's lock would make at that moment.
// TestPeekAgreesWithInfo holds the two together.
func (e *entry) infoOf(in *Info, v *entryView, h string) {
	*in = Info{
		ID:          e.id,
		Handle:      h,
		Size:        e.size,
		ContentType: v.meta.ContentType,
		Labels:      v.meta.Labels,
		State:       v.state,
		Pins:        int(v.npins),
		Created:     time.Unix(0, e.created),
		Accessed:    time.Unix(0, e.accessed.Load()),
		StateSince:  time.Unix(0, v.stateSince),
		Linger:      v.meta.Linger,
		Owner:       e.ownerName(),
		LingerUntil: v.lingerUntil,
		SoftCached:  e.has(flagCached),
	}
	if v.state == Weak {
		since := e.weakSince.Load()
		in.WeakGCCycles = int64(uint32(gcNow()) - since) // the clock never goes back
	}
}
