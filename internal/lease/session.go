package lease

import (
	"sync"
	"time"

	"github.com/weakref/registry/internal/registry"
)

// Session is one stream's hold on a lease. Its methods are for the one
// goroutine that serves the stream; Done and Revocation may be used from
// any goroutine.
type Session struct {
	m       *Manager
	lease   *Lease
	peer    string
	resumed bool

	done    chan struct{} // closed by end
	onEnd   func()        // OpenParams.OnEnd: called once done is closed; nil: none
	endOnce sync.Once
	cause   Cause  // written once before done is closed
	reason  string // written once before done is closed
	freed   int    // written once before done is closed
}

// ID returns the lease's id.
func (s *Session) ID() string { return s.lease.holder.LeaseID }

// Resumed reports whether the session resumed an existing lease.
func (s *Session) Resumed() bool { return s.resumed }

// Info describes the session's lease.
func (s *Session) Info() Info { return s.lease.info() }

// Done is closed when the lease was ended from outside the stream:
// revoked, taken over by another stream, or the server shutting down.
func (s *Session) Done() <-chan struct{} { return s.done }

// Revocation says why Done was closed and how many pins that released.
// Only meaningful after Done is closed.
func (s *Session) Revocation() (cause Cause, reason string, released int) {
	return s.cause, s.reason, s.freed
}

// end records why the session was ended, closes done and calls onEnd.
// The lease's mu is held.
func (s *Session) end(cause Cause, reason string, released int) {
	s.endOnce.Do(func() {
		s.cause, s.reason, s.freed = cause, reason, released
		close(s.done)
		if s.onEnd != nil {
			s.onEnd()
		}
	})
}

// Outcome is what a pin or unpin did to one handle.
type Outcome uint8

// The outcomes of a pin or unpin, named after what they did.
const (
	Pinned Outcome = iota + 1
	AlreadyPinned
	Unpinned
	NotPinned
	Failed
)

// Result is the result of a pin or unpin for one handle.
type Result struct {
	Handle  string
	Outcome Outcome
	// Err says why, for Failed: a handle parse error, registry.ErrCollected,
	// registry.ErrDeleted, a *registry.LimitError.
	Err error
	// Info is the object's metadata after the change, when it exists.
	Info registry.Info
}

// attached locks the lease and checks that this session still holds it.
// On success the caller must unlock l.mu.
func (s *Session) attached() error {
	l := s.lease
	l.mu.Lock()
	if l.session != s {
		l.mu.Unlock()
		select {
		case <-s.done:
			if s.cause == CauseTakenOver {
				return ErrTakenOver
			}
		default:
		}
		return ErrEnded
	}
	return nil
}

// Pin pins each handle with the lease and returns a result per handle, in
// order. Errors (for the whole call): ErrEnded, ErrTakenOver.
func (s *Session) Pin(handles []string) ([]Result, error) {
	if err := s.attached(); err != nil {
		return nil, err
	}
	l := s.lease
	defer l.mu.Unlock()
	out := make([]Result, len(handles))
	for i, h := range handles {
		out[i] = s.pinLocked(h)
	}
	return out, nil
}

func (s *Session) pinLocked(h string) Result {
	l, m := s.lease, s.m
	id, err := m.reg.Parse(h)
	if err != nil {
		return Result{Handle: h, Outcome: Failed, Err: err}
	}
	if _, ok := l.pins[id]; !ok {
		if err := m.checkPinLimit(l, 1); err != nil {
			return Result{Handle: h, Outcome: Failed, Err: err}
		}
	}
	info, already, err := m.reg.PinParsed(id, h, l.holder)
	switch {
	case err != nil:
		return Result{Handle: h, Outcome: Failed, Err: err}
	case already:
		return Result{Handle: h, Outcome: AlreadyPinned, Info: info}
	}
	l.pins[id] = struct{}{}
	return Result{Handle: h, Outcome: Pinned, Info: info}
}

// Unpin releases the lease's pin on each handle and returns a result per
// handle, in order. With a handoff, each object it lets go of stays
// strongly held at least that long (see registry.UnpinHandoff); the
// caller caps it. Errors (for the whole call): ErrEnded, ErrTakenOver.
func (s *Session) Unpin(handles []string, handoff time.Duration) ([]Result, error) {
	if err := s.attached(); err != nil {
		return nil, err
	}
	l, m := s.lease, s.m
	defer l.mu.Unlock()
	out := make([]Result, len(handles))
	for i, h := range handles {
		id, err := m.reg.Parse(h)
		if err != nil {
			out[i] = Result{Handle: h, Outcome: Failed, Err: err}
			continue
		}
		if _, ok := l.pins[id]; !ok {
			// Not ours: say so, but still report what the object is.
			info, err := m.reg.StatID(id)
			if err != nil {
				out[i] = Result{Handle: h, Outcome: Failed, Err: err}
			} else {
				out[i] = Result{Handle: h, Outcome: NotPinned, Info: info}
			}
			continue
		}
		delete(l.pins, id)
		info, pinned, err := m.reg.UnpinHandoffParsed(id, h, l.holder, handoff)
		switch {
		case err != nil: // force-deleted under us: the pin is gone all the same
			out[i] = Result{Handle: h, Outcome: Unpinned}
		case !pinned:
			out[i] = Result{Handle: h, Outcome: NotPinned, Info: info}
		default:
			out[i] = Result{Handle: h, Outcome: Unpinned, Info: info}
		}
	}
	return out, nil
}

// Close releases every pin, with a hand-off as Unpin's, and ends the
// lease. It returns how many pins it released. Errors: ErrEnded,
// ErrTakenOver.
func (s *Session) Close(handoff time.Duration) (int, error) {
	if err := s.attached(); err != nil {
		return 0, err
	}
	l := s.lease
	released := s.m.releaseLocked(l, handoff)
	l.mu.Unlock()
	s.m.forget(l)
	s.m.ended(l, EndClosed, "", released)
	return released, nil
}

// Detach is called when the stream ended without Close. With no grace the
// lease ends and its pins are released now; with a grace it waits that
// long for a new stream to resume it. Detach after the lease ended or was
// taken over does nothing.
func (s *Session) Detach() {
	if err := s.attached(); err != nil {
		return
	}
	l, m := s.lease, s.m
	if l.grace <= 0 {
		released := m.releaseLocked(l, 0)
		l.mu.Unlock()
		m.forget(l)
		m.ended(l, EndDropped, "", released)
		return
	}
	l.session = nil
	m.attached.Add(-1)
	m.detached.Add(1)
	l.expireAt = m.now().Add(l.grace)
	// The timer may fire before AfterFunc returns: its func reads t only
	// through expire, under l.mu, which this goroutine holds until t is set.
	var t *time.Timer
	t = time.AfterFunc(l.grace, func() { m.expire(l, &t) })
	l.expire = t
	pins := len(l.pins)
	l.mu.Unlock()
	m.observe(Event{Kind: EventDetached, LeaseID: l.holder.LeaseID, Client: l.client, Peer: s.peer, Grace: l.grace, Pins: pins})
}

// expire ends l if it is still detached on timer *t when its grace runs
// out. *t is read under l.mu.
func (m *Manager) expire(l *Lease, t **time.Timer) {
	l.mu.Lock()
	if l.ended || l.session != nil || l.expire != *t {
		l.mu.Unlock()
		return // resumed or ended meanwhile
	}
	released := m.releaseLocked(l, 0)
	l.mu.Unlock()
	m.forget(l)
	m.ended(l, EndExpired, "", released)
}
