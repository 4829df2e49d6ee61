package registry

import (
	"errors"
	"sync"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// EventKind says what happened to an object.
type EventKind uint8

const (
	// EventCurrent is not a change: the object's state when a watch began.
	EventCurrent EventKind = iota + 1
	EventCreated
	EventPinned
	EventUnpinned
	EventLingering
	EventWeak
	EventCollected
	EventDeleted
)

var eventNames = [...]string{"", "CURRENT", "CREATED", "PINNED", "UNPINNED", "LINGERING", "WEAK", "COLLECTED", "DELETED"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) && k > 0 {
		return eventNames[k]
	}
	return "UNKNOWN"
}

// Event is one lifecycle change of one object.
type Event struct {
	// Seq increases by one with every change in this registry. A CURRENT
	// event carries the sequence of the last change before it.
	Seq    uint64
	Kind   EventKind
	ID     handle.ID
	Handle string
	State  State
	Pins   int
	Size   int64
	// LeaseID is the lease that pinned or unpinned.
	LeaseID string
	Time    time.Time
	// UnpinnedFor is, for EventCollected, how long the object had been
	// unpinned when the collector took it.
	UnpinnedFor time.Duration
}

// ErrWatchTooSlow ends a subscription whose reader fell a full buffer
// behind: the registry never blocks on a watcher.
var ErrWatchTooSlow = errors.New("watcher fell behind its events")

// Subscription receives events until it is closed or falls behind.
type Subscription struct {
	hub   *hub
	ch    chan Event
	done  chan struct{}
	kinds uint32      // bit per EventKind; 0 means all
	ids   []handle.ID // watched objects; nil means every object

	// Guarded by hub.mu.
	err    error
	closed bool
}

// Events returns the channel events arrive on, in sequence order.
func (s *Subscription) Events() <-chan Event { return s.ch }

// Done is closed when the subscription ends: closed by its owner, fallen
// behind (Err says ErrWatchTooSlow), or the registry closed.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns why the subscription ended, or nil while it runs or after
// Close.
func (s *Subscription) Err() error {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.err
}

// Close ends the subscription. It is safe to call more than once.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.drop(s, nil)
}

func (s *Subscription) wants(k EventKind) bool {
	return s.kinds == 0 || s.kinds&(1<<k) != 0
}

// hub numbers events and fans them out. publish is called with the
// object's shard lock held, so the events of one object reach every
// subscriber in the order they happened. Lock order: shard.mu, then hub.mu.
type hub struct {
	mu     sync.Mutex
	seq    uint64
	live   map[*Subscription]struct{} // every open subscription
	all    map[*Subscription]struct{} // those that want every object
	byID   map[handle.ID]map[*Subscription]struct{}
	closed bool
	buffer int
}

func newHub(buffer int) *hub {
	return &hub{
		live:   make(map[*Subscription]struct{}),
		all:    make(map[*Subscription]struct{}),
		byID:   make(map[handle.ID]map[*Subscription]struct{}),
		buffer: buffer,
	}
}

// publish numbers ev, delivers it without blocking, and returns its
// sequence number.
func (h *hub) publish(ev Event) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	ev.Seq = h.seq
	for s := range h.all {
		h.deliver(s, ev)
	}
	for s := range h.byID[ev.ID] {
		h.deliver(s, ev)
	}
	if ev.State == Collected || ev.State == Deleted {
		delete(h.byID, ev.ID) // nothing more will happen to it
	}
	return ev.Seq
}

// deliver sends ev to s or ends s if its buffer is full. h.mu is held.
func (h *hub) deliver(s *Subscription, ev Event) {
	if !s.wants(ev.Kind) {
		return
	}
	select {
	case s.ch <- ev:
	default:
		h.drop(s, ErrWatchTooSlow)
	}
}

// subscribe registers a subscription to every object (ids nil) or to some.
// For per-object subscriptions the caller adds ids one by one with watch,
// under each object's shard lock, so that the CURRENT event and later
// changes cannot cross.
func (h *hub) subscribe(kinds []EventKind, everything bool) (*Subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	s := &Subscription{hub: h, ch: make(chan Event, h.buffer), done: make(chan struct{})}
	for _, k := range kinds {
		s.kinds |= 1 << k
	}
	h.live[s] = struct{}{}
	if everything {
		h.all[s] = struct{}{}
	}
	return s, nil
}

// watch adds id to s and queues ev, the object's current state, first.
// The caller holds id's shard lock.
func (h *hub) watch(s *Subscription, id handle.ID, ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.closed {
		return
	}
	ev.Seq = h.seq
	s.ids = append(s.ids, id)
	set := h.byID[id]
	if set == nil {
		set = make(map[*Subscription]struct{})
		h.byID[id] = set
	}
	set[s] = struct{}{}
	h.deliver(s, ev)
}

// current queues ev, the final state of an object that is already gone,
// without watching it: nothing more will happen to it.
func (h *hub) current(s *Subscription, ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.closed {
		return
	}
	ev.Seq = h.seq
	h.deliver(s, ev)
}

// drop ends s with err. h.mu is held.
func (h *hub) drop(s *Subscription, err error) {
	if s.closed {
		return
	}
	s.closed = true
	s.err = err
	delete(h.live, s)
	delete(h.all, s)
	for _, id := range s.ids {
		if set := h.byID[id]; set != nil {
			delete(set, s)
			if len(set) == 0 {
				delete(h.byID, id)
			}
		}
	}
	close(s.done)
}

func (h *hub) lastSeq() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seq
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.live)
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.live {
		h.drop(s, ErrClosed)
	}
}
