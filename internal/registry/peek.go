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
// before seq says it is whole: not a slice header (seq is read again
// before the table is indexed), not an entry's fields. The pointers it
// follows are single words, which a racing read sees whole, and the
// collector keeps what they point to alive. A torn or stale copy is only
// ever discarded. The race detector is told not to look at peek
// (go:norace); everything its callers do after a successful peek is
// ordered after the writers by seq's atomics, which the detector sees.
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
	slots := s.m.slots
	if s.seq.Load() != seq { // slots may be torn: a pointer and a length of two tables
		return nil, false
	}
	if len(slots) == 0 {
		return nil, false
	}
	mask := uint64(len(slots) - 1)
	i := hashID(id) & mask
	for range slots { // a table being changed may show no empty slot: bound the probe
		c := slots[i]
		if c == nil {
			return nil, false
		}
		if c.id == id {
			e = c
			break
		}
		i = (i + 1) & mask
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
		SoftCached:  e.cached.Load(),
	}
	if v.state == Weak {
		since := e.weakSince.Load()
		in.WeakGCCycles = int64(gcNow() - since) // the clock never goes back
	}
}
