package registry

import (
	"sync/atomic"
	"time"
	"unsafe"
	"weak"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
)

// State is where an object stands in its lifecycle.
type State uint8

const (
	// StateUnknown is the zero State; no live object has it.
	StateUnknown State = iota
	// Pinned means at least one lease pins the object; it is held strongly.
	Pinned
	// Lingering means it is unpinned but still held strongly for a while.
	Lingering
	// Weak means it is held only by a weak pointer; the Go GC may take it.
	Weak
	// Collected means the Go GC took it. Final.
	Collected
	// Deleted means an operator removed it. Final.
	Deleted
)

var stateNames = [...]string{"UNKNOWN", "PINNED", "LINGERING", "WEAK", "COLLECTED", "DELETED"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "UNKNOWN"
}

// payload is what the registry holds weakly, and what its weak pointer and
// cleanup attach to: an allocation named by a pointer to its first byte
// (see entry.bytes). It is one of two things.
//
// The bytes' own allocation, when Config.OwnedPayloads says every payload
// is one and it is one slice of at least directMin bytes: then an object
// costs nothing for its payload but its bytes.
//
// Otherwise a box: a struct holding the slices. Never a bare small value:
// Go's tiny allocator packs pointer-free allocations of 16 bytes or less
// together, and such a block is freed only when all its neighbours are, so
// a weak pointer to it might never go nil; and never bytes that other
// objects or callers may share, which would keep it alive.
type payload = byte

// directMin is the least payload held by its own allocation. Far above
// the tiny allocator's 16 bytes: the runtime keeps each span's weak
// handles and cleanups in a list sorted by address and walks it on every
// insert, so the cost of weak.Make and AddCleanup grows with the objects
// per span (see box), and 64-byte objects share a span 128 to one.
const directMin = 64

// box holds a payload's slices for the weak pointer to name. It is padded
// to 128 bytes: at the bare 48 bytes, 170 would share an 8 KiB span, and at
// 24 bytes, 341 did and that walk was half of Put's time (BenchmarkPut 4.9
// µs; 2.9 µs padded to 128 bytes).
type box struct {
	data []byte
	more [][]byte // the rest of an uploaded object, in order
	_    [128 - 48]byte
}

// Payload is an object's bytes: Data, then each slice of More in order.
// Uploads arrive in chunks and are kept as they came, never copied. The
// registry never modifies a payload, and neither may anyone else.
type Payload struct {
	Data []byte
	More [][]byte
	// CRC32C is the CRC-32C (Castagnoli) of the bytes, when CRCKnown: an
	// upload brings it, and a download remembers it (RecordChecksum), so
	// that later downloads need not compute it again.
	CRC32C   uint32
	CRCKnown bool
}

// Size returns the payload's length in bytes.
func (p Payload) Size() int64 {
	n := int64(len(p.Data))
	for _, b := range p.More {
		n += int64(len(b))
	}
	return n
}

// Bytes returns the payload in one slice: Data itself when there is no
// more, otherwise a copy of all of it.
func (p Payload) Bytes() []byte {
	if len(p.More) == 0 {
		return p.Data
	}
	out := make([]byte, 0, p.Size())
	out = append(out, p.Data...)
	for _, b := range p.More {
		out = append(out, b...)
	}
	return out
}

// Meta is what the caller says about an object at Put.
type Meta struct {
	ContentType string
	Labels      map[string]string
	// Linger is how long the object stays strongly held (LINGERING) after
	// its last pin goes, or after Put if it has none, before it becomes
	// WEAK. The caller caps it.
	Linger time.Duration
	// Owner is the identity that puts the object. The registry keeps it
	// as a pointer to the identity's shared account (see objectMeta).
	Owner string
}

// objectMeta is the part of Meta an entry keeps: not Owner, which costs
// an entry one pointer (entry.owner) instead of a string's two words.
type objectMeta struct {
	ContentType string
	Labels      map[string]string
	Linger      time.Duration
}

// metaBytes is what an object's metadata costs beyond its payload: its
// content type's and labels' bytes. They are kept as long as the object,
// so they count with its payload against the limits on strongly held
// bytes: a million pinned objects of one byte with the largest labels
// would otherwise hold 20 GB while stats said 1 MB.
func (m *objectMeta) metaBytes() int64 {
	n := len(m.ContentType)
	for k, v := range m.Labels {
		n += len(k) + len(v)
	}
	return int64(n)
}

// charge is what e costs against the limits on strongly held bytes: its
// payload and its metadata.
func (e *entry) charge() int64 { return e.size + e.meta().metaBytes() }

// Info is an object's metadata at one moment.
type Info struct {
	ID          handle.ID
	Handle      string
	Size        int64
	ContentType string
	Labels      map[string]string // shared, never modified: do not write to it
	State       State
	Pins        int
	Created     time.Time
	Accessed    time.Time
	StateSince  time.Time
	Linger      time.Duration
	// Owner is the identity that put the object.
	Owner string
	// LingerUntil is when a LINGERING object becomes WEAK; zero otherwise.
	LingerUntil time.Time
	// SoftCached: the soft cache holds the object strongly.
	SoftCached bool
	// WeakGCCycles is, for a WEAK object, how many garbage collections it
	// has survived since it became weak, or since the soft cache let go of
	// it if later; SuspectedLeak says it survived too many
	// (Config.LeakGCCycles) while nothing of the registry's held it:
	// something else in the process references it.
	WeakGCCycles  int64
	SuspectedLeak bool
}

// Pin is one lease's pin on an object.
type Pin struct {
	Lease handle.ID
	// LeaseID is the lease's handle string, for events and operators.
	LeaseID string
	Since   time.Time
}

// Holder names the lease that pins or unpins.
type Holder struct {
	ID handle.ID
	// LeaseID is the lease's handle string, as the registry's codec made
	// it for ID (Codec.New(handle.Lease)): events carry it as given, and
	// the pins Inspect and Delete return carry it made again from ID, for
	// an entry keeps only a pin's lease ID.
	LeaseID string
	// Identity owns the lease: its pins of WEAK objects are charged to it.
	Identity string
}

// entry is the registry's record of one live object. The registry must
// never hold a strong pointer to the payload of an unpinned object by
// accident: only strong does, and only while the object is pinned.
//
// It is laid out for a million of them: what every object needs is
// inline, packed into 128 bytes (a size class; TestEntryLayout keeps it
// there), and what few objects need (metadata, a second pin, a charge to
// another identity than its owner's, linger and hand-off) is in x,
// allocated the first time it is needed. To fit, the first pin keeps only
// its lease's ID (its time is stateSince, its lease's handle is made
// again when asked for: see pin0Since, pins), and the charge to the
// owner's account, the usual one, is implied (see chargedTo).
type entry struct {
	// Immutable after Put.
	id  handle.ID
	mac handle.MAC // the tag of its handle: with id, the handle (Registry.handleOf)

	state State // guarded by the shard's mu

	// flags are bits of entryFlag, in one word for want of atomic bytes:
	// each bit says which lock guards it.
	flags atomic.Uint32

	npins uint32 // guarded by the shard's mu: pins held, pin0 first

	crc atomic.Uint32 // the payload's CRC-32C, once flagCRCKnown

	// weakSince is the GC clock's low 32 bits when its weak age last
	// started: when it became WEAK, or left the soft cache while WEAK
	// (ages are read modulo 2^32 cycles: decades of collections). Written
	// under its shard's leak book's mu; read anywhere.
	weakSince atomic.Uint32

	// Immutable after Put.
	size    int64
	created int64    // unix nanoseconds
	owner   *account // who put it; one reference, given back when it goes
	weak    weak.Pointer[payload]

	accessed atomic.Int64 // unix nanoseconds

	// Guarded by the shard's mu.
	strong     *payload // non-nil exactly while the object is pinned or lingering
	stateSince int64    // unix nanoseconds
	x          *entryExtra
	pin0       handle.ID // the oldest pin's lease, when npins > 0; the others are x.pins
}

// entryFlag is a bit of entry.flags. Writers of different bits hold
// different locks, so every write is an atomic Or or And.
type entryFlag uint32

const (
	// flagDirect is immutable: the payload is the bytes' own allocation,
	// not a box.
	flagDirect entryFlag = 1 << iota
	// The soft cache's. flagCached says it holds the object; flagRemoved
	// is set, under the shard's lock, when the object is deleted, so that
	// the cache does not take it in afterwards.
	flagCached
	flagRemoved
	// flagCRCKnown says crc is the payload's CRC-32C: set after crc, read
	// before it. A payload has one checksum, so two writers write the
	// same value.
	flagCRCKnown
	// The entry's standing in its shard's leak book, guarded by the
	// book's mu: its state is WEAK (flagLeakWeak), the soft cache holds
	// it (flagLeakCached), the book counts it (flagLeakCounted: weak, not
	// cached, and counting on).
	flagLeakWeak
	flagLeakCached
	flagLeakCounted
	// Guarded by the shard's mu. flagPin0InX: pin0 was taken at
	// x.unpinnedAt, not at stateSince (see entry.pin0Since).
	// flagChargeInX: while the object is strongly held its bytes are
	// charged to x.charged, not to its owner (see entry.chargedTo).
	flagPin0InX
	flagChargeInX
)

// has reports whether e's flag f is set.
func (e *entry) has(f entryFlag) bool { return entryFlag(e.flags.Load())&f != 0 }

// set sets or clears e's flag f. The caller holds the lock f names.
func (e *entry) set(f entryFlag, on bool) {
	if on {
		e.flags.Or(uint32(f))
	} else {
		e.flags.And(^uint32(f))
	}
}

// entryExtra is the part of an entry few objects need, out of line.
// Guarded by the shard's mu; written only under its write lock, so a
// reader holding the read lock may follow e.x.
type entryExtra struct {
	meta objectMeta // immutable after Put
	pins []pinSlot  // the pins after pin0, oldest first
	// unpinnedAt is, while no pin is held, when its last pin went (or
	// when it was put): kept here only once the entry has an x, for it is
	// stateSince until the object first lingers (see
	// entry.unpinnedSince). While a pin is held and flagPin0InX, it is
	// when pin0 was taken instead (see entry.pin0Since): one word for two
	// times never needed at once keeps x at 128 bytes, a size class.
	unpinnedAt  int64
	charged     *account    // while flagChargeInX: who its bytes are charged to; nil, nobody
	lingerTimer *time.Timer // while LINGERING: ends it
	// The deadlines are times from Config.Now, which carry the monotonic
	// clock's reading (time.Now's do): they are compared and subtracted
	// on it, so that a step of the wall clock neither lengthens nor
	// shortens them. Only their display is wall time.
	lingerUntil  time.Time // while LINGERING, when it becomes WEAK
	handoffUntil time.Time // a lease that let go asked to hold it until then
}

// pinSlot is one lease's pin as an entry keeps it beyond its first: the
// lease's ID and the pin's time in unix nanoseconds. The lease's handle
// is made again from the ID when asked for (Registry.pins): a string per
// pin cost every pinned object 16 bytes.
type pinSlot struct {
	lease handle.ID
	since int64
}

// extra returns e.x, allocating it. The caller holds the shard's write
// lock.
func (e *entry) extra() *entryExtra {
	if e.x == nil {
		// Until now the last unpin (or Put) was at stateSince, or the
		// object is pinned and the next unpin sets it.
		e.x = &entryExtra{unpinnedAt: e.stateSince}
	}
	return e.x
}

// meta returns what the caller said about the object at Put.
func (e *entry) meta() *objectMeta {
	if e.x == nil {
		return &noMeta
	}
	return &e.x.meta
}

var noMeta objectMeta // never written

// unpinnedSince returns when its last pin went, or when it was put.
func (e *entry) unpinnedSince() int64 {
	if e.x == nil {
		return e.stateSince
	}
	return e.x.unpinnedAt
}

// pin0Since returns when the oldest pin was taken. The caller holds the
// shard's lock and npins > 0.
func (e *entry) pin0Since() int64 {
	if e.has(flagPin0InX) {
		return e.x.unpinnedAt
	}
	return e.stateSince
}

// addPin adds a pin, the newest. The caller holds the shard's write lock
// and has set state and stateSince.
func (e *entry) addPin(p pinSlot) {
	if e.npins == 0 {
		e.pin0 = p.lease
		// stateSince changes only while no pin is held (an object with a
		// pin is PINNED), so it keeps pin0's time unless they differ.
		if p.since != e.stateSince {
			e.extra().unpinnedAt = p.since // read again only once no pin is held, and set then
			e.set(flagPin0InX, true)
		}
	} else {
		x := e.extra()
		x.pins = append(x.pins, p)
	}
	e.npins++
}

// removePin removes the pin at index i (see pinIndex). The caller holds
// the shard's write lock.
func (e *entry) removePin(i int) {
	e.npins--
	if i == 0 {
		e.pin0 = handle.ID{}
		if e.npins == 0 {
			e.set(flagPin0InX, false) // the caller sets unpinnedAt
			return
		}
		x := e.x
		e.pin0 = x.pins[0].lease
		x.unpinnedAt = x.pins[0].since
		e.set(flagPin0InX, true)
		i = 1
	}
	x := e.x
	copy(x.pins[i-1:], x.pins[i:])
	x.pins[len(x.pins)-1] = pinSlot{}
	x.pins = x.pins[:len(x.pins)-1] // its array stays: a second pin comes and goes
}

// clearPins drops every pin. The caller holds the shard's write lock.
func (e *entry) clearPins() {
	e.npins, e.pin0 = 0, handle.ID{}
	e.set(flagPin0InX, false)
	if e.x != nil {
		e.x.pins = nil
	}
}

// pins returns a copy of e's pins, oldest first, each with its lease's
// handle made again from its ID: the lease package names a lease by
// codec.New(handle.Lease), the handle Format makes of its ID. The caller
// holds e's shard lock.
func (r *Registry) pins(e *entry) []Pin {
	if e.npins == 0 {
		return nil
	}
	out := make([]Pin, 0, e.npins)
	out = append(out, r.pin(e.pin0, e.pin0Since()))
	if e.npins > 1 {
		for i := range e.x.pins {
			out = append(out, r.pin(e.x.pins[i].lease, e.x.pins[i].since))
		}
	}
	return out
}

func (r *Registry) pin(lease handle.ID, since int64) Pin {
	return Pin{Lease: lease, LeaseID: r.codec.Format(handle.Lease, lease), Since: time.Unix(0, since)}
}

// chargedTo returns the account e's strongly held bytes are charged to,
// nil for none. The caller holds the shard's lock and e.strong is set.
func (e *entry) chargedTo() *account {
	if e.has(flagChargeInX) {
		return e.x.charged
	}
	return e.ownerCharge()
}

// ownerCharge is the account reserveStrong charges for e's owner: its
// own, unless it is anonymous. The owner holds a reference to it, so
// reserveStrong's acquire of the name returns this very account.
func (e *entry) ownerCharge() *account {
	if e.owner == nil || e.owner.name == auth.AnonymousName {
		return nil
	}
	return e.owner
}

// setCharge records that e's bytes are now charged to a, which
// reserveStrong returned. The caller holds the shard's write lock.
func (e *entry) setCharge(a *account) {
	if a == e.ownerCharge() {
		e.dropCharge()
		return
	}
	e.extra().charged = a
	e.set(flagChargeInX, true)
}

// dropCharge forgets a charge kept in x. The caller holds the shard's
// write lock.
func (e *entry) dropCharge() {
	if e.has(flagChargeInX) {
		e.x.charged = nil
		e.set(flagChargeInX, false)
	}
}

// access records an access at now, a reading of the coarse clock (see
// coarseClock). It stores only a new time, so that readers of one object
// share its cache line for the rest of a tick.
func (e *entry) access(now int64) {
	if e.accessed.Load() != now {
		e.accessed.Store(now)
	}
}

func (e *entry) checksum() (uint32, bool) {
	if !e.has(flagCRCKnown) {
		return 0, false
	}
	return e.crc.Load(), true
}

// setChecksum records the payload's CRC-32C.
func (e *entry) setChecksum(crc uint32) {
	e.crc.Store(crc)
	e.set(flagCRCKnown, true)
}

// issued reports whether mac, the tag of a handle of this run carrying e's
// ID (handle.Codec.Split), is the tag of e's handle: whether the handle is
// the very one Put issued for e. That is as safe as verifying its MAC: the
// string equal to a handle we issued is one we issued, and both are the
// same bytes (base64 of 39 bytes has no spare bits, so no second spelling).
// The comparison takes constant time, so that timing does not tell a
// forger how much of a guessed tag is right; that the ID is present at
// all, which the map lookup's timing might tell, gives nothing away, since
// an ID is 128 random bits nobody finds without the handle.
func (e *entry) issued(mac handle.MAC) bool {
	return handle.TagsEqual(&e.mac, &mac)
}

// info returns the entry's metadata; h is its handle. The caller holds
// the shard's lock.
func (e *entry) info(h string) Info {
	in := e.baseInfo(h)
	if e.state == Weak {
		since := e.weakSince.Load()
		in.WeakGCCycles = int64(uint32(gcNow()) - since) // the clock never goes back
	}
	return in
}

func (e *entry) baseInfo(h string) Info {
	return Info{
		ID:          e.id,
		Handle:      h,
		Size:        e.size,
		ContentType: e.meta().ContentType,
		Labels:      e.meta().Labels,
		State:       e.state,
		Pins:        int(e.npins),
		Created:     time.Unix(0, e.created),
		Accessed:    time.Unix(0, e.accessed.Load()),
		StateSince:  time.Unix(0, e.stateSince),
		Linger:      e.meta().Linger,
		Owner:       e.ownerName(),
		LingerUntil: e.lingerUntilTime(),
		SoftCached:  e.has(flagCached),
	}
}

func (e *entry) ownerName() string {
	if e.owner == nil {
		return ""
	}
	return e.owner.name
}

func (e *entry) lingerUntilTime() time.Time {
	if e.state != Lingering {
		return time.Time{}
	}
	return e.x.lingerUntil
}

// pinIndex returns the index of lease's pin, or -1: 0 is pin0, i is
// x.pins[i-1].
func (e *entry) pinIndex(lease handle.ID) int {
	if e.npins == 0 {
		return -1
	}
	if e.pin0 == lease {
		return 0
	}
	if e.npins > 1 {
		for i := range e.x.pins {
			if e.x.pins[i].lease == lease {
				return i + 1
			}
		}
	}
	return -1
}

// bytes returns the slices of p, e's payload.
func (e *entry) bytes(p *payload) (data []byte, more [][]byte) {
	if e.has(flagDirect) {
		return unsafe.Slice(p, e.size), nil
	}
	b := (*box)(unsafe.Pointer(p))
	return b.data, b.more
}

// value returns the payload if the object is still alive, strongly or
// weakly held. The caller holds the shard's lock (read or write).
func (e *entry) value() *payload {
	if e.strong != nil {
		return e.strong
	}
	return e.weak.Value()
}
