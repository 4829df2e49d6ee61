package robust

import (
	"context"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// faultSet chooses which faults a run injects.
type faultSet struct {
	kill, freeze, network bool // on workers
	restart               bool // registryd SIGTERM and start, once mid-run
	gcStorm               bool // Collect in a loop, all the time
	revokeDelete          bool // revokes and deletes racing pins
}

var allFaults = faultSet{kill: true, freeze: true, network: true, restart: true, gcStorm: true, revokeDelete: true}

// injector injects faults until stopped.
type injector struct {
	c      *cluster
	set    faultSet
	cancel context.CancelFunc
	wg     sync.WaitGroup
	rnd    *rand.Rand // used by the loop goroutine only
	turn   int        // which fault comes next; used by the loop goroutine only

	mu         sync.Mutex
	shutdowns  []time.Duration // how long each SIGTERM took; guarded by mu
	down       time.Duration   // registryd was not serving this long; guarded by mu
	downSince  time.Time       // a restart in progress began; guarded by mu
	violations []violation     // guarded by mu
}

func (c *cluster) startFaults(set faultSet, restartAfter time.Duration) *injector {
	ctx, cancel := context.WithCancel(context.Background())
	in := &injector{c: c, set: set, cancel: cancel, rnd: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))}
	if set.gcStorm {
		in.wg.Add(1)
		go func() {
			defer in.wg.Done()
			for ctx.Err() == nil {
				// A storm: a burst of forced collections, then a pause.
				c.fault(testWorker, "gc storm")
				for range 10 {
					c.collect()
				}
				sleep(ctx, 300*time.Millisecond)
			}
		}()
	}
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		// The first restart comes after restartAfter, the next ones
		// every two minutes at most (a soak).
		restartAt := time.Now().Add(restartAfter)
		for ctx.Err() == nil {
			sleep(ctx, time.Duration(200+in.rnd.IntN(400))*time.Millisecond)
			if ctx.Err() != nil {
				return
			}
			if set.restart && time.Now().After(restartAt) {
				in.restart()
				restartAt = time.Now().Add(max(restartAfter, 2*time.Minute))
				continue
			}
			in.one(ctx)
		}
	}()
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		in.revokeStopReaders(ctx)
	}()
	return in
}

// stop ends the injection and waits for the faults in progress.
func (in *injector) stop() {
	in.cancel()
	in.wg.Wait()
}

// downtime returns how long registryd was not serving, restarting.
func (in *injector) downtime() time.Duration {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.downSince.IsZero() {
		return in.down + time.Since(in.downSince)
	}
	return in.down
}

func (in *injector) violate(kind, msg string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.violations = append(in.violations, violation{kind, msg})
}

func (in *injector) restart() {
	start := time.Now()
	in.mu.Lock()
	in.downSince = start
	in.mu.Unlock()
	took, clean := in.c.restart()
	in.mu.Lock()
	in.down += time.Since(start)
	in.downSince = time.Time{}
	in.shutdowns = append(in.shutdowns, took)
	in.mu.Unlock()
	// DESIGN: shutdown revokes every lease (cause SHUTDOWN) and waits for
	// calls in flight; a handler that cannot end (a client that stopped
	// reading) must not hold it for the whole timeout.
	if !clean || took >= shutdownTimeout {
		in.violate(kindShutdown, "registryd took "+took.Round(time.Millisecond).String()+" to exit after SIGTERM (--shutdown-timeout "+shutdownTimeout.String()+")")
	}
}

// one injects one fault, chosen at random among those of the set.
func (in *injector) one(ctx context.Context) {
	c := in.c
	c.mu.Lock()
	var ws []*worker
	for _, w := range c.workers {
		select {
		case <-w.exited:
		default:
			if w.mode == "mixed" && !w.frozen.Load() {
				ws = append(ws, w)
			}
		}
	}
	c.mu.Unlock()
	var choices []func()
	if len(ws) > 0 {
		w := ws[in.rnd.IntN(len(ws))]
		if in.set.kill {
			choices = append(choices, func() {
				c.killWorker(w, "mid-stream")
				c.startWorker("mixed")
			})
		}
		if in.set.freeze {
			choices = append(choices, func() {
				d := time.Duration(300+in.rnd.IntN(2700)) * time.Millisecond
				c.fault(w.id, "freeze "+d.String())
				w.frozen.Store(true)
				w.cmd.Process.Signal(syscall.SIGSTOP)
				kill := in.rnd.IntN(4) == 0 // drawn here: in.rnd is the injector goroutine's alone
				in.wg.Add(1)
				go func() {
					defer in.wg.Done()
					sleep(ctx, d)
					if kill {
						c.killWorker(w, "while frozen")
						c.startWorker("mixed")
						return
					}
					w.cmd.Process.Signal(syscall.SIGCONT)
					w.frozen.Store(false)
				}()
			})
		}
		if in.set.network {
			choices = append(choices,
				func() { c.fault(w.id, "cut"); w.proxy.Drop() },
				func() {
					d := time.Duration(200+in.rnd.IntN(1300)) * time.Millisecond
					c.fault(w.id, "stall "+d.String())
					w.proxy.SetStall(true)
					sleep(ctx, d)
					w.proxy.SetStall(false)
				},
				func() {
					// Longer than keepalive: registryd drops the
					// connection, and the proxy then cuts the client's.
					d := keepaliveTime + keepaliveTimeout + time.Duration(in.rnd.IntN(2000))*time.Millisecond
					c.fault(w.id, "blackhole "+d.String())
					w.proxy.SetBlackhole(true)
					in.wg.Add(1)
					go func() {
						defer in.wg.Done()
						sleep(ctx, d)
						w.proxy.SetBlackhole(false)
					}()
				})
		}
	}
	if in.set.revokeDelete {
		choices = append(choices, in.revokeOne, in.deleteSome)
	}
	// In turn rather than at random, so that even a short run injects
	// every kind of fault.
	if len(choices) > 0 {
		in.turn++
		choices[in.turn%len(choices)]()
	}
}

// revokeOne revokes a random live lease of a mixed worker.
func (in *injector) revokeOne() {
	ctx, cancel := rpcCtx()
	defer cancel()
	resp, err := in.c.admin.ListLeases(ctx, &registryv1.ListLeasesRequest{})
	if err != nil || len(resp.GetLeases()) == 0 {
		return
	}
	l := resp.GetLeases()[in.rnd.IntN(len(resp.GetLeases()))]
	in.c.revoke(l.GetLeaseId(), "robustness: revoke racing pins")
}

func (c *cluster) revoke(id, reason string) error {
	ctx, cancel := rpcCtx()
	defer cancel()
	start := time.Now().UnixNano()
	_, err := c.admin.RevokeLease(ctx, &registryv1.RevokeLeaseRequest{LeaseId: id, Reason: reason})
	c.record(Record{Op: OpRevoke, Lease: id, Start: start, End: time.Now().UnixNano(), Result: ResultOf(err)})
	return err
}

// deleteSome deletes a few objects that leases may be pinning: most
// without force (a pinned one must refuse), one in five with force.
func (in *injector) deleteSome() {
	c := in.c
	for range 3 {
		h := c.randomHandle(in.rnd)
		if h == "" {
			return
		}
		force := in.rnd.IntN(5) == 0
		ctx, cancel := rpcCtx()
		start := time.Now().UnixNano()
		_, err := c.admin.DeleteObject(ctx, &registryv1.DeleteObjectRequest{Handle: h, Force: force})
		cancel()
		r := Record{Op: OpDelete, Handle: h, Start: start, End: time.Now().UnixNano(), Result: ResultOf(err)}
		if force {
			r.Detail = "force"
		}
		c.record(r)
	}
}

// revokeStopReaders revokes each lease whose client stopped reading, a
// moment after it did, and checks that the lease then ends promptly:
// revoke must be able to end a stream nobody reads.
func (in *injector) revokeStopReaders(ctx context.Context) {
	ch := in.c.hist.watchOp(OpStopRead)
	for {
		var r Record
		select {
		case <-ctx.Done():
			return
		case r = <-ch:
		}
		sleep(ctx, time.Second) // its sends fill the flow-control window
		if ctx.Err() != nil {
			return
		}
		// An error: gone already, or registryd restarting.
		revoked := in.c.revoke(r.Lease, "robustness: client stopped reading") == nil
		const within = 5 * time.Second
		gone := !revoked || poll(within, func() bool {
			cctx, cancel := rpcCtx()
			defer cancel()
			resp, err := in.c.admin.ListLeases(cctx, &registryv1.ListLeasesRequest{})
			if err != nil {
				return false
			}
			for _, l := range resp.GetLeases() {
				if l.GetLeaseId() == r.Lease {
					return false
				}
			}
			return true
		})
		if !gone {
			in.violate(kindStopRead, "lease "+r.Lease+" of a client that stopped reading is still listed "+within.String()+" after its revoke")
		}
		// A new one, so that there is always a client not reading,
		// across restarts too.
		if w := in.c.workerByID(r.Worker); w != nil && ctx.Err() == nil {
			in.c.killWorker(w, "stopped reading, revoked")
			in.c.startWorker(w.mode, w.flags...)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
