package registry

import (
	"errors"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
)

func TestUnpinnedPutStartsWeakAndResolvesUntilCollected(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	info, want := put(t, r, 1000, 1, Meta{ContentType: "text/plain"}, nil)
	if info.State != Weak || info.Pins != 0 || info.Size != 1000 || info.ContentType != "text/plain" {
		t.Fatalf("Put info = %+v; want WEAK, 0 pins, 1000 bytes, text/plain", info)
	}
	obj := mustResolve(t, r, info.Handle, want)
	if obj.Info.State != Weak || obj.Info.Handle != info.Handle || obj.Info.ID != info.ID {
		t.Fatalf("Resolve info = %+v; want the WEAK object put", obj.Info)
	}
	if st, err := r.Stat(info.Handle); err != nil || st.State != Weak {
		t.Fatalf("Stat = %v, %v; want WEAK", st.State, err)
	}

	rep := r.Collect()
	if rep.Objects != 1 || rep.Bytes != 1000 {
		t.Fatalf("Collect report = %+v; want 1 object of 1000 bytes", rep)
	}
	wantGone(t, r, info.Handle, ErrCollected)
	st := r.Stats()
	if st.Collected != 1 || st.CollectedBytes != 1000 || st.Objects[Weak] != 0 || st.Bytes[Weak] != 0 {
		t.Fatalf("Stats after collection = collected %d (%d bytes), weak %d (%d bytes); want 1 (1000), 0 (0)",
			st.Collected, st.CollectedBytes, st.Objects[Weak], st.Bytes[Weak])
	}
	// Collected is final: a second collection finds nothing new.
	if rep := r.Collect(); rep.Objects != 0 || rep.Bytes != 0 {
		t.Fatalf("second Collect report = %+v; want nothing freed", rep)
	}
}

func TestCollectedObjectCannotBePinnedOrUnpinned(t *testing.T) {
	r := newRegistry(t, Config{})
	info, _ := put(t, r, 100, 1, Meta{}, nil)
	r.Collect()
	by := newHolder(r)
	if _, _, err := r.Pin(info.ID, by); !errors.Is(err, ErrCollected) {
		t.Fatalf("Pin of a collected object: %v; want ErrCollected", err)
	}
	if _, pinned, err := r.Unpin(info.ID, by); !errors.Is(err, ErrCollected) || pinned {
		t.Fatalf("Unpin of a collected object = %v, %v; want false, ErrCollected", pinned, err)
	}
	if _, _, err := r.Delete(info.ID, true); !errors.Is(err, ErrCollected) {
		t.Fatalf("Delete of a collected object: %v; want ErrCollected", err)
	}
	if st := r.Stats(); st.Pins != 0 || st.Objects[Pinned] != 0 || st.Bytes[Pinned] != 0 || st.Deleted != 0 {
		t.Fatalf("Stats = %+v; want no pins, nothing pinned, nothing deleted", st)
	}
}

func TestPinnedObjectSurvivesGC(t *testing.T) {
	r := newRegistry(t, Config{})
	by := newHolder(r)
	info, want := put(t, r, 4096, 2, Meta{}, &by)
	if info.State != Pinned || info.Pins != 1 {
		t.Fatalf("Put with a holder = %v with %d pins; want PINNED with 1", info.State, info.Pins)
	}
	for i := range 3 {
		if rep := r.Collect(); rep.Objects != 0 {
			t.Fatalf("Collect %d freed %d objects; want 0", i, rep.Objects)
		}
		obj := mustResolve(t, r, info.Handle, want)
		if obj.Info.State != Pinned || obj.Info.Pins != 1 {
			t.Fatalf("after Collect %d: %v with %d pins; want PINNED with 1", i, obj.Info.State, obj.Info.Pins)
		}
	}
}

func TestUnpinnedObjectIsCollected(t *testing.T) {
	noAutoGC(t) // so that Collect, not the runtime, takes it
	r := newRegistry(t, Config{})
	by := newHolder(r)
	info, want := put(t, r, 2048, 3, Meta{}, &by)
	r.Collect()
	mustResolve(t, r, info.Handle, want)

	got, pinned, err := r.Unpin(info.ID, by)
	if err != nil || !pinned {
		t.Fatalf("Unpin = %v, %v; want true, nil", pinned, err)
	}
	if got.State != Weak || got.Pins != 0 {
		t.Fatalf("after the last Unpin: %v with %d pins; want WEAK with 0", got.State, got.Pins)
	}
	if rep := r.Collect(); rep.Objects != 1 || rep.Bytes != 2048 {
		t.Fatalf("Collect report = %+v; want 1 object of 2048 bytes", rep)
	}
	wantGone(t, r, info.Handle, ErrCollected)
}

func TestPinPromotesWeakObjectBackToPinned(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	info, want := put(t, r, 500, 4, Meta{}, nil)
	by := newHolder(r)
	got, already, err := r.Pin(info.ID, by)
	if err != nil || already {
		t.Fatalf("Pin = %v, %v; want false, nil", already, err)
	}
	if got.State != Pinned || got.Pins != 1 {
		t.Fatalf("after Pin: %v with %d pins; want PINNED with 1", got.State, got.Pins)
	}
	st := r.Stats()
	if st.Objects[Pinned] != 1 || st.Bytes[Pinned] != 500 || st.Objects[Weak] != 0 || st.Bytes[Weak] != 0 || st.Pins != 1 {
		t.Fatalf("Stats = objects %v bytes %v pins %d; want 1 pinned of 500 bytes, none weak, 1 pin", st.Objects, st.Bytes, st.Pins)
	}
	for range 2 {
		if rep := r.Collect(); rep.Objects != 0 {
			t.Fatalf("Collect freed %d objects; want 0", rep.Objects)
		}
	}
	mustResolve(t, r, info.Handle, want)
}

func TestSecondHolderKeepsObjectPinned(t *testing.T) {
	r := newRegistry(t, Config{})
	a, b := newHolder(r), newHolder(r)
	info, want := put(t, r, 300, 5, Meta{}, &a)
	got, already, err := r.Pin(info.ID, b)
	if err != nil || already || got.Pins != 2 {
		t.Fatalf("second Pin = %d pins, %v, %v; want 2, false, nil", got.Pins, already, err)
	}
	if st := r.Stats(); st.Pins != 2 || st.Bytes[Pinned] != 300 || st.Objects[Pinned] != 1 {
		t.Fatalf("Stats = pins %d, pinned %d objects of %d bytes; want 2 pins on 1 object of 300 (counted once)", st.Pins, st.Objects[Pinned], st.Bytes[Pinned])
	}
	got, pinned, err := r.Unpin(info.ID, a)
	if err != nil || !pinned || got.State != Pinned || got.Pins != 1 {
		t.Fatalf("Unpin of one of two = %v with %d pins, %v, %v; want PINNED with 1, true, nil", got.State, got.Pins, pinned, err)
	}
	r.Collect()
	mustResolve(t, r, info.Handle, want)

	got, pinned, err = r.Unpin(info.ID, b)
	if err != nil || !pinned || got.State != Weak || got.Pins != 0 {
		t.Fatalf("Unpin of the last = %v with %d pins, %v, %v; want WEAK with 0, true, nil", got.State, got.Pins, pinned, err)
	}
	r.Collect()
	wantGone(t, r, info.Handle, ErrCollected)
}

func TestDuplicatePinIsIdempotent(t *testing.T) {
	r := newRegistry(t, Config{})
	by := newHolder(r)
	info, _ := put(t, r, 100, 6, Meta{}, &by)
	before := statsSnapshot(r)
	got, already, err := r.Pin(info.ID, by)
	if err != nil || !already {
		t.Fatalf("duplicate Pin = already %v, %v; want true, nil", already, err)
	}
	if got.Pins != 1 || got.State != Pinned {
		t.Fatalf("duplicate Pin info = %v with %d pins; want PINNED with 1", got.State, got.Pins)
	}
	if after := statsSnapshot(r); after.Pins != before.Pins || after.Bytes[Pinned] != before.Bytes[Pinned] {
		t.Fatalf("duplicate Pin changed stats: pins %d -> %d, pinned bytes %d -> %d", before.Pins, after.Pins, before.Bytes[Pinned], after.Bytes[Pinned])
	}
	// A lease pins at most once, so one Unpin releases it.
	if got, pinned, err := r.Unpin(info.ID, by); err != nil || !pinned || got.State != Weak {
		t.Fatalf("Unpin after a duplicate Pin = %v, %v, %v; want WEAK, true, nil", got.State, pinned, err)
	}
}

func TestUnpinByNonHolderChangesNothing(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	holder, stranger := newHolder(r), newHolder(r)
	pinnedInfo, pinnedWant := put(t, r, 100, 7, Meta{}, &holder)
	weakInfo, weakWant := put(t, r, 200, 8, Meta{}, nil)
	tests := []struct {
		name      string
		info      Info
		wantState State
		wantPins  int
	}{
		{name: "pinned by another", info: pinnedInfo, wantState: Pinned, wantPins: 1},
		{name: "weak", info: weakInfo, wantState: Weak, wantPins: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := statsSnapshot(r)
			got, pinned, err := r.Unpin(tt.info.ID, stranger)
			if err != nil || pinned {
				t.Fatalf("Unpin by a non-holder = %v, %v; want false, nil", pinned, err)
			}
			if got.State != tt.wantState || got.Pins != tt.wantPins {
				t.Fatalf("Unpin by a non-holder reported %v with %d pins; want %v with %d", got.State, got.Pins, tt.wantState, tt.wantPins)
			}
			if after := statsSnapshot(r); after.Pins != before.Pins || after.Bytes[Pinned] != before.Bytes[Pinned] || after.Objects[Weak] != before.Objects[Weak] {
				t.Fatalf("Unpin by a non-holder changed stats: %+v -> %+v", before, after)
			}
		})
	}
	mustResolve(t, r, weakInfo.Handle, weakWant)
	r.Collect()
	mustResolve(t, r, pinnedInfo.Handle, pinnedWant)
	wantGone(t, r, weakInfo.Handle, ErrCollected)
}

// TestCleanupReapsCollectedObject checks the runtime.AddCleanup path: a
// plain runtime.GC, with no Collect, eventually removes the object, counts
// it and publishes COLLECTED.
func TestCleanupReapsCollectedObject(t *testing.T) {
	r := newRegistry(t, Config{})
	sub, err := r.WatchAll(EventCollected)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	info, _ := put(t, r, 700, 9, Meta{}, nil)

	// No Collect: only the runtime's cleanup can reap it.
	waitFor(t, 10*time.Second, "the cleanup never reaped the object", func() bool {
		return len(sub.Events()) > 0
	})
	ev := nextEvent(t, sub)
	if ev.Kind != EventCollected || ev.ID != info.ID || ev.Handle != info.Handle || ev.State != Collected || ev.Size != 700 {
		t.Fatalf("event = %+v; want COLLECTED of the object", ev)
	}
	if r.inMap(info.ID) {
		t.Fatal("the reaped object is still in its shard map")
	}
	st := r.Stats()
	if st.Collected != 1 || st.CollectedBytes != 700 || st.Objects[Weak] != 0 || st.Bytes[Weak] != 0 {
		t.Fatalf("Stats = collected %d (%d bytes), weak %d (%d bytes); want 1 (700), 0 (0)", st.Collected, st.CollectedBytes, st.Objects[Weak], st.Bytes[Weak])
	}
	wantGone(t, r, info.Handle, ErrCollected)
	noEvent(t, sub)
}

func TestRegistryHoldsNothingAfterEverythingIsCollected(t *testing.T) {
	r := newRegistry(t, Config{WatchBuffer: 1 << 14})
	holders := []Holder{newHolder(r), newHolder(r), newHolder(r)}
	sub, err := r.WatchAll()
	if err != nil {
		t.Fatal(err)
	}
	type putObj struct {
		info Info
		by   []Holder
	}
	var objs []putObj
	var total int64
	for i := range 300 {
		var by []Holder
		var first *Holder
		if i%3 != 0 {
			by = holders[:1+i%len(holders)]
			first = &by[0]
		}
		info, _ := put(t, r, 1+i*13, byte(i), Meta{Labels: map[string]string{"i": "x"}}, first)
		for _, h := range by[min(1, len(by)):] {
			if _, _, err := r.Pin(info.ID, h); err != nil {
				t.Fatalf("Pin: %v", err)
			}
		}
		objs = append(objs, putObj{info, by})
		total += info.Size
	}
	var watched []handle.ID
	for _, o := range objs[:10] {
		watched = append(watched, o.info.ID)
	}
	watch, err := r.Watch(watched)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		for _, h := range o.by {
			if _, pinned, err := r.Unpin(o.info.ID, h); err != nil || !pinned {
				t.Fatalf("Unpin = %v, %v", pinned, err)
			}
		}
	}
	waitFor(t, 10*time.Second, "not every object was collected", func() bool {
		r.Collect()
		return r.counters.collected.Load() == int64(len(objs))
	})
	for _, o := range objs {
		wantGone(t, r, o.info.Handle, ErrCollected)
	}
	if st := r.Stats(); st.CollectedBytes != total {
		t.Fatalf("CollectedBytes = %d, want %d", st.CollectedBytes, total)
	}
	// Every watched object is gone, so the hub forgot them already.
	r.events.mu.Lock()
	byID := len(r.events.byID)
	r.events.mu.Unlock()
	if byID != 0 {
		t.Fatalf("hub still indexes %d watched objects that were collected", byID)
	}
	collected := 0
	for len(sub.Events()) > 0 {
		if ev := <-sub.Events(); ev.Kind == EventCollected {
			collected++
		}
	}
	if sub.Err() != nil || collected != len(objs) {
		t.Fatalf("WatchAll saw %d COLLECTED events (err %v); want %d", collected, sub.Err(), len(objs))
	}
	sub.Close()
	watch.Close()
	assertHoldsNothing(t, r)
}

// TestPayloadIsPaddedOutOfCrowdedSpans guards the padding that keeps
// weak.Make and AddCleanup cheap (see box).
func TestPayloadIsPaddedOutOfCrowdedSpans(t *testing.T) {
	if got := unsafe.Sizeof(box{}); got != 128 {
		t.Fatalf("box is %d bytes, want 128", got)
	}
}

// TestEntryLayout guards the size of an entry, which every object pays
// for, and of its side struct, which objects with metadata, more than one
// pin or a linger pay for: 128 bytes is a size class, and one field more
// would cost 16.
func TestEntryLayout(t *testing.T) {
	if got := unsafe.Sizeof(entry{}); got != 128 {
		t.Fatalf("entry is %d bytes, want 128", got)
	}
	if got := unsafe.Sizeof(entryExtra{}); got != 128 {
		t.Fatalf("entryExtra is %d bytes, want 128", got)
	}
}

// TestPinsKeepTheirLeasesAndTimes: an entry keeps its first pin's lease
// as a bare ID and its time as the state's (see entry.pin0Since), and the
// others in full; whichever pin goes, Inspect and Delete tell every pin
// left with its lease's handle, as the holder gave it, and its own time.
func TestPinsKeepTheirLeasesAndTimes(t *testing.T) {
	type step struct {
		pin   bool // pin, else unpin
		by    int  // holder index
		after time.Duration
	}
	tests := []struct {
		name   string
		pinned bool // Put pinned by holder 0
		steps  []step
		want   []int // holders left pinning, oldest first, by index
	}{
		{name: "put pinned, nothing else", pinned: true, want: []int{0}},
		{name: "put weak, one pin", steps: []step{{true, 1, time.Second}}, want: []int{1}},
		{name: "second pin kept after the first", pinned: true, steps: []step{{true, 1, time.Second}}, want: []int{0, 1}},
		{name: "first pin goes, the second is first", pinned: true, steps: []step{{true, 1, time.Second}, {true, 2, time.Second}, {false, 0, time.Second}}, want: []int{1, 2}},
		{name: "middle pin goes", pinned: true, steps: []step{{true, 1, time.Second}, {true, 2, time.Second}, {false, 1, time.Second}}, want: []int{0, 2}},
		{name: "first goes, then a new pin", pinned: true, steps: []step{{true, 1, time.Second}, {false, 0, time.Second}, {true, 0, time.Second}}, want: []int{1, 0}},
		{name: "all go, then pinned again", pinned: true, steps: []step{{true, 1, time.Second}, {false, 0, time.Second}, {false, 1, time.Second}, {true, 2, time.Second}}, want: []int{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noAutoGC(t)
			clock := newFakeClock()
			r := newRegistry(t, Config{Now: clock.Now})
			hs := []Holder{newHolder(r), newHolder(r), newHolder(r)}
			since := make([]time.Time, len(hs))
			var first *Holder
			if tt.pinned {
				first = &hs[0]
				since[0] = clock.Now()
			}
			info, _ := put(t, r, 100, 1, Meta{}, first)
			for _, s := range tt.steps {
				clock.Advance(s.after)
				if s.pin {
					if _, already, err := r.Pin(info.ID, hs[s.by]); err != nil || already {
						t.Fatalf("Pin by %d: already %v, %v", s.by, already, err)
					}
					since[s.by] = clock.Now()
				} else if _, pinned, err := r.Unpin(info.ID, hs[s.by]); err != nil || !pinned {
					t.Fatalf("Unpin by %d: pinned %v, %v", s.by, pinned, err)
				}
			}
			var want []Pin
			for _, i := range tt.want {
				want = append(want, Pin{Lease: hs[i].ID, LeaseID: hs[i].LeaseID, Since: since[i]})
			}
			_, pins, err := r.Inspect(info.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(pins, want, pinEqual) {
				t.Fatalf("Inspect pins = %v, want %v", pins, want)
			}
			_, pins, err = r.Delete(info.ID, true)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(pins, want, pinEqual) {
				t.Fatalf("Delete pins = %v, want %v", pins, want)
			}
		})
	}
}

func pinEqual(a, b Pin) bool {
	return a.Lease == b.Lease && a.LeaseID == b.LeaseID && a.Since.Equal(b.Since)
}

// TestChargeGoesToWhoeverMadeItStrong: an entry keeps a charge to its
// owner's account implied and any other in its side struct; either way
// the bytes are charged to the identity whose act made the object
// strongly held, and given back to it when it is WEAK again.
func TestChargeGoesToWhoeverMadeItStrong(t *testing.T) {
	tests := []struct {
		name   string
		owner  string
		pinner string // "": Put pinned by the owner's lease
		want   string // charged, "" for no account
	}{
		{name: "owner's put pinned", owner: "alice", want: "alice"},
		{name: "owner pins its weak object", owner: "alice", pinner: "alice", want: "alice"},
		{name: "another pins it", owner: "alice", pinner: "bob", want: "bob"},
		{name: "anonymous pins it", owner: "alice", pinner: auth.AnonymousName},
		{name: "anonymous put", owner: auth.AnonymousName},
		{name: "anonymous object pinned by someone", owner: auth.AnonymousName, pinner: "bob", want: "bob"},
		{name: "no owner, pinned by someone", pinner: "bob", want: "bob"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noAutoGC(t)
			r := newRegistry(t, Config{})
			const size = 100
			owner := holderOf(r, tt.owner)
			var info Info
			var by Holder
			if tt.pinner == "" {
				info, _ = put(t, r, size, 1, Meta{Owner: tt.owner}, &owner)
				by = owner
			} else {
				info, _ = put(t, r, size, 1, Meta{Owner: tt.owner}, nil)
				by = holderOf(r, tt.pinner)
				if _, _, err := r.Pin(info.ID, by); err != nil {
					t.Fatal(err)
				}
			}
			per := map[string]int64{"alice": 0, "bob": 0, auth.AnonymousName: 0}
			if tt.want != "" {
				per[tt.want] = size
			}
			wantHeld(t, r, size, per)
			if _, _, err := r.Unpin(info.ID, by); err != nil {
				t.Fatal(err)
			}
			per[tt.want] = 0
			wantHeld(t, r, 0, per)
			if _, _, err := r.Pin(info.ID, by); err != nil {
				t.Fatal(err)
			}
			if tt.want != "" {
				per[tt.want] = size
			}
			wantHeld(t, r, size, per)
			if _, _, err := r.Delete(info.ID, true); err != nil {
				t.Fatal(err)
			}
			per[tt.want] = 0
			wantHeld(t, r, 0, per)
			if n := r.accounts.count(); n != 0 {
				t.Fatalf("%d accounts left", n)
			}
		})
	}
}
