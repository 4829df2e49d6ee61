package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// DefaultStreamStallTimeout is how long a lease stream's answer may wait
// for a client that does not read before the stream is ended.
const DefaultStreamStallTimeout = 10 * time.Second

// outboxSize bounds the answers a lease stream queues behind one that a
// client is slow to take. Each request gets one answer, so a client
// that keeps sending without reading fills it and is then stalled.
const outboxSize = 16

// errStalled: an answer could not be delivered within the stall timeout.
var errStalled = errors.New("lease stream stalled")

// outbox sends a lease stream's answers on a goroutine of its own. gRPC's
// Send blocks while the client's flow-control window is full, and only
// the stream's end unblocks it: a handler that sent itself would be tied
// up for ever by a client that stopped reading, deaf to revokes and to
// shutdown. With the outbox, the handler waits for a send at most the
// stall timeout, and never when the lease is ended from outside.
//
// After the handler returns, gRPC cancels the stream, which ends a Send
// still in progress; the goroutine then ends too.
type outbox struct {
	stream  leaseStream
	stall   time.Duration
	queue   chan *registryv1.LeaseResponse // closed by close
	exited  chan struct{}                  // closed when the sender goroutine ends
	stalled chan struct{}                  // closed when a Send took longer than stall
	err     error                          // why Send failed; written before exited is closed
	busy    atomic.Bool                    // a Send is in progress
	quit    atomic.Bool                    // the handler is gone: send nothing more
	once    sync.Once                      // closes queue
	stallMu sync.Once                      // closes stalled
}

func newOutbox(stream leaseStream, stall time.Duration) *outbox {
	if stall <= 0 {
		stall = DefaultStreamStallTimeout
	}
	o := &outbox{
		stream:  stream,
		stall:   stall,
		queue:   make(chan *registryv1.LeaseResponse, outboxSize),
		exited:  make(chan struct{}),
		stalled: make(chan struct{}),
	}
	go o.run()
	return o
}

func (o *outbox) run() {
	defer close(o.exited)
	for m := range o.queue {
		if o.quit.Load() {
			return
		}
		o.busy.Store(true)
		t := time.AfterFunc(o.stall, func() { o.stallMu.Do(func() { close(o.stalled) }) })
		err := o.stream.Send(m)
		t.Stop()
		o.busy.Store(false)
		if err != nil {
			o.err = err
			return
		}
	}
}

// send queues m. It fails when the stream stalled or broke, when ctx ends,
// and with errEndedOutside when ended closes first.
func (o *outbox) send(ctx context.Context, m *registryv1.LeaseResponse, ended <-chan struct{}) error {
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
func (o *outbox) idle() bool { return !o.busy.Load() && len(o.queue) == 0 }

// flush waits until every queued answer has been handed to gRPC, at most
// the stall timeout, and returns why not if they could not be.
func (o *outbox) flush(ctx context.Context) error {
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
func (o *outbox) flushWithin(ctx context.Context, d time.Duration) error {
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
func (o *outbox) close() {
	o.once.Do(func() { close(o.queue) })
}

// abandon drops what is queued: the handler is returning without it.
func (o *outbox) abandon() {
	o.quit.Store(true)
	o.close()
}

func (o *outbox) stalledStatus() error {
	return newStatus(codes.ResourceExhausted, registryv1.ErrorReason_STREAM_STALLED.String(),
		"the client did not read its lease stream for "+o.stall.String()+"; the stream was ended and its lease detached",
		map[string]string{"stall_timeout": o.stall.String()})
}
