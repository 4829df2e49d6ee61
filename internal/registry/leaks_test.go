package registry

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// awaitGCTicks runs collections until the GC clock has moved n ticks past
// from, failing after a deadline: the clock ticks on the cleanup goroutine.
func awaitGCTicks(t testing.TB, r *Registry, from uint64, n uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for gcNow() < from+n {
		if time.Now().After(deadline) {
			t.Fatalf("the GC clock moved %d ticks in 20 s, want %d", gcNow()-from, n)
		}
		r.Collect()
	}
}

// bruteSuspectedLeaks counts suspected leaks by looking at every entry,
// as Stats must not. The caller keeps the registry quiet.
func (r *Registry) bruteSuspectedLeaks() int64 {
	n := uint64(r.cfg.LeakGCCycles)
	if n == 0 {
		return 0
	}
	now := gcNow()
	var count int64
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.RLock()
		s.m.each(func(e *entry) bool {
			if e.state == Weak && !e.has(flagCached) && uint64(uint32(now)-e.weakSince.Load()) >= n {
				count++
			}
			return true
		})
		s.mu.RUnlock()
	}
	return count
}

// TestEvictedObjectIsNotASuspectedLeak: an object the soft cache held while
// it was WEAK has had no chance to be collected; when the cache lets go
// its weak age starts, and it is a suspected leak only after LeakGCCycles
// more collections.
func TestEvictedObjectIsNotASuspectedLeak(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{LeakGCCycles: 2, SoftCacheBytes: 16})
	a, want := put(t, r, 16, 1, Meta{}, nil)
	mustResolve(t, r, a.Handle, want) // into the soft cache
	stray := r.payloadOf(a.ID)        // so that it outlives the cache and can be looked at
	awaitGCTicks(t, r, gcNow(), 3)
	if in, _, err := r.Inspect(a.ID); err != nil || !in.SoftCached || in.SuspectedLeak {
		t.Fatalf("while cached: %+v, %v; want cached, not suspected", in, err)
	}
	b, wantB := put(t, r, 16, 2, Meta{}, nil)
	mustResolve(t, r, b.Handle, wantB) // evicts a
	in, _, err := r.Inspect(a.ID)
	if err != nil || in.SoftCached || in.SuspectedLeak || in.WeakGCCycles != 0 {
		t.Fatalf("just evicted: cached %v, suspected %v, weak GC cycles %d, %v; want neither, 0 cycles", in.SoftCached, in.SuspectedLeak, in.WeakGCCycles, err)
	}
	if n := r.Stats().SuspectedLeaks; n != 0 {
		t.Fatalf("just evicted: Stats.SuspectedLeaks = %d, want 0", n)
	}
	if list, _, err := r.List(Filter{SuspectedLeaks: true}, "", 10); err != nil || len(list) != 0 {
		t.Fatalf("just evicted: List(suspected leaks) = %d objects, %v; want none", len(list), err)
	}
	// Its age restarted rather than stopped: still held by the stray
	// reference after two more collections, it is reported.
	awaitGCTicks(t, r, gcNow(), 2)
	if in, _, err := r.Inspect(a.ID); err != nil || !in.SuspectedLeak {
		t.Fatalf("two collections after the eviction: %+v, %v; want a suspected leak", in, err)
	}
	if n := r.Stats().SuspectedLeaks; n != 1 {
		t.Fatalf("two collections after the eviction: Stats.SuspectedLeaks = %d, want 1", n)
	}
	runtime.KeepAlive(stray)
}

// TestWeakAgeCountsAcrossTheClockWrap: an entry keeps its weak age's
// start as the GC clock's low 32 bits; an age that spans the clock's
// passing 2^32 is still counted from its start, and the leak book counts
// the entry out of the right tick when it is pinned.
func TestWeakAgeCountsAcrossTheClockWrap(t *testing.T) {
	noAutoGC(t)
	const wrap = 1 << 32
	if now := gcNow(); now < wrap-2 {
		gcTicks.CompareAndSwap(now, wrap-2) // forward only: no test runs beside this one
	}
	if now := gcNow(); now >= wrap {
		t.Skipf("the GC clock is at %d, past the wrap this test crosses", now)
	}
	r := newRegistry(t, Config{LeakGCCycles: 3})
	info, _ := put(t, r, 100, 1, Meta{}, nil)
	stray := r.payloadOf(info.ID) // kept: a leak to count
	start := gcNow()
	awaitGCTicks(t, r, start, 3)
	in, _, err := r.Inspect(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ran := int64(gcNow() - start); in.WeakGCCycles < 3 || in.WeakGCCycles > ran || !in.SuspectedLeak {
		t.Fatalf("across the wrap: %d weak GC cycles (the clock ran %d), suspected %v; want at least 3, a suspected leak", in.WeakGCCycles, ran, in.SuspectedLeak)
	}
	if n := r.Stats().SuspectedLeaks; n != 1 {
		t.Fatalf("across the wrap: Stats.SuspectedLeaks = %d, want 1", n)
	}
	by := newHolder(r)
	if _, _, err := r.Pin(info.ID, by); err != nil {
		t.Fatal(err)
	}
	if n := r.Stats().SuspectedLeaks; n != 0 {
		t.Fatalf("pinned: Stats.SuspectedLeaks = %d, want 0", n)
	}
	if _, _, err := r.Unpin(info.ID, by); err != nil {
		t.Fatal(err)
	}
	in, _, _ = r.Inspect(info.ID)
	if n := r.Stats().SuspectedLeaks; n != 0 || in.SuspectedLeak || in.WeakGCCycles != 0 {
		t.Fatalf("weak again: Stats.SuspectedLeaks = %d, suspected %v, %d weak GC cycles; want 0, its age restarted", n, in.SuspectedLeak, in.WeakGCCycles)
	}
	runtime.KeepAlive(stray)
}

// TestStatsDoesNotWaitForTheShards: a scrape reads counters kept as the
// states change; it neither scans the objects nor waits on a shard's lock
// held by a long change.
func TestStatsDoesNotWaitForTheShards(t *testing.T) {
	r := newRegistry(t, Config{LeakGCCycles: 3, SoftCacheBytes: 1 << 10})
	put(t, r, 16, 1, Meta{}, nil)
	for i := range r.shards {
		r.shards[i].mu.Lock()
	}
	done := make(chan Stats)
	go func() { done <- r.Stats() }()
	select {
	case st := <-done:
		if st.Puts != 1 {
			t.Errorf("Stats.Puts = %d, want 1", st.Puts)
		}
	case <-time.After(5 * time.Second):
		t.Error("Stats waited 5 s for the shard locks")
	}
	for i := range r.shards {
		r.shards[i].mu.Unlock()
	}
	if t.Failed() {
		<-done
	}
}

// TestSuspectedLeakCountIsExactAfterChurn: workers put, pin, unpin,
// resolve (through a small soft cache) and delete at random while the GC
// clock ticks; afterwards, with the registry quiet, Stats' count of
// suspected leaks is the count of a scan of every entry.
func TestSuspectedLeakCountIsExactAfterChurn(t *testing.T) {
	const workers = 4
	ops := 4000
	if testing.Short() {
		ops = 1000
	}
	r := newRegistry(t, Config{LeakGCCycles: 1, SoftCacheBytes: 64 * 20, WatchHistory: -1})
	var (
		mu     sync.Mutex
		strays []*payload // keep some weak objects alive: leaks
	)
	stopGC := make(chan struct{})
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		for {
			select {
			case <-stopGC:
				return
			default:
				runtime.GC()
				time.Sleep(time.Millisecond)
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			by := newHolder(r)
			var mine []Info
			pinned := map[handle.ID]bool{}
			for range ops {
				switch op := rng.IntN(10); {
				case op < 3 || len(mine) == 0:
					var holder *Holder
					if rng.IntN(2) == 0 {
						holder = &by
					}
					info, err := r.Put(newPayload(64, byte(op)), Meta{}, holder)
					if err != nil {
						t.Error(err)
						return
					}
					mine = append(mine, info)
					pinned[info.ID] = holder != nil
					if holder == nil && rng.IntN(3) == 0 {
						// The GC loop may have taken it already.
						if p := r.payloadOf(info.ID); p != nil {
							mu.Lock()
							strays = append(strays, p)
							mu.Unlock()
						}
					}
				case op < 5:
					in := mine[rng.IntN(len(mine))]
					if pinned[in.ID] {
						r.Unpin(in.ID, by)
					} else if _, _, err := r.Pin(in.ID, by); err == nil {
						pinned[in.ID] = true
						continue
					}
					pinned[in.ID] = false
				case op < 8:
					r.Resolve(mine[rng.IntN(len(mine))].Handle)
				case op < 9:
					i := rng.IntN(len(mine))
					r.Delete(mine[i].ID, true)
					mine = append(mine[:i], mine[i+1:]...)
				default:
					r.Stats()
				}
			}
		})
	}
	wg.Wait()
	close(stopGC)
	<-gcDone
	awaitCleanups(time.Now().Add(10 * time.Second))
	// Quiet now, but for the GC clock's last tick: compare at one tick.
	for range 100 {
		before := gcNow()
		got, want := r.Stats().SuspectedLeaks, r.bruteSuspectedLeaks()
		if gcNow() != before {
			continue
		}
		if got != want {
			t.Fatalf("Stats.SuspectedLeaks = %d, a scan counts %d", got, want)
		}
		if want == 0 {
			t.Fatal("the churn left no suspected leak: it tested nothing")
		}
		t.Logf("%d suspected leaks, %d strays", got, len(strays))
		runtime.KeepAlive(strays)
		return
	}
	t.Fatal("the GC clock never stood still")
}
