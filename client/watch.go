package client

import (
	"context"
	"time"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// EventKind is what happened to an object.
type EventKind int

// The kinds, in the API's order.
const (
	EventUnknown   EventKind = iota
	EventCurrent             // the object's state when the watch began
	EventCreated             // stored
	EventPinned              // a lease pinned it
	EventUnpinned            // a lease let go of it
	EventLingering           // unpinned, held strongly for a while yet
	EventWeak                // held weakly: the next GC may take it
	EventCollected           // the garbage collector took it; final
	EventDeleted             // an operator deleted it; final
)

func (k EventKind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return "UNKNOWN"
	}
	return kindNames[k]
}

var kindNames = []string{"UNKNOWN", "CURRENT", "CREATED", "PINNED", "UNPINNED", "LINGERING", "WEAK", "COLLECTED", "DELETED"}

// Event is one change in an object's lifecycle. State and PinCount are
// the object's after the change.
type Event struct {
	Seq      uint64 // increasing across all of one registryd run's events
	Kind     EventKind
	Handle   string
	State    State
	PinCount int
	Size     int64
	LeaseID  string // for PINNED and UNPINNED: the lease
	Time     time.Time
	// UnpinnedFor is, for COLLECTED, how long after its last unpin the
	// object was collected.
	UnpinnedFor time.Duration
}

func eventFrom(e *registryv1.Event) Event {
	return Event{
		Seq:         e.GetSequence(),
		Kind:        EventKind(e.GetKind()),
		Handle:      e.GetHandle(),
		State:       State(e.GetState()),
		PinCount:    int(e.GetPinCount()),
		Size:        e.GetSize(),
		LeaseID:     e.GetLeaseId(),
		Time:        timeOf(e.GetTime().AsTime(), e.GetTime() != nil),
		UnpinnedFor: e.GetUnpinnedFor().AsDuration(),
	}
}

// Watcher receives the lifecycle events of the objects it watches.
type Watcher struct {
	stream registryv1.RegistryService_WatchClient
	cancel context.CancelFunc
}

// Watch watches the objects handles name. It returns once the watch is in
// place: every event after that reaches it, starting with a CURRENT event
// per object. The watch ends when ctx does, on Close, or by itself when
// every watched object has been collected or deleted.
func (c *Client) Watch(ctx context.Context, handles ...string) (*Watcher, error) {
	wctx, cancel := context.WithCancel(ctx)
	stream, err := c.rpc.Watch(wctx, &registryv1.WatchRequest{Handles: handles})
	if err != nil {
		cancel()
		return nil, fromStatus(err)
	}
	if _, err := stream.Header(); err != nil {
		cancel()
		return nil, fromStatus(err)
	}
	return &Watcher{stream: stream, cancel: cancel}, nil
}

// Recv returns the next event. It returns io.EOF once every watched object
// has ended, and the watch's error otherwise (ErrLimit with reason
// WATCH_TOO_SLOW if the watcher fell behind).
func (w *Watcher) Recv() (Event, error) {
	m, err := w.stream.Recv()
	if err != nil {
		return Event{}, fromStatus(err)
	}
	return eventFrom(m.GetEvent()), nil
}

// Close ends the watch.
func (w *Watcher) Close() { w.cancel() }
