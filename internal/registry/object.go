package registry

import (
	"sync/atomic"
	"time"
	"unsafe"
	"weak"

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
	// LeaseID is the lease's handle string.
	LeaseID string
	// Identity owns the lease: its pins of WEAK objects are charged to it.
	Identity string
}

// entry is the registry's record of one live object. The registry must
// never hold a strong pointer to the payload of an unpinned object by
// accident: only strong does, and only while the object is pinned.
//
// It is laid out for a million of them: what every object needs is
// inline, packed into 176 bytes (a size class; TestEntryLayout keeps it
// there), and what few objects need (metadata, a second pin, linger and
// hand-off) is in x, allocated the first time it is needed.
type entry struct {
	// Immutable after Put.
	id  handle.ID
	mac handle.MAC // the tag of its handle: with id, the handle (Registry.handleOf)

	state  State     // guarded by the shard's mu
	leak   leakFlags // guarded by its shard's leak book's mu
	direct bool      // immutable: the payload is the bytes' own allocation, not a box
	npins  uint32    // guarded by the shard's mu: pins held, pin0 first

	// The soft cache's. cached says it holds the object; removed is set,
	// under the shard's lock, when the object is deleted, so that the
	// cache does not take it in afterwards.
	cached  atomic.Bool
	removed atomic.Bool

	// Immutable after Put.
	size    int64
	created int64    // unix nanoseconds
	owner   *account // who put it; one reference, given back when it goes
	weak    weak.Pointer[payload]

	accessed atomic.Int64 // unix nanoseconds

	// Guarded by the shard's mu.
	strong     *payload // non-nil exactly while the object is pinned or lingering
	charged    *account // who its strongly held bytes are charged to, while they are; nil: no identity
	stateSince int64    // unix nanoseconds
	pin0       pinSlot  // the oldest pin, when npins > 0; the others are x.pins
	x          *entryExtra

	// weakSince is the GC clock when its weak age last started: when it
	// became WEAK, or left the soft cache while WEAK. Written under its
	// shard's leak book's mu; read anywhere.
	weakSince atomic.Uint64

	// crc is the payload's CRC-32C with bit 32 set once known; 0 before.
	crc atomic.Uint64
}

// entryExtra is the part of an entry few objects need, out of line.
// Guarded by the shard's mu; written only under its write lock, so a
// reader holding the read lock may follow e.x.
type entryExtra struct {
	meta objectMeta // immutable after Put
	pins []pinSlot  // the pins after pin0, oldest first
	// unpinnedAt is when its last pin went (or when it was put): kept
	// here only once the entry has an x, for it is stateSince until the
	// object first lingers (see entry.unpinnedSince).
	unpinnedAt  int64
	lingerTimer *time.Timer // while LINGERING: ends it
	// The deadlines are times from Config.Now, which carry the monotonic
	// clock's reading (time.Now's do): they are compared and subtracted
	// on it, so that a step of the wall clock neither lengthens nor
	// shortens them. Only their display is wall time.
	lingerUntil  time.Time // while LINGERING, when it becomes WEAK
	handoffUntil time.Time // a lease that let go asked to hold it until then
}

// pinSlot is one lease's pin as an entry keeps it: Pin, with its time in
// unix nanoseconds.
type pinSlot struct {
	lease   handle.ID
	leaseID string
	since   int64
}

func (p *pinSlot) pin() Pin {
	return Pin{Lease: p.lease, LeaseID: p.leaseID, Since: time.Unix(0, p.since)}
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

// addPin adds a pin, the newest. The caller holds the shard's write lock.
func (e *entry) addPin(p pinSlot) {
	if e.npins == 0 {
		e.pin0 = p
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
		e.pin0 = pinSlot{}
		if e.npins == 0 {
			return
		}
		e.pin0 = e.x.pins[0]
		i = 1
	}
	x := e.x
	copy(x.pins[i-1:], x.pins[i:])
	x.pins[len(x.pins)-1] = pinSlot{}
	x.pins = x.pins[:len(x.pins)-1] // its array stays: a second pin comes and goes
}

// clearPins drops every pin. The caller holds the shard's write lock.
func (e *entry) clearPins() {
	e.npins, e.pin0 = 0, pinSlot{}
	if e.x != nil {
		e.x.pins = nil
	}
}

// pins returns a copy of its pins, oldest first.
func (e *entry) pins() []Pin {
	if e.npins == 0 {
		return nil
	}
	out := make([]Pin, 0, e.npins)
	out = append(out, e.pin0.pin())
	if e.npins > 1 {
		for i := range e.x.pins {
			out = append(out, e.x.pins[i].pin())
		}
	}
	return out
}

// access records an access at now, a reading of the coarse clock (see
// coarseClock). It stores only a new time, so that readers of one object
// share its cache line for the rest of a tick.
func (e *entry) access(now int64) {
	if e.accessed.Load() != now {
		e.accessed.Store(now)
	}
}

const crcKnown = 1 << 32

func (e *entry) checksum() (uint32, bool) {
	v := e.crc.Load()
	return uint32(v), v&crcKnown != 0
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
		in.WeakGCCycles = int64(gcNow() - since) // the clock never goes back
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
		SoftCached:  e.cached.Load(),
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
	if e.pin0.lease == lease {
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
	if e.direct {
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
