package server

import (
	"sync"
	"time"
)

// An idle lease stream is two parked goroutines, its handler and its
// receiver, and the runtime keeps a goroutine's stack at the largest
// size it needed until less than a quarter of it is in use, which a
// goroutine parked under gRPC's frames never comes back to. Serving a
// request goes deep (decoding, handles, the registry, events, tracing):
// done by the receiver, as it was, it grew the receiver's stack to 8 KiB
// (16 for some) for as long as the stream lived, and opening the lease
// did as much to the handler's. So that work runs on a pool's goroutines
// instead, and so do the stream's sends: the two parked goroutines keep
// the stacks they started with, and the deep stacks are a few, shared by
// every stream, not one or two more a stream (which, alive for a second
// after each stream's last request, fragmented the stack memory that
// the parked ones hold, and so cost resident memory as well).

// pool runs short jobs on goroutines that every stream shares. A job
// runs on an idle one, or on a new one when none is idle; a goroutine
// ends once no job has come for poolLinger. So there are as many as the
// jobs running at once, and none when nothing runs. The zero pool is
// ready to use. Jobs may block (a Send the client's flow control holds):
// they never wait for one another.
type pool struct {
	once     sync.Once
	jobs     chan func()   // unbuffered: a send succeeds only to an idle goroutine
	quit     chan struct{} // closed by stop
	stopOnce sync.Once
}

func (p *pool) init() {
	p.once.Do(func() { p.jobs, p.quit = make(chan func()), make(chan struct{}) })
}

// stop ends the idle goroutines now, and each busy one after its job;
// jobs given later still run, each on a goroutine that ends with it. The
// server stops its pool when it shuts down.
func (p *pool) stop() {
	p.init()
	p.stopOnce.Do(func() { close(p.quit) })
}

// poolLinger is how long a pool goroutine waits for another job before
// it ends: longer than the gap between a busy stream's requests, short
// beside the life of an idle one.
const poolLinger = time.Second

// run runs job on a pool goroutine and returns at once.
func (p *pool) run(job func()) {
	p.init()
	select {
	case p.jobs <- job:
	default:
		go p.serve(job)
	}
}

func (p *pool) serve(job func()) {
	t := time.NewTimer(poolLinger)
	defer t.Stop()
	for {
		job()
		t.Reset(poolLinger)
		select {
		case job = <-p.jobs:
		case <-t.C:
			return
		case <-p.quit:
			return
		}
	}
}

// worker runs one lease stream's jobs on a pool, one at a time, in the
// order given: do waits for each, so its caller's logic is the same as
// if it ran them itself. A job given as a func made once runs without
// allocating: the lease handler's loop must not, so deep is it already.
type worker struct {
	pool *pool
	job  func()        // the one to run; set by do before the pool may read it
	run  func()        // runs job, then says so on done: made once
	done chan struct{} // a job has run
}

func newWorker(p *pool) *worker {
	w := &worker{pool: p, done: make(chan struct{}, 1)}
	w.run = func() { w.job(); w.done <- struct{}{} }
	return w
}

// do runs job on the pool and returns once it has run.
func (w *worker) do(job func()) {
	w.job = job
	w.pool.run(w.run)
	<-w.done
	w.job = nil // nor what it held
}
