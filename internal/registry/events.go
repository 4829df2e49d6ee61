package registry

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// EventKind says what happened to an object.
type EventKind uint8

// The kinds of event: EventCurrent, then one per state an object enters.
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

	// A reap's event leaves the registry with Handle empty and these set:
	// the handle is formatted (withHandle) only as the event is delivered,
	// replayed or observed. Most COLLECTED events are none of these, and
	// formatting a million handles was one allocation each and a sixth of
	// reaping them. Every Event a subscriber or observer gets has Handle
	// set and these zero.
	codec *handle.Codec
	mac   handle.MAC
}

// withHandle returns ev with its handle formatted if it was left to be.
func (ev Event) withHandle() Event {
	if ev.codec != nil {
		ev.Handle = ev.codec.FormatMAC(handle.Object, ev.ID, ev.mac)
		ev.codec, ev.mac = nil, handle.MAC{}
	}
	return ev
}

// ErrWatchTooSlow ends a subscription whose reader fell a full buffer
// behind: the registry never blocks on a watcher.
var ErrWatchTooSlow = errors.New("watcher fell behind its events")

// CompactedError refuses a watch that asks to resume from a sequence the
// history no longer keeps, or from one beyond the next event: resuming
// there would miss events, or promise ones that never were. etcd's
// compacted revision is the model.
type CompactedError struct {
	// From is the sequence the watch asked to resume from.
	From uint64
	// Oldest is the oldest sequence a watch can resume from now: the
	// oldest event the history keeps, or the next event to come when it
	// keeps none.
	Oldest uint64
	// Newest is the last event's sequence (0 before the first).
	Newest uint64
}

func (e *CompactedError) Error() string {
	if e.From > e.Newest {
		return fmt.Sprintf("watch cannot resume from sequence %d: the newest event is %d", e.From, e.Newest)
	}
	return fmt.Sprintf("watch cannot resume from sequence %d: the history starts at %d", e.From, e.Oldest)
}

// HistoryStats describe the event history that watches resume from.
type HistoryStats struct {
	// Capacity is how many events it keeps at most (0: none).
	Capacity int
	// Events is how many it keeps now.
	Events int
	// Oldest and Newest are the sequences of the oldest and newest events
	// it keeps; 0 when it keeps none.
	Oldest, Newest uint64
}

// Subscription receives events until it is closed or falls behind.
type Subscription struct {
	hub   *hub
	ch    chan Event
	done  chan struct{}
	kinds uint32 // bit per EventKind; 0 means all

	// Fixed before the subscription is returned.
	replay []Event // a resumed subscription's events from the history
	ending int     // watched objects whose final event is still to come

	// Guarded by hub.mu.
	ids    []handle.ID // watched objects; nil means every object
	err    error
	closed bool
}

// Replay returns, for a subscription resumed from a sequence, the events
// from the history since that sequence, in order: read them before
// Events, which carries what follows them. It may hold more events than
// the buffer of Events: a replay never drops its subscriber. Nil for a
// subscription that starts now.
func (s *Subscription) Replay() []Event { return s.replay }

// Ending returns, for a subscription to some objects, how many of them
// are to end (COLLECTED or DELETED, or a CURRENT event in one of those
// states) through Replay or Events: a watch whose objects have all ended
// has nothing more to say. Objects that ended before a resumed watch's
// sequence are not counted. Zero for a subscription to every object.
func (s *Subscription) Ending() int { return s.ending }

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
//
// The hub keeps the last events in a ring, the history, so that a watcher
// that lost its stream resumes where it was. Numbering, recording and
// delivering an event is one step under mu, and so is taking a replay from
// the ring and registering its subscription: no event falls between a
// replay and the live events after it, and none is in both.
type hub struct {
	mu     sync.Mutex
	seq    uint64
	live   map[*Subscription]struct{} // every open subscription
	all    map[*Subscription]struct{} // those that want every object
	byID   map[handle.ID]map[*Subscription]struct{}
	closed bool
	buffer int
	// maxLive bounds the open subscriptions, each of which may hold
	// buffer events: 0, none.
	maxLive int

	// The history: the event of sequence n is at ring[(n-1)%histCap]
	// while n > seq-len(ring). The ring grows by append up to histCap,
	// then each event overwrites the oldest: one slot write per event.
	ring    []Event
	histCap int // 0: no history
	next    int // the ring slot the next event goes to
}

func newHub(buffer, history, maxWatchers int) *hub {
	return &hub{
		maxLive: max(maxWatchers, 0),
		live:    make(map[*Subscription]struct{}),
		all:     make(map[*Subscription]struct{}),
		byID:    make(map[handle.ID]map[*Subscription]struct{}),
		buffer:  buffer,
		histCap: max(history, 0),
	}
}

// publish numbers ev, records it in the history, delivers it without
// blocking, and returns its sequence number.
func (h *hub) publish(ev *Event) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.publishLocked(ev)
}

// publishAll publishes evs in order under one hold of h.mu, as a reap of
// many objects does, and sets their sequence numbers.
func (h *hub) publishAll(evs []Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range evs {
		evs[i].Seq = h.publishLocked(&evs[i])
	}
}

// publishLocked is publish with h.mu held. It sets ev.Seq. ev is a
// pointer, not a copy: an Event is 144 bytes, and a Pin and an Unpin
// copied theirs four times on the way to the ring.
func (h *hub) publishLocked(ev *Event) uint64 {
	h.seq++
	ev.Seq = h.seq
	if h.histCap > 0 {
		if h.next < len(h.ring) {
			h.ring[h.next] = *ev
		} else {
			h.ring = append(h.ring, *ev)
		}
		if h.next++; h.next == h.histCap {
			h.next = 0
		}
	}
	// Most events have no subscriber: skip the maps' iteration and
	// hashing when they are empty, which is most of an unwatched
	// publish's cost. The ring keeps an event's handle unformatted; what
	// is delivered has it.
	if len(h.all) > 0 {
		d := ev.withHandle()
		for s := range h.all {
			h.deliver(s, d)
		}
	}
	if len(h.byID) > 0 {
		if set := h.byID[ev.ID]; len(set) > 0 {
			d := ev.withHandle()
			for s := range set {
				h.deliver(s, d)
			}
		}
		if ev.State == Collected || ev.State == Deleted {
			delete(h.byID, ev.ID) // nothing more will happen to it
		}
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
	if err := h.admit(); err != nil {
		return nil, err
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

// admit says whether one more subscription may open: the hub is not
// closed and fewer than maxLive are open. h.mu is held.
func (h *hub) admit() error {
	if h.closed {
		return ErrClosed
	}
	if h.maxLive > 0 && len(h.live) >= h.maxLive {
		return &LimitError{Limit: LimitWatchers, Max: int64(h.maxLive), Want: int64(len(h.live) + 1)}
	}
	return nil
}

// oldest returns the oldest sequence a watch can resume from: the oldest
// event kept, or the next to come when none is. h.mu is held.
func (h *hub) oldest() uint64 { return h.seq - uint64(len(h.ring)) + 1 }

// subscribeFrom registers a subscription resumed from sequence from (1 or
// more) and gives it the history's events since, in one step under h.mu.
// With ids nil it wants every object's events of the given kinds;
// otherwise those of ids, and live reports, for each, whether its object
// has yet to end (is still in its shard's map): the caller holds the
// shard locks of ids, so that no object ends between that answer and the
// registration. An object that ended before from is neither replayed nor
// watched.
func (h *hub) subscribeFrom(from uint64, kinds []EventKind, ids []handle.ID, live func(handle.ID) bool) (*Subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.admit(); err != nil {
		return nil, err
	}
	if oldest := h.oldest(); from < oldest || from > h.seq+1 {
		return nil, &CompactedError{From: from, Oldest: oldest, Newest: h.seq}
	}
	s := &Subscription{hub: h, ch: make(chan Event, h.buffer), done: make(chan struct{})}
	for _, k := range kinds {
		s.kinds |= 1 << k
	}
	var want map[handle.ID]bool // watched id -> its final event is replayed
	if ids != nil {
		want = make(map[handle.ID]bool, len(ids))
		for _, id := range ids {
			want[id] = false
		}
	}
	// The ring holds sequences oldest..seq; from is among them or seq+1.
	for n := from; n <= h.seq; n++ {
		ev := h.ring[(n-1)%uint64(h.histCap)]
		if want == nil {
			if s.wants(ev.Kind) {
				s.replay = append(s.replay, ev.withHandle())
			}
			continue
		}
		if _, ok := want[ev.ID]; ok {
			s.replay = append(s.replay, ev.withHandle())
			if ev.State == Collected || ev.State == Deleted {
				want[ev.ID] = true
			}
		}
	}
	h.live[s] = struct{}{}
	if want == nil {
		h.all[s] = struct{}{}
		return s, nil
	}
	for id, ended := range want {
		switch {
		case ended:
			s.ending++ // within the replay
		case live(id):
			s.ending++
			h.follow(s, id)
		}
	}
	return s, nil
}

// history returns the history's figures.
func (h *hub) history() HistoryStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := HistoryStats{Capacity: h.histCap, Events: len(h.ring)}
	if len(h.ring) > 0 {
		st.Oldest, st.Newest = h.oldest(), h.seq
	}
	return st
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
	h.follow(s, id)
	h.deliver(s, ev)
}

// follow makes s receive id's events from now on. h.mu is held.
func (h *hub) follow(s *Subscription, id handle.ID) {
	s.ids = append(s.ids, id)
	set := h.byID[id]
	if set == nil {
		set = make(map[*Subscription]struct{})
		h.byID[id] = set
	}
	set[s] = struct{}{}
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
