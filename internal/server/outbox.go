package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// DefaultStreamStallTimeout is how long a message on a lease or watch
// stream may wait for a client that does not read before the stream is
// ended.
const DefaultStreamStallTimeout = 10 * time.Second

// outboxSize bounds the messages a stream queues behind one that its
// client is slow to take. A lease stream gives one answer per request, so
// a client that keeps sending without reading fills it and is stalled.
const outboxSize = 16

// outbox sends a stream's messages on a goroutine of its own. gRPC's
// Send blocks while the client's flow-control window is full, and only
// the stream's end unblocks it: a handler that sent itself would be tied
// up for ever by a client that stopped reading, deaf to revokes and to
// shutdown. With the outbox, the handler waits for a send at most the
// stall timeout, and never when the lease is ended from outside.
//
// The sender goroutine runs only while messages come: it starts when one
// is queued and ends once the queue has stayed empty for senderLinger. An
// idle lease stream, which is most of them, so costs no goroutine (and no
// stack) for sending, and a busy one does not start a goroutine, and grow
// its stack, for every answer. A lease stream's outbox runs its sender on
// the streams' pool instead, and the sender ends as soon as the queue is
// empty: the pool's goroutines are what linger (see pool).
//
// After the handler returns, gRPC cancels the stream, which ends a Send
// still in progress; the goroutine then ends too.
type outbox[T any] struct {
	sendFn  func(T) error // the stream's Send
	stall   time.Duration
	queue   chan T        // closed by close
	exited  chan struct{} // closed when the sender is done: a Send failed, or the queue was closed and drained
	stalled chan struct{} // closed when a Send took longer than stall
	err     error         // why Send failed; written before exited is closed
	running atomic.Bool   // a sender goroutine runs; stays set once it is done for good
	busy    atomic.Bool   // a Send is in progress
	quit    atomic.Bool   // the handler is gone: send nothing more
	once    sync.Once     // closes queue
	stallMu sync.Once     // closes stalled

	// linger is how long the sender waits for the next message before it
	// ends (senderLinger; tests shorten it), and lingering the timer it
	// waits with, made by the first wait. Only the running sender touches
	// lingering.
	linger    time.Duration
	lingering *time.Timer
	// onFail, when set, is called once stalled is closed and once a Send
	// failed: a handler that waits on something else than those channels
	// is so told. Set before the first send.
	onFail func()
	// pool, when set, runs the sender instead of a goroutine of its own,
	// and the sender then ends as soon as the queue is empty: the pool's
	// goroutine is what lingers (see pool). Set before the first send.
	pool *pool

	// One timer for every Send, made by the first: it fires stall after
	// the Send in progress began, and checks that this Send is still the
	// one in progress, since a firing meant for the previous one may run
	// late. Only the running sender touches timer.
	timer *time.Timer
	base  time.Time
	began atomic.Int64 // since base, +1, of the Send in progress; 0: none
}

func newOutbox[T any](send func(T) error, stall time.Duration) *outbox[T] {
	if stall <= 0 {
		stall = DefaultStreamStallTimeout
	}
	return &outbox[T]{
		sendFn:  send,
		stall:   stall,
		queue:   make(chan T, outboxSize),
		exited:  make(chan struct{}),
		stalled: make(chan struct{}),
		linger:  senderLinger,
	}
}

// senderLinger is how long an outbox's sender waits for another message
// before it ends: longer than the gap between a client's requests in a
// busy stream, short beside the life of an idle one.
const senderLinger = time.Second

// wake starts the sender unless one runs, or is done for good.
func (o *outbox[T]) wake() {
	if o.running.CompareAndSwap(false, true) {
		if o.pool != nil {
			o.pool.run(o.run)
		} else {
			go o.run()
		}
	}
}

// run sends what is queued and returns when nothing came for linger (leaving
// running clear for the next wake), when a Send fails or when the queue
// was closed and drained (leaving running set, so that no sender starts
// again, and exited closed).
func (o *outbox[T]) run() {
	for {
		m, ok, got := o.next()
		if !got {
			o.running.Store(false)
			// A message queued after the receive above and before the
			// store found running set and started no sender: take it.
			if len(o.queue) == 0 || !o.running.CompareAndSwap(false, true) {
				return
			}
			continue
		}
		if !ok {
			close(o.exited)
			return
		}
		if o.quit.Load() {
			return
		}
		if err := o.sendOne(m); err != nil {
			o.err = err
			close(o.exited)
			o.failed()
			return
		}
	}
}

// next returns the next message, waiting for it at most linger; got is
// false if none came. ok is false once the queue is closed and drained.
func (o *outbox[T]) next() (m T, ok, got bool) {
	select {
	case m, ok = <-o.queue:
		return m, ok, true
	default:
	}
	if o.pool != nil {
		return m, false, false
	}
	if o.lingering == nil {
		o.lingering = time.NewTimer(o.linger)
	} else {
		o.lingering.Reset(o.linger)
	}
	select {
	case m, ok = <-o.queue:
		o.lingering.Stop()
		return m, ok, true
	case <-o.lingering.C:
		return m, false, false
	}
}

// sendOne sends m, closing stalled if that takes longer than stall.
func (o *outbox[T]) sendOne(m T) error {
	if o.timer == nil {
		o.base = time.Now()
		o.timer = time.AfterFunc(time.Hour, func() {
			if b := o.began.Load(); b != 0 && time.Since(o.base)-time.Duration(b-1) >= o.stall {
				o.stallMu.Do(func() { close(o.stalled); o.failed() })
			}
		})
	}
	o.busy.Store(true)
	o.began.Store(int64(time.Since(o.base)) + 1)
	o.timer.Reset(o.stall)
	err := o.sendFn(m)
	o.timer.Stop()
	o.began.Store(0)
	o.busy.Store(false)
	return err
}

// send queues m. It fails when the stream stalled or broke, when ctx ends,
// and with errEndedOutside when ended closes while the queue is full.
func (o *outbox[T]) send(ctx context.Context, m T, ended <-chan struct{}) error {
	select {
	case <-o.stalled:
		return o.stalledStatus()
	case <-o.exited:
		return o.err
	default:
	}
	if o.offer(m) {
		return nil
	}
	// Full: wait for room, but not for ever. The sender runs, since
	// messages wait.
	select {
	case o.queue <- m:
		o.wake()
		return nil
	case <-o.stalled:
		return o.stalledStatus()
	case <-o.exited:
		return o.err
	case <-ended:
		return errEndedOutside
	case <-ctx.Done():
		return ctxStatus(ctx.Err())
	}
}

// offer queues m if there is room, and reports whether it did.
func (o *outbox[T]) offer(m T) bool {
	select {
	case o.queue <- m:
		o.wake()
		return true
	default:
		return false
	}
}

// errEndedOutside: the lease was ended from outside while an answer
// waited for room.
var errEndedOutside = errors.New("lease ended from outside")

// idle reports whether every queued answer has been handed to gRPC.
func (o *outbox[T]) idle() bool { return !o.busy.Load() && len(o.queue) == 0 }

// flush waits until every queued answer has been handed to gRPC, at most
// the stall timeout, and returns why not if they could not be.
func (o *outbox[T]) flush(ctx context.Context) error {
	o.close()
	select {
	case <-o.exited:
		return o.err
	case <-o.stalled:
		return o.stalledStatus()
	case <-ctx.Done():
		return ctxStatus(ctx.Err())
	}
}

// flushWithin is flush bounded by d: after d it gives up and returns nil.
func (o *outbox[T]) flushWithin(ctx context.Context, d time.Duration) error {
	o.close()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-o.exited:
		return o.err
	case <-o.stalled:
		return nil
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctxStatus(ctx.Err())
	}
}

// endedFlush bounds how long a lease ended from outside waits for its
// revoked answer to be taken: a revoke or a shutdown must not wait on a
// client that does not read.
const endedFlush = time.Second

// close tells the sender that nothing more will be queued: it sends what
// is, and closes exited.
func (o *outbox[T]) close() {
	o.once.Do(func() { close(o.queue) })
	o.wake()
}

// abandon drops what is queued: the handler is returning without it. A
// sender still running stops at its next message; none starts again.
func (o *outbox[T]) abandon() {
	o.quit.Store(true)
	o.once.Do(func() { close(o.queue) })
}

// failed calls onFail, if set.
func (o *outbox[T]) failed() {
	if o.onFail != nil {
		o.onFail()
	}
}

func (o *outbox[T]) stalledStatus() error {
	return toStatus(&StreamStalledError{Stall: o.stall}, handle.Object)
}
