package registry

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// record is what a test remembers of an object it put: not the bytes,
// which would keep nothing but the bytes alive anyway, but their checksum.
type record struct {
	id   handle.ID
	h    string
	size int64
	sum  [sha256.Size]byte
}

// invariantRun is the shared state of one concurrency run.
type invariantRun struct {
	t *testing.T
	r *Registry

	failed atomic.Bool
	errs   atomic.Int32

	// objects is every object put, for anyone to resolve.
	objects struct {
		sync.RWMutex
		list []record
	}

	// pinned counts the pins that workers hold, per object. A worker adds
	// its pin after Pin (or Put) returned and takes it away, under the
	// write lock, before it calls Unpin; so while the read lock is held,
	// every object counted here is pinned for certain.
	pinned struct {
		sync.RWMutex
		n map[handle.ID]*pinCount
	}

	hits, misses atomic.Int64
	putBytes     atomic.Int64
	ops, checks  atomic.Int64
}

type pinCount struct {
	rec record
	n   int
}

func (run *invariantRun) fail(format string, args ...any) {
	run.failed.Store(true)
	if run.errs.Add(1) <= 10 {
		run.t.Errorf(format, args...)
	}
}

// check verifies one Resolve answer for rec: either exactly its bytes or,
// unless mustLive, ErrCollected.
func (run *invariantRun) check(who string, rec record, obj Object, err error, mustLive bool) {
	switch {
	case err == nil:
		run.hits.Add(1)
		if int64(len(obj.Data)) != rec.size || sha256.Sum256(obj.Data) != rec.sum {
			run.fail("%s: Resolve(%s) returned %d bytes other than the %d put", who, rec.h, len(obj.Data), rec.size)
		}
		if obj.Info.ID != rec.id || obj.Info.Size != rec.size {
			run.fail("%s: Resolve(%s) returned info of another object: %+v", who, rec.h, obj.Info)
		}
	case errors.Is(err, ErrCollected) && !mustLive:
		run.misses.Add(1)
	default:
		run.misses.Add(1)
		run.fail("%s: Resolve(%s) of an object a lease pins: %v", who, rec.h, err)
	}
}

func (run *invariantRun) addPin(rec record) {
	run.pinned.Lock()
	defer run.pinned.Unlock()
	pc := run.pinned.n[rec.id]
	if pc == nil {
		pc = &pinCount{rec: rec}
		run.pinned.n[rec.id] = pc
	}
	pc.n++
}

func (run *invariantRun) dropPin(id handle.ID) {
	run.pinned.Lock()
	defer run.pinned.Unlock()
	pc := run.pinned.n[id]
	pc.n--
	if pc.n == 0 {
		delete(run.pinned.n, id)
	}
}

// myPin is one object a worker pins, with the bit set of its holders that
// pin it.
type myPin struct {
	rec     record
	holders uint8
}

// heldPin is a pin a worker still holds when it stops.
type heldPin struct {
	rec record
	by  Holder
}

// worker puts, pins, unpins and resolves at random, and returns the pins
// it still holds.
func (run *invariantRun) worker(w int, seed uint64, deadline time.Time, maxOps, maxPinned int) []heldPin {
	const holdersEach = 3
	r := run.r
	rng := rand.New(rand.NewPCG(seed, uint64(w)))
	content := rand.NewChaCha8([32]byte{byte(w), byte(seed), byte(seed >> 8)})
	var holders [holdersEach]Holder
	for i := range holders {
		holders[i] = newHolder(r)
	}
	mine := make(map[handle.ID]*myPin)
	var mineIDs []handle.ID // for random choice; may hold stale IDs
	who := fmt.Sprintf("worker %d", w)

	pick := func() (record, bool) {
		run.objects.RLock()
		defer run.objects.RUnlock()
		if len(run.objects.list) == 0 {
			return record{}, false
		}
		// Favour recent objects: they are the ones still alive.
		n := len(run.objects.list)
		i := n - 1 - rng.IntN(min(n, 256))
		return run.objects.list[i], true
	}
	pickMine := func() *myPin {
		for len(mineIDs) > 0 {
			i := rng.IntN(len(mineIDs))
			if p := mine[mineIDs[i]]; p != nil {
				return p
			}
			mineIDs[i] = mineIDs[len(mineIDs)-1]
			mineIDs = mineIDs[:len(mineIDs)-1]
		}
		return nil
	}

	op := 0
	for ; op < maxOps && !run.failed.Load(); op++ {
		if op%64 == 0 && time.Now().After(deadline) {
			break
		}
		switch x := rng.IntN(100); {
		case x < 25: // Put, pinned or not
			size := 1 + rng.IntN(4096)
			data := make([]byte, size)
			content.Read(data)
			rec := record{size: int64(size), sum: sha256.Sum256(data)}
			var by *Holder
			hi := rng.IntN(holdersEach)
			if rng.IntN(2) == 0 && len(mine) < maxPinned {
				by = &holders[hi]
			}
			info, err := r.Put(data, Meta{ContentType: "application/octet-stream"}, by)
			if err != nil {
				run.fail("%s: Put: %v", who, err)
				continue
			}
			rec.id, rec.h = info.ID, info.Handle
			run.putBytes.Add(rec.size)
			if by != nil {
				if info.State != Pinned || info.Pins != 1 {
					run.fail("%s: Put with a holder = %v with %d pins", who, info.State, info.Pins)
				}
				run.addPin(rec)
				mine[rec.id] = &myPin{rec: rec, holders: 1 << hi}
				mineIDs = append(mineIDs, rec.id)
			}
			run.objects.Lock()
			run.objects.list = append(run.objects.list, rec)
			run.objects.Unlock()

		case x < 45: // Pin any object with one of my holders
			rec, ok := pick()
			if !ok {
				continue
			}
			hi := rng.IntN(holdersEach)
			p := mine[rec.id]
			if p == nil && len(mine) >= maxPinned {
				continue
			}
			info, already, err := r.Pin(rec.id, holders[hi])
			held := p != nil && p.holders&(1<<hi) != 0
			switch {
			case err == nil && already != held:
				run.fail("%s: Pin reported already=%v for a pin it holds=%v", who, already, held)
			case err == nil && info.State != Pinned:
				run.fail("%s: Pin answered state %v", who, info.State)
			case err == nil && !already:
				run.addPin(rec)
				if p == nil {
					p = &myPin{rec: rec}
					mine[rec.id] = p
					mineIDs = append(mineIDs, rec.id)
				}
				p.holders |= 1 << hi
			case err == nil:
			case errors.Is(err, ErrCollected):
				if p != nil {
					run.fail("%s: Pin of an object I pin: %v", who, err)
				}
				// Collection is final: a pin taken before it and held
				// now would mean a pinned object was collected.
				run.pinned.RLock()
				pc := run.pinned.n[rec.id]
				run.pinned.RUnlock()
				if pc != nil {
					run.fail("%s: Pin says collected, yet %d pins are held on %s", who, pc.n, rec.h)
				}
			default:
				run.fail("%s: Pin: %v", who, err)
			}

		case x < 65: // Unpin one of my pins
			p := pickMine()
			if p == nil {
				continue
			}
			hi := 0
			for p.holders&(1<<hi) == 0 {
				hi++
			}
			run.dropPin(p.rec.id)
			info, pinned, err := r.Unpin(p.rec.id, holders[hi])
			if err != nil || !pinned {
				run.fail("%s: Unpin of a pin I hold = %v, %v", who, pinned, err)
			} else if (info.Pins == 0) != (info.State == Weak) {
				run.fail("%s: Unpin left %v with %d pins", who, info.State, info.Pins)
			}
			p.holders &^= 1 << hi
			if p.holders == 0 {
				delete(mine, p.rec.id)
			}

		case x < 80: // Resolve and Stat one of my pinned objects
			p := pickMine()
			if p == nil {
				continue
			}
			obj, err := r.Resolve(p.rec.h)
			run.check(who, p.rec, obj, err, true)
			if info, err := r.Stat(p.rec.h); err != nil || info.State != Pinned || info.Pins < 1 {
				run.fail("%s: Stat of an object I pin = %v with %d pins, %v", who, info.State, info.Pins, err)
			}

		default: // Resolve any object
			rec, ok := pick()
			if !ok {
				continue
			}
			obj, err := r.Resolve(rec.h)
			run.check(who, rec, obj, err, mine[rec.id] != nil)
		}
	}
	run.ops.Add(int64(op))
	var held []heldPin
	for _, p := range mine {
		for hi := range holders {
			if p.holders&(1<<hi) != 0 {
				held = append(held, heldPin{p.rec, holders[hi]})
			}
		}
	}
	return held
}

// checker resolves objects that some worker pins, holding the read lock
// so that none of those pins can go meanwhile.
func (run *invariantRun) checker(deadline time.Time, maxRounds int) {
	for round := 0; round < maxRounds && !run.failed.Load() && time.Now().Before(deadline); round++ {
		run.pinned.RLock()
		n := 0
		for _, pc := range run.pinned.n { // map order: a random sample
			obj, err := run.r.Resolve(pc.rec.h)
			run.check("checker", pc.rec, obj, err, true)
			run.checks.Add(1)
			if n++; n == 4 {
				break
			}
		}
		run.pinned.RUnlock()
		runtime.Gosched() // let the workers change what is pinned
	}
}

// eventChecker reads every event and checks that sequence numbers go up
// by one and that no object is collected unless its last state was WEAK.
// It returns how many COLLECTED events it saw.
func (run *invariantRun) eventChecker(sub *Subscription, stop <-chan struct{}) (collected int) {
	state := make(map[handle.ID]State)
	var last uint64
	handleEvent := func(ev Event) {
		if last != 0 && ev.Seq != last+1 {
			run.fail("event seq %d after %d", ev.Seq, last)
		}
		last = ev.Seq
		prev, known := state[ev.ID]
		switch ev.Kind {
		case EventCreated:
			if known {
				run.fail("second CREATED for %s", ev.Handle)
			}
		case EventCollected:
			if prev != Weak {
				run.fail("%s collected while %v", ev.Handle, prev)
			}
			collected++
		default:
			if !known {
				run.fail("%v event for %s before CREATED", ev.Kind, ev.Handle)
			}
		}
		if ev.Kind == EventPinned && ev.State != Pinned || ev.Kind == EventWeak && ev.State != Weak {
			run.fail("%v event with state %v", ev.Kind, ev.State)
		}
		if ev.State == Collected {
			delete(state, ev.ID)
		} else {
			state[ev.ID] = ev.State
		}
	}
	for {
		select {
		case ev := <-sub.Events():
			handleEvent(ev)
		case <-sub.Done():
			for len(sub.Events()) > 0 {
				handleEvent(<-sub.Events())
			}
			return collected
		case <-stop:
			for len(sub.Events()) > 0 {
				handleEvent(<-sub.Events())
			}
			return collected
		}
	}
}

// watcher opens and closes watches on recent objects, checking that the
// first event for each is CURRENT.
func (run *invariantRun) watcher(seed uint64, deadline time.Time, maxRounds int) {
	rng := rand.New(rand.NewPCG(seed, 99))
	for round := 0; round < maxRounds && !run.failed.Load() && time.Now().Before(deadline); round++ {
		run.objects.RLock()
		var ids []handle.ID
		for range 4 {
			if n := len(run.objects.list); n > 0 {
				ids = append(ids, run.objects.list[n-1-rng.IntN(min(n, 64))].id)
			}
		}
		run.objects.RUnlock()
		sub, err := run.r.Watch(ids)
		if err != nil {
			run.fail("Watch: %v", err)
			return
		}
		seen := make(map[handle.ID]bool)
		for len(sub.Events()) > 0 {
			ev := <-sub.Events()
			if !seen[ev.ID] && ev.Kind != EventCurrent {
				run.fail("first watch event for %s is %v, want CURRENT", ev.Handle, ev.Kind)
			}
			seen[ev.ID] = true
		}
		sub.Close()
	}
}

// TestPinnedObjectsAreNeverCollectedUnderConcurrency runs workers that put,
// pin, unpin and resolve at random against a collector that never stops,
// and checks invariants 1, 2 and 4 of the design: a pinned object is never
// collected or altered; Resolve returns only the bytes put under the
// handle; and once every pin is gone, everything is collected and the
// registry holds nothing.
func TestPinnedObjectsAreNeverCollectedUnderConcurrency(t *testing.T) {
	const (
		workers   = 8
		maxOps    = 20000 // per worker
		maxPinned = 32    // objects per worker: bounds pinned memory
		duration  = 2 * time.Second
	)
	if testing.Short() {
		t.Skip("a 2 s load test")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	// Every subscription gets a buffer this size: enough for the WatchAll
	// reader to keep up, small enough for the watcher's many Watch calls.
	r := newRegistry(t, Config{WatchBuffer: 1 << 12})
	run := &invariantRun{t: t, r: r}
	run.pinned.n = make(map[handle.ID]*pinCount)
	deadline := time.Now().Add(duration)

	all, err := r.WatchAll()
	if err != nil {
		t.Fatal(err)
	}
	stopEvents := make(chan struct{})
	eventsDone := make(chan int)
	go func() { eventsDone <- run.eventChecker(all, stopEvents) }()

	var wg sync.WaitGroup
	left := make([][]heldPin, workers)
	for w := range workers {
		wg.Go(func() { left[w] = run.worker(w, seed, deadline, maxOps, maxPinned) })
	}
	wg.Go(func() { run.checker(deadline, 1_000_000) })
	wg.Go(func() { run.watcher(seed, deadline, 20_000) })
	collects := 0
	wg.Go(func() {
		for ; collects < 10_000 && !run.failed.Load() && time.Now().Before(deadline); collects++ {
			r.Collect()
		}
	})
	wg.Wait()
	t.Logf("%d worker ops, %d objects put (%d bytes), %d checker resolves, %d hits, %d misses, %d Collect calls",
		run.ops.Load(), len(run.objects.list), run.putBytes.Load(), run.checks.Load(), run.hits.Load(), run.misses.Load(), collects)
	if t.Failed() {
		close(stopEvents)
		<-eventsDone
		return
	}
	if len(run.objects.list) < workers {
		t.Fatalf("only %d objects put: the run tested nothing", len(run.objects.list))
	}

	// Release every pin; then everything must go.
	for _, held := range left {
		for _, p := range held {
			run.dropPin(p.rec.id)
			if _, pinned, err := r.Unpin(p.rec.id, p.by); err != nil || !pinned {
				t.Fatalf("final Unpin of a pin held = %v, %v", pinned, err)
			}
		}
	}
	if n := len(run.pinned.n); n != 0 {
		t.Fatalf("bookkeeping: %d objects still counted as pinned", n)
	}
	if n := r.counters.pins.Load(); n != 0 {
		t.Fatalf("the registry counts %d pins after every holder unpinned", n)
	}
	total := int64(len(run.objects.list))
	waitFor(t, 10*time.Second, "objects still alive after every pin was released", func() bool {
		r.Collect()
		return r.counters.collected.Load() == total
	})
	for _, rec := range run.objects.list {
		if _, err := r.Resolve(rec.h); !errors.Is(err, ErrCollected) {
			t.Fatalf("Resolve(%s) after everything was released: %v; want ErrCollected", rec.h, err)
		}
	}
	st := r.Stats()
	if st.Puts != total || st.Collected != total || st.CollectedBytes != run.putBytes.Load() {
		t.Errorf("Stats = puts %d, collected %d (%d bytes); want %d, %d (%d)", st.Puts, st.Collected, st.CollectedBytes, total, total, run.putBytes.Load())
	}
	if st.ResolveHits != run.hits.Load() {
		t.Errorf("ResolveHits = %d, want %d", st.ResolveHits, run.hits.Load())
	}
	if got, want := st.ResolveMisses[MissCollected], run.misses.Load()+total; got != want {
		t.Errorf("collected misses = %d, want %d", got, want)
	}
	close(stopEvents)
	if collected := <-eventsDone; all.Err() == nil && collected != int(total) {
		t.Errorf("WatchAll saw %d COLLECTED events, want %d", collected, total)
	} else if all.Err() != nil {
		t.Logf("the WatchAll reader fell behind (%v): its checks covered part of the run", all.Err())
	}
	all.Close()
	assertHoldsNothing(t, r)
}
