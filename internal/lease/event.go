package lease

import "time"

// EventKind says what happened to a lease.
type EventKind uint8

const (
	// EventOpened means a stream opened a new lease.
	EventOpened EventKind = iota + 1
	// EventResumed means a stream resumed a detached lease, or took over an
	// attached one.
	EventResumed
	// EventDetached means the lease's stream went away and its grace began.
	EventDetached
	// EventEnded means the lease ended and released its pins. Final.
	EventEnded
)

var eventKindNames = [...]string{"", "OPENED", "RESUMED", "DETACHED", "ENDED"}

func (k EventKind) String() string {
	if int(k) < len(eventKindNames) && k > 0 {
		return eventKindNames[k]
	}
	return "UNKNOWN"
}

// End says how a lease ended.
type End uint8

const (
	// EndClosed means its stream sent close.
	EndClosed End = iota + 1
	// EndDropped means its stream went away and it had no grace.
	EndDropped
	// EndExpired means it stayed detached for its whole grace.
	EndExpired
	// EndRevoked means an operator revoked it.
	EndRevoked
	// EndShutdown means the server shut down.
	EndShutdown
)

var endNames = [...]string{"", "CLOSED", "DROPPED", "EXPIRED", "REVOKED", "SHUTDOWN"}

func (e End) String() string {
	if int(e) < len(endNames) && e > 0 {
		return endNames[e]
	}
	return "UNKNOWN"
}

// Event is one change of one lease, as Config.Observe receives it.
type Event struct {
	Kind    EventKind
	LeaseID string
	Client  string
	// Peer is the stream's address, for EventOpened, EventResumed and
	// EventDetached.
	Peer  string
	Grace time.Duration
	// Pins is how many objects the lease pins, for EventResumed and
	// EventDetached.
	Pins int
	// End, Reason (for EndRevoked) and Released (the pins it let go) are
	// set for EventEnded.
	End      End
	Reason   string
	Released int
}
