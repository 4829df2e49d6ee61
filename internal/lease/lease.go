// Package lease keeps the registry's leases: who pins which objects, for
// how long, and what happens when a lease's stream goes away.
//
// A lease is bound to one stream at a time (a Session). The stream ending
// without Close detaches the lease: with no grace its pins are released at
// once; with a grace the lease waits that long for a new stream to resume
// it by id, pins intact. Revoke ends a lease from outside and tells its
// stream why.
//
// Lock order: Lease.mu, then the registry's own locks; Manager.mu is
// only ever held alone, never while taking a Lease.mu, because a lease
// ending holds its own for as long as releasing its pins takes (~170ms for
// 100k) and every Put and Resolve with a lease needs Manager.mu. The
// registry never calls back into this package.
package lease

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/registry"
)

// Sentinel errors.
var (
	// ErrNotFound: no live lease has this id (never opened, ended, or its
	// grace ran out).
	ErrNotFound = errors.New("lease not found")
	// ErrEnded: the lease ended (closed, revoked, expired) while the
	// caller was using it.
	ErrEnded = errors.New("lease has ended")
	// ErrTakenOver: another stream resumed this session's lease.
	ErrTakenOver = errors.New("lease was taken over by another stream")
	// ErrClosed: the manager is shutting down.
	ErrClosed = errors.New("lease manager is closed")
)

// Limit names, as in stats and RESOURCE_EXHAUSTED reasons.
const (
	LimitLeases            = "LEASE_LIMIT"
	LimitPinsPerLease      = "LEASE_PIN_LIMIT"
	LimitLeasesPerIdentity = "IDENTITY_LEASE_LIMIT"
	MaxClientNameBytes     = 128
)

// NotOwnedError says the caller is neither the identity that opened the lease
// nor an admin. The request changed nothing.
type NotOwnedError struct {
	LeaseID  string
	Identity string // the caller
}

func (e *NotOwnedError) Error() string {
	return fmt.Sprintf("lease %s is not owned by identity %q", e.LeaseID, e.Identity)
}

// NotLiveError wraps why a lease named by a request is not live (a bad,
// unknown or ended lease id), for requests that need a live one.
type NotLiveError struct{ Err error }

func (e *NotLiveError) Error() string { return "lease is not live: " + e.Err.Error() }
func (e *NotLiveError) Unwrap() error { return e.Err }

// Cause says why a session was ended from outside.
type Cause uint8

const (
	// CauseAdmin means an operator revoked the lease.
	CauseAdmin Cause = iota + 1
	// CauseTakenOver means another stream resumed the lease.
	CauseTakenOver
	// CauseShutdown means the server is shutting down.
	CauseShutdown
)

// Config configures a Manager. Zero limits mean no limit.
type Config struct {
	// Codec mints and verifies lease ids. Required.
	Codec *handle.Codec
	// Registry holds the objects. Required.
	Registry *registry.Registry
	// MaxGrace caps the grace a lease may ask for. Zero means leases get
	// no grace: their pins go the moment their stream does.
	MaxGrace time.Duration
	// MaxLeases bounds the live leases, attached or detached.
	MaxLeases int
	// MaxPinsPerLease bounds how many objects one lease may pin.
	MaxPinsPerLease int
	// MaxLeasesPerIdentity bounds the live leases one identity owns, so
	// that one cannot take every lease from the others. Never applied to
	// auth.AnonymousName: with authentication off it is everyone.
	MaxLeasesPerIdentity int
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// Observe, when set, is called after each lease is opened, resumed,
	// detached or ended, synchronously and with none of this package's
	// locks held. It must not block for long: the stream or timer that
	// made the change waits for it. nil costs nothing.
	Observe func(Event)
}

// Manager owns every live lease. It is safe for concurrent use.
type Manager struct {
	cfg   Config
	reg   *registry.Registry
	codec *handle.Codec
	now   func() time.Time

	mu     sync.Mutex
	leases map[handle.ID]*Lease // guarded by mu; every live lease
	closed bool                 // guarded by mu
	// owned counts each identity's live leases, for MaxLeasesPerIdentity
	// in O(1): only when that is set, and never anonymous's (see counted).
	// An identity with none has no entry. Guarded by mu.
	owned map[string]int

	// attached and detached count the live leases, for Counts: a scrape
	// must not wait on any lease's lock. Each changes where a lease's
	// session does, under that lease's mu.
	attached, detached atomic.Int64
}

// New returns a Manager with no leases.
func New(cfg Config) *Manager {
	if cfg.Codec == nil || cfg.Registry == nil {
		panic("lease: Config.Codec and Config.Registry are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Manager{cfg: cfg, reg: cfg.Registry, codec: cfg.Codec, now: cfg.Now, leases: make(map[handle.ID]*Lease), owned: make(map[string]int)}
}

// Lease is one lease. Its fields are read through Info.
type Lease struct {
	holder registry.Holder // ID, lease id string and owner: immutable
	client string
	opened time.Time
	grace  time.Duration

	mu       sync.Mutex
	pins     map[handle.ID]struct{} // guarded by mu
	session  *Session               // guarded by mu; the attached stream, nil when detached
	expire   *time.Timer            // guarded by mu; grace timer while detached
	expireAt time.Time              // guarded by mu
	ended    bool                   // guarded by mu
}

// Info describes a live lease.
type Info struct {
	ID       string
	Client   string
	Identity string // the owner: the identity that opened it
	Opened   time.Time
	Grace    time.Duration
	Pins     int
	Attached bool
	Peer     string
	ExpireAt time.Time // zero while attached
}

func (l *Lease) info() Info {
	l.mu.Lock()
	defer l.mu.Unlock()
	in := Info{ID: l.holder.LeaseID, Client: l.client, Identity: l.holder.Identity, Opened: l.opened, Grace: l.grace, Pins: len(l.pins)}
	if l.session != nil {
		in.Attached = true
		in.Peer = l.session.peer
	} else {
		in.ExpireAt = l.expireAt
	}
	return in
}

// OpenParams are what a stream asks for when it opens a lease.
type OpenParams struct {
	// Client names the holder, for operators.
	Client string
	// Grace is how long to keep the lease after its stream drops.
	Grace time.Duration
	// Resume names a lease to resume instead of opening a new one.
	Resume string
	// Peer is the stream's peer address, for operators.
	Peer string
	// Identity is the caller: a new lease belongs to it, and only it (or
	// an admin) may resume one.
	Identity auth.Identity
	// OnEnd, when set, is called once if the session is ended from
	// outside (revoked, taken over, shut down), right after Done is
	// closed, for a stream that waits on something of its own rather
	// than on Done. It runs with the lease's lock held: it must return
	// at once and not call the Manager.
	OnEnd func()
}

// Open binds a new or resumed lease to a new Session. Errors: handle
// parse errors, ErrNotFound and a *NotOwnedError for Resume; a
// *registry.LimitError for LEASE_LIMIT or IDENTITY_LEASE_LIMIT; ErrClosed.
func (m *Manager) Open(p OpenParams) (*Session, error) {
	if len(p.Client) > MaxClientNameBytes {
		// Cut on a rune boundary: the name goes out in proto string
		// fields, which must stay valid UTF-8.
		n := MaxClientNameBytes
		for n > 0 && !utf8.RuneStart(p.Client[n]) {
			n--
		}
		p.Client = p.Client[:n]
	}
	if p.Resume != "" {
		return m.resume(p)
	}
	grace := min(max(p.Grace, 0), m.cfg.MaxGrace)
	id, idStr := m.codec.New(handle.Lease)
	l := &Lease{
		holder: registry.Holder{ID: id, LeaseID: idStr, Identity: p.Identity.Name},
		client: p.Client,
		opened: m.now(),
		grace:  grace,
		pins:   make(map[handle.ID]struct{}),
	}
	s := &Session{m: m, lease: l, peer: p.Peer, done: make(chan struct{}), onEnd: p.OnEnd}
	l.session = s
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if limit := m.cfg.MaxLeases; limit > 0 && len(m.leases) >= limit {
		n := len(m.leases)
		m.mu.Unlock()
		return nil, &registry.LimitError{Limit: LimitLeases, Max: int64(limit), Want: int64(n + 1)}
	}
	who := p.Identity.Name
	if m.counted(who) {
		if n, limit := m.owned[who], m.cfg.MaxLeasesPerIdentity; n >= limit {
			m.mu.Unlock()
			return nil, &registry.LimitError{Limit: LimitLeasesPerIdentity, Max: int64(limit), Want: int64(n + 1), Identity: who}
		}
		m.owned[who]++
	}
	m.leases[id] = l
	m.attached.Add(1) // before anyone can find l, and so end it
	m.mu.Unlock()
	m.observe(Event{Kind: EventOpened, LeaseID: idStr, Client: l.client, Peer: p.Peer, Grace: grace})
	return s, nil
}

func (m *Manager) resume(p OpenParams) (*Session, error) {
	l, err := m.find(p.Resume)
	if err != nil {
		return nil, err
	}
	if err := l.allow(p.Identity); err != nil {
		return nil, err
	}
	s := &Session{m: m, lease: l, peer: p.Peer, done: make(chan struct{}), onEnd: p.OnEnd, resumed: true}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return nil, ErrNotFound
	}
	if old := l.session; old != nil {
		old.end(CauseTakenOver, "", 0)
	} else {
		m.detached.Add(-1)
		m.attached.Add(1)
	}
	if l.expire != nil {
		l.expire.Stop()
		l.expire, l.expireAt = nil, time.Time{}
	}
	l.session = s
	pins := len(l.pins)
	l.mu.Unlock()
	m.observe(Event{Kind: EventResumed, LeaseID: l.holder.LeaseID, Client: l.client, Peer: p.Peer, Grace: l.grace, Pins: pins})
	return s, nil
}

// allow fails with a *NotOwnedError unless who owns l or is an admin.
func (l *Lease) allow(who auth.Identity) error {
	if who.Name == l.holder.Identity || who.Admin() {
		return nil
	}
	return &NotOwnedError{LeaseID: l.holder.LeaseID, Identity: who.Name}
}

// findOwned returns the live lease id for who: a *NotLiveError if it is
// not live, a *NotOwnedError if who may not use it.
func (m *Manager) findOwned(who auth.Identity, id string) (*Lease, error) {
	l, err := m.find(id)
	if err != nil {
		return nil, &NotLiveError{Err: err}
	}
	if err := l.allow(who); err != nil {
		return nil, err
	}
	return l, nil
}

// Check reports whether who may use the live lease id, as Put and
// ResolvePin would: a *NotLiveError or a *NotOwnedError if not.
func (m *Manager) Check(who auth.Identity, id string) error {
	_, err := m.findOwned(who, id)
	return err
}

// find returns the live lease with handle string id.
func (m *Manager) find(id string) (*Lease, error) {
	lid, err := m.codec.Parse(handle.Lease, id)
	if err != nil {
		if errors.Is(err, handle.ErrUnknown) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.leases[lid]
	if l == nil {
		return nil, ErrNotFound
	}
	return l, nil
}

// Lookup returns the live lease with this id, as Info.
func (m *Manager) Lookup(id string) (Info, error) {
	l, err := m.find(id)
	if err != nil {
		return Info{}, err
	}
	return l.info(), nil
}

// ParseID verifies a lease id and returns its handle ID.
func (m *Manager) ParseID(id string) (handle.ID, error) {
	return m.codec.Parse(handle.Lease, id)
}

// List returns every live lease, oldest first.
func (m *Manager) List() []Info {
	m.mu.Lock()
	all := make([]*Lease, 0, len(m.leases))
	for _, l := range m.leases {
		all = append(all, l)
	}
	m.mu.Unlock()
	out := make([]Info, 0, len(all))
	for _, l := range all {
		out = append(out, l.info())
	}
	slices.SortFunc(out, func(a, b Info) int { return a.Opened.Compare(b.Opened) })
	return out
}

// Counts returns how many live leases are attached and detached. It takes
// no lock: it costs the same however many leases there are, and never
// waits for one that is releasing its pins.
func (m *Manager) Counts() (attached, detached int) {
	return int(m.attached.Load()), int(m.detached.Load())
}

// Holding names who holds a lease: its client name and its owner.
type Holding struct {
	Client   string
	Identity string
}

// Clients returns who holds each lease id given that is live.
func (m *Manager) Clients(ids []handle.ID) map[handle.ID]Holding {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[handle.ID]Holding, len(ids))
	for _, id := range ids {
		if l := m.leases[id]; l != nil {
			out[id] = Holding{Client: l.client, Identity: l.holder.Identity}
		}
	}
	return out
}

// Put stores an object pinned by the live lease leaseID, as one step: no
// moment exists in which the new object is unpinned. The object's owner
// is who, the caller. Errors: a *NotLiveError when the lease is not live;
// a *NotOwnedError when who neither owns it nor is an admin; the
// registry's Put errors; a *registry.LimitError for LEASE_PIN_LIMIT.
func (m *Manager) Put(who auth.Identity, leaseID string, data []byte, meta registry.Meta) (registry.Info, error) {
	return m.PutPayload(who, leaseID, registry.Payload{Data: data}, meta)
}

// PutPayload is Put for a payload in pieces, as an upload delivers it.
func (m *Manager) PutPayload(who auth.Identity, leaseID string, pl registry.Payload, meta registry.Meta) (registry.Info, error) {
	l, err := m.findOwned(who, leaseID)
	if err != nil {
		return registry.Info{}, err
	}
	meta.Owner = who.Name
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return registry.Info{}, &NotLiveError{Err: ErrNotFound}
	}
	if err := m.checkPinLimit(l, 1); err != nil {
		return registry.Info{}, err
	}
	info, err := m.reg.PutPayload(pl, meta, &l.holder)
	if err != nil {
		return registry.Info{}, err
	}
	l.pins[info.ID] = struct{}{}
	return info, nil
}

// ResolvePin resolves the object h names and pins it with the lease
// leaseID as one step (see registry.ResolvePin): the bytes come back and
// the lease pins it, or an error does and nothing is pinned. Errors: a
// *NotLiveError if the lease is not live; a *NotOwnedError if who
// neither owns it nor is an admin; those of registry.Parse and
// ResolvePin; a *registry.LimitError for LEASE_PIN_LIMIT.
func (m *Manager) ResolvePin(who auth.Identity, leaseID, h string) (registry.Object, error) {
	l, err := m.findOwned(who, leaseID)
	if err != nil {
		return registry.Object{}, err
	}
	id, err := m.reg.Parse(h)
	if err != nil {
		return registry.Object{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		return registry.Object{}, &NotLiveError{Err: ErrNotFound}
	}
	if _, ok := l.pins[id]; !ok {
		if err := m.checkPinLimit(l, 1); err != nil {
			return registry.Object{}, err
		}
	}
	obj, _, err := m.reg.ResolvePin(id, l.holder)
	if err != nil {
		return registry.Object{}, err
	}
	l.pins[id] = struct{}{}
	return obj, nil
}

// checkPinLimit fails if l may not pin n more objects. l.mu is held.
func (m *Manager) checkPinLimit(l *Lease, n int) error {
	if limit := m.cfg.MaxPinsPerLease; limit > 0 && len(l.pins)+n > limit {
		return &registry.LimitError{Limit: LimitPinsPerLease, Max: int64(limit), Want: int64(len(l.pins) + n)}
	}
	return nil
}

// Revoke ends a lease at once, releasing its pins whatever its grace; its
// attached stream, if any, learns why. It returns how many pins it
// released.
func (m *Manager) Revoke(id, reason string) (int, error) {
	l, err := m.find(id)
	if err != nil {
		return 0, err
	}
	return m.end(l, CauseAdmin, reason)
}

// end releases l's pins, removes it, and tells its session. Errors:
// ErrNotFound if it had ended already.
func (m *Manager) end(l *Lease, cause Cause, reason string) (int, error) {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return 0, ErrNotFound
	}
	s := l.session // releaseLocked clears it
	released := m.releaseLocked(l, 0)
	if s != nil {
		s.end(cause, reason, released)
	}
	l.mu.Unlock()
	m.forget(l)
	end := EndRevoked
	if cause == CauseShutdown {
		end = EndShutdown
	}
	m.ended(l, end, reason, released)
	return released, nil
}

// observe hands ev to the observer, if any. No lock is held.
func (m *Manager) observe(ev Event) {
	if m.cfg.Observe != nil {
		m.cfg.Observe(ev)
	}
}

// ended reports that l ended. No lock is held.
func (m *Manager) ended(l *Lease, end End, reason string, released int) {
	if m.cfg.Observe != nil {
		m.cfg.Observe(Event{Kind: EventEnded, LeaseID: l.holder.LeaseID, Client: l.client, Grace: l.grace, End: end, Reason: reason, Released: released})
	}
}

// releaseLocked releases every pin of l, with a hand-off, and marks it
// ended. l.mu is held.
func (m *Manager) releaseLocked(l *Lease, handoff time.Duration) int {
	n := 0
	for id := range l.pins {
		if _, pinned, _ := m.reg.UnpinHandoff(id, l.holder, handoff); pinned {
			n++
		}
	}
	clear(l.pins)
	l.ended = true
	if l.session != nil {
		m.attached.Add(-1)
	} else {
		m.detached.Add(-1)
	}
	l.session = nil
	if l.expire != nil {
		l.expire.Stop()
		l.expire = nil
	}
	return n
}

func (m *Manager) forget(l *Lease) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.leases[l.holder.ID]; !ok {
		return
	}
	delete(m.leases, l.holder.ID)
	if who := l.holder.Identity; m.counted(who) {
		if m.owned[who]--; m.owned[who] <= 0 {
			delete(m.owned, who)
		}
	}
}

// counted reports whether the leases of identity who are counted: only
// for MaxLeasesPerIdentity, which never applies to anonymous (everyone,
// with authentication off), so that a registry without the limit pays
// nothing for it.
func (m *Manager) counted(who string) bool {
	return m.cfg.MaxLeasesPerIdentity > 0 && who != auth.AnonymousName
}

// Owned returns how many live leases identity name owns, as counted for
// MaxLeasesPerIdentity (0 when it is not set, and for anonymous).
func (m *Manager) Owned(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.owned[name]
}

// DropPins removes, from each lease named, its pin on object id, after an
// operator force-deleted that object.
func (m *Manager) DropPins(id handle.ID, pins []registry.Pin) {
	for _, p := range pins {
		m.mu.Lock()
		l := m.leases[p.Lease]
		m.mu.Unlock()
		if l != nil {
			l.mu.Lock()
			delete(l.pins, id)
			l.mu.Unlock()
		}
	}
}

// Shutdown ends every lease, telling attached streams the server is
// shutting down, and refuses new ones.
func (m *Manager) Shutdown() {
	m.mu.Lock()
	m.closed = true
	all := make([]*Lease, 0, len(m.leases))
	for _, l := range m.leases {
		all = append(all, l)
	}
	m.mu.Unlock()
	for _, l := range all {
		// ErrNotFound: the lease ended on its own meanwhile; nothing to do.
		_, _ = m.end(l, CauseShutdown, "registryd is shutting down")
	}
}

// String is for logs.
func (l *Lease) String() string { return fmt.Sprintf("lease %s (%s)", l.holder.LeaseID, l.client) }
