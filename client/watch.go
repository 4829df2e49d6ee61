package client

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

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
	// Epoch is the run of registryd that numbered it: sequences start
	// again with every run.
	Epoch uint64
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
		Epoch:       e.GetEpoch(),
	}
}

// ErrWatchCompacted means a watch asked to resume from a sequence that the
// server's bounded history no longer keeps, or one it never reached (a
// sequence of another run, say). Error.Metadata["oldest_sequence"] is the
// oldest it can resume from. Events between were lost to this watcher:
// watch anew, without FromSequence, for the objects' current states.
var ErrWatchCompacted = errors.New("registry: watch history compacted")

// Reasons a watch stream ends with that the Watcher acts on.
const (
	reasonWatchCompacted = "WATCH_HISTORY_COMPACTED"
	reasonWatchTooSlow   = "WATCH_TOO_SLOW"
	reasonStreamStalled  = "STREAM_STALLED"
)

// WatchOption changes how WatchWith watches.
type WatchOption func(*watchParams)

type watchParams struct {
	from, epoch uint64
}

// FromSequence starts the watch at sequence seq (inclusive), as a watcher
// that received every event before it, with no CURRENT event: the server
// replays what happened to the objects since, from its bounded history,
// then the live events follow. Use it with LastSequence()+1 of an earlier
// watch. Seq 0 starts now, with CURRENT events. A sequence the history no
// longer keeps gives ErrWatchCompacted.
func FromSequence(seq uint64) WatchOption { return func(p *watchParams) { p.from = seq } }

// ResumeAfter starts the watch right after ev, an event an earlier watch
// received: FromSequence(ev.Seq+1), checked against ev's epoch, so that a
// registryd that restarted since answers ErrRestarted instead of
// replaying another run's events under the same numbers.
func ResumeAfter(ev Event) WatchOption {
	return func(p *watchParams) { p.from, p.epoch = ev.Seq+1, ev.Epoch }
}

// Watcher receives the lifecycle events of the objects it watches. Its
// stream survives connection loss: when the stream breaks (registryd
// unreachable for a while, the connection dropped, the watcher fell too
// far behind), the Watcher reconnects with backoff and resumes from the
// sequence after the last event it returned, so that Recv returns every
// event once and in order, none lost and none repeated, for as long as
// the server's history reaches back that far. A break before the first
// event starts the watch again as it began (with CURRENT events, or from
// the same FromSequence); one while the
// CURRENT events of several objects are still arriving resumes after the
// last one returned, so the objects whose CURRENT event had not arrived
// report only their changes from then on.
//
// A cluster's Watcher merges one such watch per node of its handles: each
// node's events come in that node's order and with its sequences, and a
// node that leaves the cluster (or restarts) ends the whole watch with
// ErrNodeUnavailable (or ErrRestarted).
//
// Recv must not be called from more than one goroutine at once; Close,
// LastSequence and Resumes may be called from any.
type Watcher struct {
	c       *Client
	ctx     context.Context // the watch's; Close cancels it
	cancel  context.CancelFunc
	handles []string

	// Owned by Recv's goroutine.
	stream    registryv1.RegistryService_WatchClient
	endStream context.CancelFunc // releases stream
	next      uint64             // the sequence to resume from; 0: start anew
	epoch     uint64             // the run next belongs to; 0: unknown
	ended     map[string]bool    // handles whose final event was returned
	err       error              // the end, returned by every later Recv
	retry     *backoff           // paces resumes, across resumes

	last    atomic.Uint64
	resumes atomic.Int64

	// merge is a cluster's watch: the Watchers of its nodes, merged.
	merge *watchMerge
}

// Watch watches the objects handles name. It returns once the watch is in
// place: every event after that reaches it, starting with a CURRENT event
// per object. A cluster's client watches each node's handles on that
// node, and Recv merges their events; a handle of a node that is not live
// fails the Watch with ErrNodeUnavailable. The watch ends when ctx does, on Close, or by itself when
// every watched object has been collected or deleted. A broken stream is
// resumed by itself (see Watcher). It is WatchWith with no option.
func (c *Client) Watch(ctx context.Context, handles ...string) (*Watcher, error) {
	return c.WatchWith(ctx, handles)
}

// WatchWith is Watch with options, such as FromSequence to resume where an
// earlier watch stopped.
func (c *Client) WatchWith(ctx context.Context, handles []string, opts ...WatchOption) (*Watcher, error) {
	if c.cl != nil {
		return c.cl.watch(ctx, handles, opts)
	}
	var p watchParams
	for _, o := range opts {
		o(&p)
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &Watcher{c: c, ctx: wctx, cancel: cancel, handles: handles, next: p.from, epoch: p.epoch, ended: map[string]bool{},
		retry: newBackoff(c.opts.backoff)}
	if err := w.open(handles); errors.Is(err, io.EOF) {
		w.err = io.EOF // every object ended before the sequence asked for
	} else if err != nil {
		cancel()
		return nil, err
	}
	return w, nil
}

// open starts a stream of handles from w.next and waits until the server
// says it is in place. It returns io.EOF if the stream ended at once,
// without error: every object ended before w.next.
func (w *Watcher) open(handles []string) error {
	ctx, cancel := context.WithCancel(w.ctx)
	stream, err := w.c.rpc.Watch(ctx, &registryv1.WatchRequest{Handles: handles, FromSequence: w.next, Epoch: w.epoch})
	if err == nil {
		var md metadata.MD
		if md, err = stream.Header(); err == nil && md == nil {
			// The stream ended before it was in place: Recv says why.
			_, err = stream.Recv()
		}
	}
	if err != nil {
		cancel()
		return watchError(err)
	}
	if w.endStream != nil {
		w.endStream()
	}
	w.stream, w.endStream = stream, cancel
	w.retry.up()
	return nil
}

// Recv returns the next event. It returns io.EOF once every watched object
// has ended; ErrWatchCompacted if the watcher was cut off for longer than
// the server's history reaches back; a context error after Close or when
// the watch's context ends; and the server's answer to a watch it refuses
// (ErrMalformedHandle, ErrUnknownHandle, ErrRestarted...). Any other
// break in the stream it mends by itself: it reconnects, with backoff,
// until it succeeds or one of those ends it.
func (w *Watcher) Recv() (Event, error) {
	if w.merge != nil {
		return w.recvMerged()
	}
	for w.err == nil {
		m, err := w.stream.Recv()
		if err == nil {
			ev := eventFrom(m.GetEvent())
			w.next, w.epoch = ev.Seq+1, ev.Epoch
			w.last.Store(ev.Seq)
			if ev.State == StateCollected || ev.State == StateDeleted {
				w.ended[ev.Handle] = true
			}
			return ev, nil
		}
		switch err = watchError(err); {
		case errors.Is(err, io.EOF):
			w.err = io.EOF
		case w.ctx.Err() != nil:
			w.err = err // cancelled: matches context.Canceled or DeadlineExceeded
		case !resumable(err):
			w.err = err
		default:
			w.err = w.resume()
		}
	}
	return Event{}, w.err
}

// resume reopens the watch, from the sequence after the last event
// returned, for the objects that have not ended, until it succeeds, the
// server refuses it for good, or the watch's context ends. It returns nil
// on success.
func (w *Watcher) resume() error {
	var handles []string
	seen := make(map[string]bool, len(w.handles))
	for _, h := range w.handles {
		if !w.ended[h] && !seen[h] {
			seen[h] = true
			handles = append(handles, h)
		}
	}
	if len(handles) == 0 {
		return io.EOF // the stream broke after the last object's end, before its own
	}
	w.retry.down()
	for {
		if !wait(w.retry.next(), w.ctx.Done()) {
			return w.ctx.Err()
		}
		err := w.open(handles)
		switch {
		case err == nil:
			w.resumes.Add(1)
			return nil
		case errors.Is(err, io.EOF):
			return err
		case w.ctx.Err() != nil:
			return w.ctx.Err()
		case !resumable(err):
			return err
		}
	}
}

// resumable reports whether a watch that ended with err may resume: the
// connection failed, or the server dropped a watcher that fell behind or
// stopped reading for a while (the history has what it missed).
func resumable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	switch {
	case e.Code == codes.Unavailable, e.Reason == reasonWatchTooSlow, e.Reason == reasonStreamStalled:
		return true
	case e.Reason == "" && (e.Code == codes.Internal || e.Code == codes.Unknown):
		return true // a stream reset in transit
	}
	return false
}

// watchError is fromStatus, knowing the reasons of a watch.
func watchError(err error) error {
	err = fromStatus(err)
	if e := (*Error)(nil); errors.As(err, &e) && e.Reason == reasonWatchCompacted {
		e.kind = ErrWatchCompacted
	}
	return err
}

// LastSequence returns the sequence of the last event Recv returned, 0
// before the first. A later watch started with FromSequence(LastSequence()+1)
// continues where this one stopped.
func (w *Watcher) LastSequence() uint64 { return w.last.Load() }

// Resumes returns how many times the watch reconnected after its stream
// broke.
func (w *Watcher) Resumes() int {
	if w.merge != nil {
		total := 0
		for _, part := range w.merge.parts {
			total += part.Resumes()
		}
		return total
	}
	return int(w.resumes.Load())
}

// Close ends the watch. Recv then returns an error matching
// context.Canceled.
func (w *Watcher) Close() { w.cancel() }
