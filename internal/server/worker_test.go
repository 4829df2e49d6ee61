package server

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// goroutinesIn counts the goroutines whose stack holds fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// TestWorkerRunsJobsInOrderOneAtATime: do returns once its job has run,
// so a stream's jobs run in the order given and never two at once.
func TestWorkerRunsJobsInOrderOneAtATime(t *testing.T) {
	var p pool
	w := newWorker(&p)
	var running atomic.Int32
	var order []int
	for i := range 100 {
		w.do(func() {
			if running.Add(1) != 1 {
				t.Error("two jobs at once")
			}
			order = append(order, i) // no lock: do waits for it
			running.Add(-1)
		})
	}
	for i, got := range order {
		if got != i {
			t.Fatalf("job %d ran as number %d", got, i)
		}
	}
}

// TestPoolRunsBlockedJobsBesideOthers: a job that blocks holds its
// goroutine only: the next runs on another.
func TestPoolRunsBlockedJobsBesideOthers(t *testing.T) {
	var p pool
	release := make(chan struct{})
	blocked := make(chan struct{})
	p.run(func() { close(blocked); <-release })
	<-blocked
	ran := make(chan struct{})
	p.run(func() { close(ran) })
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("a job waited for a blocked one")
	}
	close(release)
}

// TestIdlePoolEnds: with nothing to run, a pool has no goroutine.
func TestIdlePoolEnds(t *testing.T) {
	var p pool
	w := newWorker(&p)
	for range 10 {
		w.do(func() {})
	}
	waitFor(t, 10*time.Second, "the idle pool's goroutines ended", func() bool { return goroutinesIn("server.(*pool).serve") == 0 })
}

// TestIdleLeaseStreamIsTwoGoroutines: once its requests are answered, an
// idle lease stream keeps its handler and its receiver, nothing else:
// what serving and sending needed ran on the pool, gone once idle.
func TestIdleLeaseStreamIsTwoGoroutines(t *testing.T) {
	e := newEnv(t, nil)
	lc := e.openLease(t, "idle", 0)
	h := e.put(t, "pinned", "")
	if r := lc.pin(h); len(r) != 1 || r[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_PINNED {
		t.Fatalf("pin: %v", r)
	}
	waitFor(t, 10*time.Second, "the pool's goroutines ended", func() bool {
		return goroutinesIn("server.(*pool).serve") == 0 && goroutinesIn("server.(*outbox[...]).run") == 0
	})
	if n := goroutinesIn("server.(*leaseServer).serve"); n != 1 {
		t.Errorf("%d handlers waiting in serve, want 1", n)
	}
	if n := goroutinesIn("server.(*inbox).run"); n != 1 {
		t.Errorf("%d receivers, want 1", n)
	}
	// And it still serves: the pool starts again for the next request.
	if r := lc.pin(h); len(r) != 1 || r[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_ALREADY_PINNED {
		t.Fatalf("pin again: %v", r)
	}
}

// TestStoppedPoolEnds: a stopped pool's goroutines end, and a job given
// after still runs. (Other tests' pools may linger here meanwhile: the
// client package's leak check, right after Shutdown, is the one that
// shows a stopped pool does not wait out its linger.)
func TestStoppedPoolEnds(t *testing.T) {
	var p pool
	w := newWorker(&p)
	w.do(func() {})
	p.stop()
	waitFor(t, 10*time.Second, "the stopped pool's goroutines ended", func() bool { return goroutinesIn("server.(*pool).serve") == 0 })
	ran := false
	w.do(func() { ran = true })
	if !ran {
		t.Fatal("a job after stop did not run")
	}
}
