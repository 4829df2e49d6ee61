package registry

import (
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// forcedGCs reads how many collections the process has forced so far.
func forcedGCs(t *testing.T) uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Skip("this runtime does not count forced collections")
	}
	return s[0].Value.Uint64()
}

// TestConcurrentCollectsShareOneCollection: callers who ask while a
// forced collection runs or waits share the next one, which starts no
// sooner than CollectMinInterval after the last: a flood of Collect calls
// cannot stop the process more often than that.
func TestConcurrentCollectsShareOneCollection(t *testing.T) {
	const interval = 200 * time.Millisecond
	r := newRegistry(t, Config{CollectMinInterval: interval})
	r.Collect() // the spacing counts from here
	before := forcedGCs(t)
	start := time.Now()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() { r.Collect() })
	}
	wg.Wait()
	if n := forcedGCs(t) - before; n != 1 {
		t.Errorf("16 concurrent Collect calls forced %d collections, want 1 shared", n)
	}
	if took := time.Since(start); took < interval/2 {
		t.Errorf("the shared collection came %v after the last one, want about %v", took, interval)
	}
}

// TestCollectStartsAfterItsCall: an object that became WEAK just before
// its caller asked is taken by the collection that caller gets, even
// while another caller's collection was running: no caller is handed a
// collection that started before it asked.
func TestCollectStartsAfterItsCall(t *testing.T) {
	r := newRegistry(t, Config{})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() { // someone else collecting all the time
		for {
			select {
			case <-stop:
				return
			default:
				r.Collect()
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	for i := range 20 {
		info, err := r.Put(newPayload(64, byte(i)), Meta{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Collect()
		if _, err := r.Stat(info.Handle); err == nil {
			t.Fatalf("round %d: an object WEAK before Collect was asked survived the collection it got", i)
		}
	}
}

// TestCollectAgreesWithObserversRunning: a forced collection reaps every
// WEAK object, and only those, while Stats, a List pager, an event
// watcher and a metrics observer run beside it; once it returns, all of
// them agree on what it took. Observers never call a weak pointer's
// Value, so none of them may keep an object alive through the cycle.
func TestCollectAgreesWithObserversRunning(t *testing.T) {
	const weakN, pinnedN = 20_000, 500
	noAutoGC(t)               // so that Collect, not the runtime, takes them
	var observed atomic.Int64 // COLLECTED events, as a metrics pipeline counts them
	r := newRegistry(t, Config{
		WatchBuffer: 2 * (weakN + pinnedN),
		Observe: func(ev Event) {
			if ev.Kind == EventCollected {
				observed.Add(1)
			}
		},
	})
	by := newHolder(r)
	data := newPayload(100, 1)
	weakIDs := make(map[handle.ID]bool, weakN)
	for i := range weakN + pinnedN {
		holder := &by
		if i%(weakN/pinnedN+1) != 0 {
			holder = nil
		}
		info, err := r.Put(data, Meta{}, holder)
		if err != nil {
			t.Fatal(err)
		}
		if holder == nil {
			weakIDs[info.ID] = false
		}
	}
	pinned := int64(weakN + pinnedN - len(weakIDs))
	sub, err := r.WatchAll(EventCollected)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // a scraper
		for {
			select {
			case <-stop:
				return
			default:
				r.Stats()
			}
		}
	})
	wg.Go(func() { // a pager, round and round
		token := ""
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, next, err := r.List(Filter{}, token, 100)
			if err != nil {
				t.Error(err)
				return
			}
			token = next
		}
	})
	before := r.Stats()
	rep := r.Collect()
	close(stop)
	wg.Wait()

	st := r.Stats()
	if rep.Objects != int64(len(weakIDs)) || st.Collected-before.Collected != rep.Objects {
		t.Errorf("Collect freed %d, stats count %d more collected; want %d", rep.Objects, st.Collected-before.Collected, len(weakIDs))
	}
	if st.Objects[Weak] != 0 || st.Objects[Pinned] != pinned {
		t.Errorf("after Collect stats hold %d WEAK and %d PINNED, want 0 and %d", st.Objects[Weak], st.Objects[Pinned], pinned)
	}
	if got := observed.Load(); got != rep.Objects {
		t.Errorf("the observer saw %d COLLECTED events, want %d", got, rep.Objects)
	}
	var lastSeq uint64
	for range rep.Objects {
		ev := nextEvent(t, sub)
		if seen, ok := weakIDs[ev.ID]; !ok || seen {
			t.Fatalf("COLLECTED event for %v: a WEAK object's first? %v, %v", ev.ID, ok, !seen)
		}
		if ev.Seq <= lastSeq {
			t.Fatalf("event sequence %d after %d", ev.Seq, lastSeq)
		}
		weakIDs[ev.ID], lastSeq = true, ev.Seq
	}
	noEvent(t, sub)
	listed, token := 0, ""
	for {
		page, next, err := r.List(Filter{}, token, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range page {
			if in.State != Pinned {
				t.Errorf("List shows %v %v after Collect", in.ID, in.State)
			}
		}
		listed += len(page)
		if token = next; token == "" {
			break
		}
	}
	if int64(listed) != pinned || r.mapLen() != listed {
		t.Errorf("List shows %d objects and the maps hold %d, want %d pinned", listed, r.mapLen(), pinned)
	}
}
