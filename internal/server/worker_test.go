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
// so jobs run in the order given and never two at once, on a worker
// started by the first and ended by stop.
func TestWorkerRunsJobsInOrderOneAtATime(t *testing.T) {
	w := newWorker()
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
	w.stop()
	waitFor(t, 5*time.Second, "the worker ended", func() bool { return goroutinesIn("server.(*worker).run") == 0 })
}

// TestIdleWorkerEnds: a worker ends once no job came for its linger, and
// the next job starts another.
func TestIdleWorkerEnds(t *testing.T) {
	w := newWorker()
	w.linger = 10 * time.Millisecond
	defer w.stop()
	for round := range 3 {
		ran := false
		w.do(func() { ran = true })
		if !ran {
			t.Fatalf("round %d: the job did not run", round)
		}
		waitFor(t, 5*time.Second, "the idle worker ended", func() bool { return goroutinesIn("server.(*worker).run") == 0 })
	}
}

// TestIdleLeaseStreamIsTwoGoroutines: once its requests are answered, an
// idle lease stream keeps its handler and its receiver, and neither a
// worker nor a sender: what serving and sending needed is gone with them.
func TestIdleLeaseStreamIsTwoGoroutines(t *testing.T) {
	e := newEnv(t, nil)
	lc := e.openLease(t, "idle", 0)
	h := e.put(t, "pinned", "")
	if r := lc.pin(h); len(r) != 1 || r[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_PINNED {
		t.Fatalf("pin: %v", r)
	}
	waitFor(t, 10*time.Second, "the worker and the sender ended", func() bool {
		return goroutinesIn("server.(*worker).run") == 0 && goroutinesIn("server.(*outbox[...]).run") == 0
	})
	if n := goroutinesIn("server.(*leaseServer).serve"); n != 1 {
		t.Errorf("%d handlers waiting in serve, want 1", n)
	}
	if n := goroutinesIn("server.(*inbox).run"); n != 1 {
		t.Errorf("%d receivers, want 1", n)
	}
	// And it still serves: a worker starts again for the next request.
	if r := lc.pin(h); len(r) != 1 || r[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_ALREADY_PINNED {
		t.Fatalf("pin again: %v", r)
	}
}
