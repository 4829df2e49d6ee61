package registry

import (
	"flag"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/weakref/registry/internal/handle"
)

// weakObjects is how many unpinned objects TestObserversKeepNoWeakObjectAlive
// collects: the figure is 200000
// (go test -run TestObserversKeepNoWeakObjectAlive -weak-objects=200000).
var weakObjects = flag.Int("weak-objects", 0, "unpinned objects the observer test collects (0: 20000, 2000 with -short or -race)")

func weakObjectCount() int {
	switch {
	case *weakObjects > 0:
		return *weakObjects
	case testing.Short() || raceEnabled:
		return 2000
	}
	return 20000
}

// TestObserversKeepNoWeakObjectAlive: Stats, List pages and Inspect and Stat
// of other objects, running all through a forced collection, keep none of
// the unpinned objects alive. A scan that calls weak.Pointer.Value during
// the collector's mark phase makes each object it reaches survive that
// cycle; invariant 2 (nothing pins it: the next collection takes it) must
// hold while someone watches.
func TestObserversKeepNoWeakObjectAlive(t *testing.T) {
	n := weakObjectCount()
	for _, tt := range []struct {
		name    string
		gcOff   bool
		collect bool // Registry.Collect rather than runtime.GC
	}{
		{"runtime.GC", false, false},
		{"runtime.GC with GOGC=off", true, false},
		{"Collect", false, true},
		{"Collect with GOGC=off", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.gcOff {
				noAutoGC(t)
			}
			r := newRegistry(t, Config{LeakGCCycles: 1, WatchHistory: -1})
			by := newHolder(r)
			var others []Info // pinned: what Inspect and Stat look at
			for i := range 16 {
				info, _ := put(t, r, 64, byte(i), Meta{Labels: map[string]string{"k": "v"}}, &by)
				others = append(others, info)
			}
			ids := make([]handle.ID, n)
			for i := range ids {
				info, err := r.Put(newPayload(64, byte(i)), Meta{Labels: map[string]string{"k": "v"}}, nil)
				if err != nil {
					t.Fatal(err)
				}
				ids[i] = info.ID
			}

			stop := make(chan struct{})
			var wg sync.WaitGroup
			var rounds atomic.Int64
			observe := func(f func()) {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						f()
						rounds.Add(1)
						// A scraper waits on its network between scrapes;
						// a loop that never yields would starve the
						// runtime's cleanup goroutine, whose reaps
						// Collect waits for.
						runtime.Gosched()
					}
				})
			}
			observe(func() { r.Stats() })
			for _, f := range []Filter{{}, {State: Weak}, {Labels: map[string]string{"k": "v"}}, {SuspectedLeaks: true}} {
				observe(func() {
					token := ""
					for range n/100 + 2 {
						_, next, err := r.List(f, token, 100)
						if err != nil || next == "" {
							return
						}
						token = next
						runtime.Gosched() // a page is a call of its own
					}
				})
			}
			observe(func() {
				for _, o := range others {
					r.Inspect(o.ID)
					r.StatID(o.ID)
				}
			})
			for rounds.Load() < 8 {
				runtime.Gosched() // the observers are under way
			}
			if tt.collect {
				r.Collect()
			} else {
				runtime.GC()
			}
			close(stop)
			wg.Wait()

			alive := r.countAlive(ids)
			if alive != 0 {
				t.Errorf("%d of %d unpinned objects survived a forced collection while observed (%.0f%%)", alive, n, 100*float64(alive)/float64(n))
			}
			if tt.collect {
				if st := r.Stats(); st.Objects[Weak] != 0 {
					t.Errorf("after Collect, Stats counts %d WEAK objects, want 0", st.Objects[Weak])
				}
			}
			runtime.KeepAlive(others)
		})
	}
}

// countAlive counts the objects of ids whose payload is still reachable.
// It calls Value, as no registry scan may: only a test, with the collector
// idle, may look.
func (r *Registry) countAlive(ids []handle.ID) int {
	alive := 0
	for _, id := range ids {
		s := r.shard(id)
		s.mu.RLock()
		if e := s.m.get(id); e != nil && e.value() != nil {
			alive++
		}
		s.mu.RUnlock()
	}
	return alive
}
