package registry

import (
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// checkSoftCache checks the cache's own bookkeeping against its list: the
// byte count is the sum of the sizes it holds and within the budget, and
// every entry it holds says so and has not been deleted.
func checkSoftCache(t testing.TB, r *Registry) {
	t.Helper()
	c := r.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum int64
	for el := c.lru.Front(); el != nil; el = el.Next() {
		it := el.Value.(*cached)
		sum += it.e.size
		if c.elems[it.e] != el || !it.e.has(flagCached) {
			t.Fatalf("cached %x: element %p (in the list %p), cached %v", it.e.id, c.elems[it.e], el, it.e.has(flagCached))
		}
		if it.e.has(flagRemoved) {
			t.Fatalf("cache holds %x, which was deleted", it.e.id)
		}
	}
	if sum != c.bytes || c.bytes > c.max {
		t.Fatalf("cache counts %d bytes, holds %d, budget %d", c.bytes, sum, c.max)
	}
}

// TestSoftCacheKeepsTheMostRecentlyResolved puts objects pinned by a
// holder (so that nothing collects them early), resolves them in an order,
// then unpins them all and forces a collection: exactly the most recently
// resolved objects that fit the budget survive, the rest are collected,
// and the budget is never exceeded on the way.
func TestSoftCacheKeepsTheMostRecentlyResolved(t *testing.T) {
	const unit = 100
	sizes := func(n int) []int64 {
		s := make([]int64, n)
		for i := range s {
			s[i] = unit
		}
		return s
	}
	seq := func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = i
		}
		return s
	}
	tests := []struct {
		name    string
		budget  int64
		sizes   []int64 // of objects 0, 1…
		resolve []int   // objects, in order
		// After the resolves:
		wantCached    []int
		wantHits      int64
		wantEvictions int64
	}{
		{
			name: "30 resolved, room for 10", budget: 10 * unit, sizes: sizes(30), resolve: seq(30),
			wantCached: seq(30)[20:], wantEvictions: 20,
		},
		{
			name: "re-resolving moves an object to the front", budget: 3 * unit, sizes: sizes(4), resolve: []int{0, 1, 2, 0, 3},
			wantCached: []int{0, 2, 3}, wantHits: 1, wantEvictions: 1,
		},
		{
			name: "fewer than the budget: all stay", budget: 10 * unit, sizes: sizes(4), resolve: []int{3, 2, 1, 0, 1},
			wantCached: []int{0, 1, 2, 3}, wantHits: 1,
		},
		{
			name: "larger than the budget: never cached, evicts nothing", budget: 3 * unit, sizes: []int64{unit, unit, 3*unit + 1},
			resolve: []int{0, 1, 2, 2}, wantCached: []int{0, 1},
		},
		{
			name: "exactly the budget: evicts everything else", budget: 3 * unit, sizes: []int64{unit, unit, 3 * unit},
			resolve: []int{0, 1, 2}, wantCached: []int{2}, wantEvictions: 2,
		},
		{
			name: "a large object evicts as many as it needs, oldest first", budget: 4 * unit, sizes: []int64{unit, unit, unit, unit, 2 * unit},
			resolve: []int{0, 1, 2, 3, 1, 4}, wantCached: []int{1, 3, 4}, wantHits: 1, wantEvictions: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noAutoGC(t)
			r := newRegistry(t, Config{SoftCacheBytes: tt.budget})
			by := newHolder(r)
			infos := make([]Info, len(tt.sizes))
			wants := make([][]byte, len(tt.sizes))
			for i, n := range tt.sizes {
				infos[i], wants[i] = put(t, r, int(n), byte(i), Meta{}, &by)
				if infos[i].SoftCached {
					t.Fatalf("object %d is soft-cached before any resolve", i)
				}
			}
			if st := r.Stats().SoftCache; st != (SoftCacheStats{MaxBytes: tt.budget}) {
				t.Fatalf("SoftCache before any resolve = %+v", st)
			}
			for _, i := range tt.resolve {
				obj := mustResolve(t, r, infos[i].Handle, wants[i])
				if fits := tt.sizes[i] <= tt.budget; obj.Info.SoftCached != fits {
					t.Fatalf("Resolve of object %d (%d bytes): SoftCached %v, want %v", i, tt.sizes[i], obj.Info.SoftCached, fits)
				}
				if st := r.Stats().SoftCache; st.Bytes > st.MaxBytes || st.Bytes < 0 {
					t.Fatalf("after resolving object %d the cache holds %d bytes, budget %d", i, st.Bytes, st.MaxBytes)
				}
				checkSoftCache(t, r)
			}
			cached := make([]bool, len(tt.sizes))
			want := SoftCacheStats{MaxBytes: tt.budget, Hits: tt.wantHits, Evictions: tt.wantEvictions}
			for _, i := range tt.wantCached {
				cached[i] = true
				want.Objects++
				want.Bytes += tt.sizes[i]
			}
			if st := r.Stats().SoftCache; st != want {
				t.Fatalf("SoftCache = %+v, want %+v", st, want)
			}
			for i, info := range infos {
				if got, err := r.Stat(info.Handle); err != nil || got.SoftCached != cached[i] {
					t.Fatalf("Stat of object %d: SoftCached %v, %v; want %v", i, got.SoftCached, err, cached[i])
				}
			}

			// Unpinned, only the cache holds them: it decides who survives.
			var wantFreed, wantFreedBytes int64
			for i, info := range infos {
				if got := mustUnpin(t, r, info.ID, by); got.State != Weak || got.SoftCached != cached[i] {
					t.Fatalf("Unpin of object %d = %v, SoftCached %v; want WEAK, %v", i, got.State, got.SoftCached, cached[i])
				}
				if !cached[i] {
					wantFreed++
					wantFreedBytes += tt.sizes[i]
				}
			}
			if rep := r.Collect(); rep.Objects != wantFreed || rep.Bytes != wantFreedBytes {
				t.Fatalf("Collect freed %d objects of %d bytes, want %d of %d", rep.Objects, rep.Bytes, wantFreed, wantFreedBytes)
			}
			for i, info := range infos {
				if !cached[i] {
					wantGone(t, r, info.Handle, ErrCollected)
					continue
				}
				obj := mustResolve(t, r, info.Handle, wants[i])
				if obj.Info.State != Weak || !obj.Info.SoftCached {
					t.Fatalf("surviving object %d: %v, SoftCached %v; want WEAK, true", i, obj.Info.State, obj.Info.SoftCached)
				}
			}
			// Those resolves were hits; a second collection frees nothing.
			want.Hits += int64(len(tt.wantCached))
			if st := r.Stats().SoftCache; st != want {
				t.Fatalf("SoftCache after the survivors' resolves = %+v, want %+v", st, want)
			}
			if rep := r.Collect(); rep.Objects != 0 {
				t.Fatalf("second Collect freed %d objects, want 0", rep.Objects)
			}
			// Deleting the survivors empties the cache: not evictions.
			for _, i := range tt.wantCached {
				if _, _, err := r.Delete(infos[i].ID, false); err != nil {
					t.Fatal(err)
				}
			}
			want.Objects, want.Bytes = 0, 0
			if st := r.Stats().SoftCache; st != want {
				t.Fatalf("SoftCache after deleting the survivors = %+v, want %+v", st, want)
			}
			checkSoftCache(t, r)
			assertHoldsNothing(t, r)
		})
	}
}

// TestDeletedObjectLeavesTheSoftCache: a deleted object's bytes leave the
// cache at once, it is not taken in again, and its room goes to others.
func TestDeletedObjectLeavesTheSoftCache(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{SoftCacheBytes: 250})
	by := newHolder(r)
	a, wantA := put(t, r, 100, 1, Meta{}, &by)
	b, wantB := put(t, r, 100, 2, Meta{}, &by)
	c, wantC := put(t, r, 100, 3, Meta{}, &by)
	mustResolve(t, r, a.Handle, wantA)
	mustResolve(t, r, b.Handle, wantB)
	if st := r.Stats().SoftCache; st.Bytes != 200 || st.Objects != 2 {
		t.Fatalf("SoftCache = %+v, want 2 objects of 200 bytes", st)
	}
	if _, pins, err := r.Delete(a.ID, true); err != nil || len(pins) != 1 {
		t.Fatalf("Delete = %d pins, %v", len(pins), err)
	}
	if st := r.Stats().SoftCache; st != (SoftCacheStats{MaxBytes: 250, Bytes: 100, Objects: 1}) {
		t.Fatalf("SoftCache after the delete = %+v, want b's 100 bytes only", st)
	}
	wantGone(t, r, a.Handle, ErrDeleted)
	// c fits beside b now: no eviction.
	mustResolve(t, r, c.Handle, wantC)
	if st := r.Stats().SoftCache; st != (SoftCacheStats{MaxBytes: 250, Bytes: 200, Objects: 2}) {
		t.Fatalf("SoftCache = %+v, want b and c, no eviction", st)
	}
	checkSoftCache(t, r)
	for _, info := range []Info{b, c} {
		if _, _, err := r.Delete(info.ID, true); err != nil {
			t.Fatal(err)
		}
	}
	if st := r.Stats().SoftCache; st.Bytes != 0 || st.Objects != 0 {
		t.Fatalf("SoftCache after deleting everything = %+v", st)
	}
	assertHoldsNothing(t, r)
}

// TestSoftCacheOffHoldsNothing: with no budget, resolves cache nothing
// and the figures are zero.
func TestSoftCacheOffHoldsNothing(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	info, want := put(t, r, 100, 1, Meta{}, nil)
	if obj := mustResolve(t, r, info.Handle, want); obj.Info.SoftCached {
		t.Fatal("resolved object is soft-cached with the cache off")
	}
	if st := r.Stats().SoftCache; st != (SoftCacheStats{}) {
		t.Fatalf("SoftCache = %+v, want zero", st)
	}
	if rep := r.Collect(); rep.Objects != 1 {
		t.Fatalf("Collect freed %d objects, want 1", rep.Objects)
	}
}

// TestSoftCacheBudgetHoldsUnderConcurrency resolves, puts, pins and
// deletes from many goroutines with a small budget while a checker reads
// the figures: the budget is never exceeded, the cache's books balance,
// and what it holds is never collected.
func TestSoftCacheBudgetHoldsUnderConcurrency(t *testing.T) {
	const (
		budget  = 1000
		workers = 8
		ops     = 1500
	)
	r := newRegistry(t, Config{SoftCacheBytes: budget})
	var (
		mu      sync.Mutex
		handles []string // every object put, gone or not
	)
	pick := func(rng *rand.Rand) string {
		mu.Lock()
		defer mu.Unlock()
		if len(handles) == 0 {
			return ""
		}
		return handles[rng.IntN(len(handles))]
	}
	var (
		wg       sync.WaitGroup
		stop     = make(chan struct{})
		failures atomic.Int64
		maxSeen  atomic.Int64
	)
	check := func() {
		st := r.Stats().SoftCache
		if st.Bytes > st.MaxBytes || st.Bytes < 0 || st.Objects < 0 || (st.Objects == 0) != (st.Bytes == 0) {
			failures.Add(1)
			t.Errorf("SoftCache = %+v", st)
		}
		if st.Bytes > maxSeen.Load() {
			maxSeen.Store(st.Bytes)
		}
	}
	checkerDone := make(chan struct{})
	go func() {
		defer close(checkerDone)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				check()
			}
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			by := newHolder(r)
			for i := 0; i < ops && failures.Load() == 0; i++ {
				switch op := rng.IntN(10); {
				case op < 2:
					info, err := r.Put(newPayload(1+rng.IntN(300), byte(i)), Meta{}, nil)
					if err != nil {
						t.Errorf("Put: %v", err)
						return
					}
					mu.Lock()
					handles = append(handles, info.Handle)
					mu.Unlock()
				case op < 8:
					h := pick(rng)
					if h == "" {
						continue
					}
					obj, err := r.Resolve(h)
					if err != nil && !errors.Is(err, ErrCollected) && !errors.Is(err, ErrDeleted) {
						t.Errorf("Resolve: %v", err)
					}
					if err == nil && int64(len(obj.Data)) != obj.Info.Size {
						t.Errorf("Resolve returned %d bytes of %d", len(obj.Data), obj.Info.Size)
					}
				case op < 9:
					id, err := r.Parse(pick(rng))
					if err != nil {
						continue
					}
					if _, already, err := r.Pin(id, by); err == nil && !already {
						if _, pinned, err := r.Unpin(id, by); !pinned && err == nil {
							t.Errorf("Unpin after Pin found no pin")
						}
					}
				default:
					id, err := r.Parse(pick(rng))
					if err != nil {
						continue
					}
					r.Delete(id, true)
				}
				if i%100 == 0 {
					runtime.GC()
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-checkerDone
	check()
	checkSoftCache(t, r)

	// What the cache holds survives a forced collection and resolves.
	r.Collect()
	var held []handle.ID
	r.cache.mu.Lock()
	for el := r.cache.lru.Front(); el != nil; el = el.Next() {
		held = append(held, el.Value.(*cached).e.id)
	}
	r.cache.mu.Unlock()
	for _, id := range held {
		if _, err := r.StatID(id); err != nil {
			t.Fatalf("cached object %x: %v", id, err)
		}
	}
	if st := r.Stats().SoftCache; st.Objects != int64(len(held)) || st.Bytes > budget {
		t.Fatalf("SoftCache = %+v, holding %d objects", st, len(held))
	}
	t.Logf("%d objects put, the cache held at most %d of %d bytes", len(handles), maxSeen.Load(), budget)
}
