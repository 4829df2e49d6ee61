package registry

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/weakref/registry/internal/handle"
)

func TestSortIDsOrdersAsTheIndex(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []handle.ID {
		ids := make([]handle.ID, n)
		for i := range ids {
			for j := range ids[i] {
				ids[i][j] = byte(rng.Uint32())
			}
		}
		return ids
	}
	// Ties in the first four bytes, which the radix passes leave to the
	// insertion pass.
	ties := random(500)
	for i := range ties {
		ties[i][0], ties[i][1], ties[i][2], ties[i][3] = 7, 7, byte(i%3), 7
	}
	reversed := random(300)
	slices.SortFunc(reversed, compareIDs)
	slices.Reverse(reversed)
	for _, tc := range []struct {
		name string
		ids  []handle.ID
	}{
		{"empty", nil},
		{"fewer than the radix threshold", random(10)},
		{"random", random(5000)},
		{"ties in the radix bytes", ties},
		{"reversed", reversed},
		{"duplicates", slices.Concat(ties[:80], ties[:80])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := slices.Clone(tc.ids)
			slices.SortFunc(want, compareIDs)
			got := slices.Clone(tc.ids)
			sortIDs(got, make([]handle.ID, len(got)))
			if !slices.Equal(got, want) {
				t.Fatalf("sortIDs of %d IDs is not in index order", len(got))
			}
		})
	}
}

// TestCollectedEventCarriesItsHandleWhereverItIsRead: a reap leaves its
// events' handles to be formatted as they are read; every reader still
// gets the object's handle: a watcher of everything, a watcher of the
// object, a watch resumed from the history, and the observer.
func TestCollectedEventCarriesItsHandleWhereverItIsRead(t *testing.T) {
	noAutoGC(t)
	var (
		mu       sync.Mutex
		observed []Event
	)
	r := newRegistry(t, Config{Observe: func(ev Event) {
		mu.Lock() // the reap drain calls it
		defer mu.Unlock()
		if ev.Kind == EventCollected {
			observed = append(observed, ev)
		}
	}})
	w, _ := put(t, r, 20, 1, Meta{}, nil)
	all, err := r.WatchAll(EventCollected)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	one, err := r.Watch([]handle.ID{w.ID})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if ev := nextEvent(t, one); ev.Kind != EventCurrent {
		t.Fatalf("first event of a watch = %v, want CURRENT", ev.Kind)
	}
	if rep := r.Collect(); rep.Objects != 1 {
		t.Fatalf("Collect freed %d objects, want 1", rep.Objects)
	}
	resumed, err := r.WatchAllFrom(1, EventCollected)
	if err != nil {
		t.Fatal(err)
	}
	defer resumed.Close()
	if len(resumed.Replay()) != 1 {
		t.Fatalf("replay holds %d COLLECTED events, want 1", len(resumed.Replay()))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(observed) != 1 {
		t.Fatalf("observed %d COLLECTED events, want 1", len(observed))
	}
	for _, tc := range []struct {
		reader string
		ev     Event
	}{
		{"watcher of everything", nextEvent(t, all)},
		{"watcher of the object", nextEvent(t, one)},
		{"resumed watch", resumed.Replay()[0]},
		{"observer", observed[0]},
	} {
		if tc.ev.Kind != EventCollected || tc.ev.Handle != w.Handle || tc.ev.codec != nil || tc.ev.mac != (handle.MAC{}) {
			t.Errorf("%s got %v with handle %q (left to format: %v), want COLLECTED with %q",
				tc.reader, tc.ev.Kind, tc.ev.Handle, tc.ev.codec != nil, w.Handle)
		}
	}
}

// TestUnwatchedReapFormatsNoHandles: with no watcher and no observer a
// reap allocates nothing per object; it used to format each COLLECTED
// event's handle, one allocation an object.
func TestUnwatchedReapFormatsNoHandles(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	const n = 4096
	data := newPayload(100, 1)
	for range n {
		if _, err := r.Put(data, Meta{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	r.Collect() // a first drain sizes its buffers
	for range n {
		if _, err := r.Put(data, Meta{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rep := r.Collect()
	runtime.ReadMemStats(&after)
	if rep.Objects != n {
		t.Fatalf("Collect freed %d objects, want %d", rep.Objects, n)
	}
	if allocs := after.Mallocs - before.Mallocs; allocs >= n/4 {
		t.Fatalf("reaping %d unwatched objects allocated %d times, want fewer than %d", n, allocs, n/4)
	}
}
