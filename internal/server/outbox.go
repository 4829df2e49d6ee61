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
// After the handler returns, gRPC cancels the stream, which ends a Send
// still in progress; the goroutine then ends too.
type outbox[T any] struct {
	sendFn  func(T) error // the stream's Send
	stall   time.Duration
	queue   chan T        // closed by close
	exited  chan struct{} // closed when the sender goroutine ends
	stalled chan struct{} // closed when a Send took longer than stall
	err     error         // why Send failed; written before exited is closed
	busy    atomic.Bool   // a Send is in progress
	quit    atomic.Bool   // the handler is gone: send nothing more
	once    sync.Once     // closes queue
	stallMu sync.Once     // closes stalled
}

func newOutbox[T any](send func(T) error, stall time.Duration) *outbox[T] {
	if stall <= 0 {
		stall = DefaultStreamStallTimeout
	}
	o := &outbox[T]{
		sendFn:  send,
		stall:   stall,
		queue:   make(chan T, outboxSize),
		exited:  make(chan struct{}),
		stalled: make(chan struct{}),
	}
	go o.run()
	return o
}

func (o *outbox[T]) run() {
	defer close(o.exited)
	// One timer for every Send: it fires stall after the Send in progress
	// began, and checks that this Send is still the one in progress, since
	// a firing meant for the previous one may run late.
	base := time.Now()
	var began atomic.Int64 // since base, +1, of the Send in progress; 0: none
	t := time.AfterFunc(time.Hour, func() {
		if b := began.Load(); b != 0 && time.Since(base)-time.Duration(b-1) >= o.stall {
			o.stallMu.Do(func() { close(o.stalled) })
		}
	})
	t.Stop()
	defer t.Stop()
	for m := range o.queue {
		if o.quit.Load() {
			return
		}
		o.busy.Store(true)
		began.Store(int64(time.Since(base)) + 1)
		t.Reset(o.stall)
		err := o.sendFn(m)
		t.Stop()
		began.Store(0)
		o.busy.Store(false)
		if err != nil {
			o.err = err
			return
		}
	}
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
	select {
	case o.queue <- m:
		return nil
	default: // full: wait for room, but not for ever
	}
	select {
	case o.queue <- m:
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

// close tells the sender goroutine that nothing more will be queued, and
// that what is queued may be dropped if the handler has gone.
func (o *outbox[T]) close() {
	o.once.Do(func() { close(o.queue) })
}

// abandon drops what is queued: the handler is returning without it.
func (o *outbox[T]) abandon() {
	o.quit.Store(true)
	o.close()
}

func (o *outbox[T]) stalledStatus() error {
	return toStatus(&StreamStalledError{Stall: o.stall}, handle.Object)
}
