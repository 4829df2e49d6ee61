package server

import (
	"sync"
	"time"
)

// worker runs a lease stream's requests on a goroutine that lives only
// while requests come: it starts with one and ends once none has come
// for workerLinger.
//
// An idle lease stream is two parked goroutines, its handler and its
// receiver, and the runtime keeps a goroutine's stack at the largest
// size it needed until less than a quarter of it is in use, which a
// goroutine parked under gRPC's frames never comes back to. Serving a
// request goes deep (handles, the registry, events, tracing): done by
// the receiver, as it was, it grew the receiver's stack to 8 KiB for as
// long as the stream lived, and opening the lease did as much to the
// handler's. On the worker that depth is paid while requests come and
// freed with the goroutine, so the two parked ones keep the stacks they
// started with.
//
// One job runs at a time, in the order given, and do waits for it: the
// caller's logic is the same as if it ran them itself. The handler runs
// the open, and the receiver, after it, the requests: never both at once.
type worker struct {
	jobs     chan func()   // unbuffered: a send succeeds only to a worker waiting for one
	done     chan struct{} // a job has run
	quit     chan struct{} // closed by stop
	stopOnce sync.Once
	linger   time.Duration
}

// workerLinger is how long a worker waits for the next request before it
// ends: longer than the gap between a busy client's requests, short
// beside the life of an idle stream.
const workerLinger = time.Second

func newWorker() *worker {
	return &worker{jobs: make(chan func()), done: make(chan struct{}), quit: make(chan struct{}), linger: workerLinger}
}

// do runs job on the worker and returns once it has run.
func (w *worker) do(job func()) {
	select {
	case w.jobs <- job:
	default:
		// None waits: none runs, or the one that ran is ending and takes
		// no more jobs. Start one.
		go w.run(job)
	}
	<-w.done
}

func (w *worker) run(job func()) {
	t := time.NewTimer(w.linger)
	defer t.Stop()
	for {
		job()
		w.done <- struct{}{}
		t.Reset(w.linger)
		select {
		case job = <-w.jobs:
		case <-t.C:
			return
		case <-w.quit:
			return
		}
	}
}

// stop ends a worker waiting for its next job at once: the stream ended.
func (w *worker) stop() { w.stopOnce.Do(func() { close(w.quit) }) }
