package registry

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// wantEvent is what a test expects of one event; Seq and Time are checked
// apart.
type wantEvent struct {
	kind    EventKind
	info    Info
	state   State
	pins    int
	lease   string
	unpinnd time.Duration
}

func checkEvent(t testing.TB, ev Event, w wantEvent) {
	t.Helper()
	type fields struct {
		Kind        EventKind
		ID          handle.ID
		Handle      string
		Size        int64
		State       State
		Pins        int
		Lease       string
		UnpinnedFor time.Duration
	}
	got := fields{ev.Kind, ev.ID, ev.Handle, ev.Size, ev.State, ev.Pins, ev.LeaseID, ev.UnpinnedFor}
	want := fields{w.kind, w.info.ID, w.info.Handle, w.info.Size, w.state, w.pins, w.lease, w.unpinnd}
	if got != want {
		t.Fatalf("event seq %d = %+v;\nwant %+v", ev.Seq, got, want)
	}
}

func TestWatchAllReceivesEveryLifecycleEventInSequence(t *testing.T) {
	noAutoGC(t)
	clock := newFakeClock()
	r := newRegistry(t, Config{Now: clock.Now})
	sub, err := r.WatchAll()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	a, b := newHolder(r), newHolder(r)
	t0 := clock.Now()

	w, _ := put(t, r, 10, 1, Meta{}, nil)
	p, _ := put(t, r, 20, 2, Meta{}, &a)
	mustPin(t, r, p.ID, b)
	clock.Advance(time.Second)
	mustUnpin(t, r, p.ID, a)
	mustUnpin(t, r, p.ID, b)
	clock.Advance(5 * time.Second)
	t6 := clock.Now()
	r.Collect()
	d, _ := put(t, r, 30, 3, Meta{}, nil)
	if _, _, err := r.Delete(d.ID, false); err != nil {
		t.Fatal(err)
	}

	want := []wantEvent{
		{kind: EventCreated, info: w, state: Weak},
		{kind: EventWeak, info: w, state: Weak},
		{kind: EventCreated, info: p, state: Pinned, pins: 1},
		{kind: EventPinned, info: p, state: Pinned, pins: 1, lease: a.LeaseID},
		{kind: EventPinned, info: p, state: Pinned, pins: 2, lease: b.LeaseID},
		{kind: EventUnpinned, info: p, state: Pinned, pins: 1, lease: a.LeaseID},
		{kind: EventUnpinned, info: p, state: Weak, pins: 0, lease: b.LeaseID},
		{kind: EventWeak, info: p, state: Weak},
		// The two COLLECTED events come in shard order; sorted below.
		{kind: EventCollected, info: w, state: Collected, unpinnd: 6 * time.Second},
		{kind: EventCollected, info: p, state: Collected, unpinnd: 5 * time.Second},
		{kind: EventCreated, info: d, state: Weak},
		{kind: EventWeak, info: d, state: Weak},
		{kind: EventDeleted, info: d, state: Deleted},
	}
	times := []time.Time{t0, t0, t0, t0, t0, t0.Add(time.Second), t0.Add(time.Second), t0.Add(time.Second), t6, t6, t6, t6, t6}
	var got []Event
	for range want {
		got = append(got, nextEvent(t, sub))
	}
	noEvent(t, sub)
	for i, ev := range got {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d, want %d", i, ev.Seq, i+1)
		}
	}
	if got[8].ID != w.ID { // collected in the other order
		got[8], got[9] = got[9], got[8]
	}
	for i, ev := range got {
		checkEvent(t, ev, want[i])
		if !ev.Time.Equal(times[i]) {
			t.Fatalf("event %d (%v) at %v, want %v", i, ev.Kind, ev.Time, times[i])
		}
	}
	if sub.Err() != nil {
		t.Fatalf("subscription err = %v, want nil", sub.Err())
	}
}

func TestWatchAllFiltersByKind(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	sub, err := r.WatchAll(EventPinned, EventCollected)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	by := newHolder(r)
	w, _ := put(t, r, 10, 1, Meta{}, nil)              // CREATED, WEAK: filtered
	mustPin(t, r, w.ID, by)                            // PINNED
	mustUnpin(t, r, w.ID, by)                          // UNPINNED, WEAK: filtered
	d, _ := put(t, r, 10, 2, Meta{}, &by)              // CREATED: filtered, PINNED
	if _, _, err := r.Delete(d.ID, true); err != nil { // DELETED: filtered
		t.Fatal(err)
	}
	r.Collect() // COLLECTED of w

	var kinds []EventKind
	var seqs []uint64
	for len(sub.Events()) > 0 {
		ev := <-sub.Events()
		kinds = append(kinds, ev.Kind)
		seqs = append(seqs, ev.Seq)
	}
	if want := []EventKind{EventPinned, EventPinned, EventCollected}; !slices.Equal(kinds, want) {
		t.Fatalf("filtered kinds = %v, want %v", kinds, want)
	}
	// Sequence numbers count every change, seen or not.
	if want := []uint64{3, 7, 9}; !slices.Equal(seqs, want) {
		t.Fatalf("filtered seqs = %v, want %v", seqs, want)
	}
}

func TestWatchSendsCurrentStateThenChangesInOrder(t *testing.T) {
	noAutoGC(t) // the collection must come after the clock moved
	clock := newFakeClock()
	r := newRegistry(t, Config{Now: clock.Now})
	a, b := newHolder(r), newHolder(r)
	watched, _ := put(t, r, 40, 1, Meta{}, &a)
	other, _ := put(t, r, 50, 2, Meta{}, &a)
	mustPin(t, r, watched.ID, b)
	last := r.events.lastSeq()

	sub, err := r.Watch([]handle.ID{watched.ID})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	cur := nextEvent(t, sub)
	checkEvent(t, cur, wantEvent{kind: EventCurrent, info: watched, state: Pinned, pins: 2})
	if cur.Seq != last {
		t.Fatalf("CURRENT seq = %d, want %d (the last change before it)", cur.Seq, last)
	}
	noEvent(t, sub)

	mustUnpin(t, r, other.ID, a) // not watched
	clock.Advance(time.Minute)
	mustUnpin(t, r, watched.ID, a)
	mustUnpin(t, r, watched.ID, b)
	clock.Advance(time.Minute)
	r.Collect()

	want := []wantEvent{
		{kind: EventUnpinned, info: watched, state: Pinned, pins: 1, lease: a.LeaseID},
		{kind: EventUnpinned, info: watched, state: Weak, pins: 0, lease: b.LeaseID},
		{kind: EventWeak, info: watched, state: Weak},
		{kind: EventCollected, info: watched, state: Collected, unpinnd: time.Minute},
	}
	prev := cur.Seq
	for _, w := range want {
		ev := nextEvent(t, sub)
		checkEvent(t, ev, w)
		if ev.Seq <= prev {
			t.Fatalf("seq %d after %d: not increasing", ev.Seq, prev)
		}
		prev = ev.Seq
	}
	noEvent(t, sub)
	// Nothing more can happen to a collected object: the hub forgot it.
	r.events.mu.Lock()
	_, indexed := r.events.byID[watched.ID]
	r.events.mu.Unlock()
	if indexed {
		t.Fatal("the hub still indexes a collected object's watchers")
	}
}

func TestWatchOfGoneObjectSendsItsFinalState(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	collected, _ := put(t, r, 10, 1, Meta{}, nil)
	deleted, _ := put(t, r, 10, 2, Meta{}, nil)
	if _, _, err := r.Delete(deleted.ID, false); err != nil {
		t.Fatal(err)
	}
	r.Collect()
	tests := []struct {
		name  string
		info  Info
		state State
	}{
		{"collected", collected, Collected},
		{"deleted", deleted, Deleted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := r.Watch([]handle.ID{tt.info.ID})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			ev := nextEvent(t, sub)
			checkEvent(t, ev, wantEvent{kind: EventCurrent, info: Info{ID: tt.info.ID, Handle: tt.info.Handle}, state: tt.state})
			if ev.Seq != r.events.lastSeq() {
				t.Fatalf("CURRENT seq = %d, want %d", ev.Seq, r.events.lastSeq())
			}
			noEvent(t, sub)
		})
	}
	r.events.mu.Lock()
	n := len(r.events.byID)
	r.events.mu.Unlock()
	if n != 0 {
		t.Fatalf("hub indexes %d gone objects, want 0", n)
	}
}

func TestWatchOfSeveralObjectsStartsWithEachCurrentState(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	by := newHolder(r)
	p, _ := put(t, r, 10, 1, Meta{}, &by)
	w, _ := put(t, r, 10, 2, Meta{}, nil)
	sub, err := r.Watch([]handle.ID{p.ID, w.ID})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	checkEvent(t, nextEvent(t, sub), wantEvent{kind: EventCurrent, info: p, state: Pinned, pins: 1})
	checkEvent(t, nextEvent(t, sub), wantEvent{kind: EventCurrent, info: w, state: Weak})
	mustPin(t, r, w.ID, by)
	checkEvent(t, nextEvent(t, sub), wantEvent{kind: EventPinned, info: w, state: Pinned, pins: 1, lease: by.LeaseID})
	noEvent(t, sub)
}

func TestSlowWatcherIsDroppedAndPublishingNeverBlocks(t *testing.T) {
	const buffer = 4
	noAutoGC(t)
	// Not newRegistry: if publishing blocks, the hub lock stays held and a
	// Close at cleanup would hang the test binary instead of failing.
	r := New(Config{Codec: newCodec(t), WatchBuffer: buffer})
	slow, err := r.WatchAll()
	if err != nil {
		t.Fatal(err)
	}
	by := newHolder(r)
	info, _ := put(t, r, 10, 1, Meta{}, &by)
	slowOne, err := r.Watch([]handle.ID{info.ID})
	if err != nil {
		t.Fatal(err)
	}

	// Nobody reads. Publishing must go on regardless: run it apart so that
	// a blocked publish fails the test instead of hanging it.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			if _, _, err := r.Unpin(info.ID, by); err != nil {
				t.Errorf("Unpin: %v", err)
				return
			}
			if _, _, err := r.Pin(info.ID, by); err != nil {
				t.Errorf("Pin: %v", err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("publishing blocked on a watcher nobody reads")
	}
	defer r.Close()
	for _, sub := range []*Subscription{slow, slowOne} {
		select {
		case <-sub.Done():
		default:
			t.Fatal("a watcher a full buffer behind was not dropped")
		}
		if !errors.Is(sub.Err(), ErrWatchTooSlow) {
			t.Fatalf("Err() = %v, want ErrWatchTooSlow", sub.Err())
		}
		// What it had already got stays readable, in order.
		if n := len(sub.Events()); n != buffer {
			t.Fatalf("%d events queued, want the %d that fitted", n, buffer)
		}
		var prev uint64
		for range buffer {
			ev := <-sub.Events()
			if prev != 0 && ev.Seq != prev+1 {
				t.Fatalf("seq %d after %d", ev.Seq, prev)
			}
			prev = ev.Seq
		}
		sub.Close() // after being dropped: no effect
		if !errors.Is(sub.Err(), ErrWatchTooSlow) {
			t.Fatalf("Err() after Close = %v, want ErrWatchTooSlow still", sub.Err())
		}
	}
	if st := r.Stats(); st.Watchers != 0 {
		t.Fatalf("Stats.Watchers = %d, want 0", st.Watchers)
	}
	// A new watcher that keeps up is served.
	fresh, err := r.Watch([]handle.ID{info.ID})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	checkEvent(t, nextEvent(t, fresh), wantEvent{kind: EventCurrent, info: info, state: Pinned, pins: 1})
	mustUnpin(t, r, info.ID, by)
	checkEvent(t, nextEvent(t, fresh), wantEvent{kind: EventUnpinned, info: info, state: Weak, lease: by.LeaseID})
	checkEvent(t, nextEvent(t, fresh), wantEvent{kind: EventWeak, info: info, state: Weak})
	if fresh.Err() != nil {
		t.Fatalf("a watcher that keeps up has Err %v", fresh.Err())
	}
}

func TestCloseEndsSubscriptionsWithErrClosed(t *testing.T) {
	r := newRegistry(t, Config{})
	by := newHolder(r)
	info, want := put(t, r, 10, 1, Meta{}, &by)
	all, err := r.WatchAll()
	if err != nil {
		t.Fatal(err)
	}
	one, err := r.Watch([]handle.ID{info.ID})
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Watchers != 2 {
		t.Fatalf("Stats.Watchers = %d, want 2", st.Watchers)
	}
	r.Close()
	for _, sub := range []*Subscription{all, one} {
		select {
		case <-sub.Done():
		default:
			t.Fatal("Close left a subscription open")
		}
		if !errors.Is(sub.Err(), ErrClosed) {
			t.Fatalf("Err() = %v, want ErrClosed", sub.Err())
		}
		sub.Close()
		if !errors.Is(sub.Err(), ErrClosed) {
			t.Fatalf("Err() after Subscription.Close = %v, want ErrClosed still", sub.Err())
		}
	}
	if _, err := r.WatchAll(); !errors.Is(err, ErrClosed) {
		t.Fatalf("WatchAll after Close: %v, want ErrClosed", err)
	}
	if _, err := r.Watch([]handle.ID{info.ID}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Watch after Close: %v, want ErrClosed", err)
	}
	// Objects stay resolvable, and changes no longer reach anyone.
	mustResolve(t, r, info.Handle, want)
	mustUnpin(t, r, info.ID, by)
	noEvent(t, all)
	r.Close() // twice is harmless
	r.Collect()
	assertHoldsNothing(t, r)
}

func TestSubscriptionCloseStopsDeliveryAndForgetsIt(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	w, _ := put(t, r, 10, 1, Meta{}, nil)
	all, err := r.WatchAll()
	if err != nil {
		t.Fatal(err)
	}
	one, err := r.Watch([]handle.ID{w.ID, w.ID})
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []*Subscription{all, one} {
		sub.Close()
		sub.Close()
		select {
		case <-sub.Done():
		default:
			t.Fatal("Done not closed after Close")
		}
		if sub.Err() != nil {
			t.Fatalf("Err() after Close = %v, want nil", sub.Err())
		}
	}
	for len(one.Events()) > 0 {
		<-one.Events() // the CURRENT events queued before Close
	}
	by := newHolder(r)
	mustPin(t, r, w.ID, by)
	noEvent(t, all)
	noEvent(t, one)
	mustUnpin(t, r, w.ID, by)
	r.Collect()
	assertHoldsNothing(t, r)
}

// TestObserverSeesWhatSubscribersSee: Config.Observe is called with every
// published event, numbered as subscribers receive it, COLLECTED with how
// long the object was unpinned.
func TestObserverSeesWhatSubscribersSee(t *testing.T) {
	noAutoGC(t)
	clock := newFakeClock()
	var (
		mu       sync.Mutex
		observed []Event
	)
	r := newRegistry(t, Config{Now: clock.Now, Observe: func(ev Event) {
		mu.Lock() // the runtime's cleanup goroutine may call too
		defer mu.Unlock()
		observed = append(observed, ev)
	}})
	sub, err := r.WatchAll()
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	a := newHolder(r)
	p, _ := put(t, r, 20, 2, Meta{}, &a)
	clock.Advance(time.Second)
	mustUnpin(t, r, p.ID, a)
	clock.Advance(3 * time.Second)
	r.Collect()

	var got []Event
	for range 5 { // CREATED, PINNED, UNPINNED, WEAK, COLLECTED
		got = append(got, nextEvent(t, sub))
	}
	noEvent(t, sub)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, observed) {
		t.Fatalf("observed %+v\nsubscribed %+v", observed, got)
	}
	if last := observed[len(observed)-1]; last.Kind != EventCollected || last.UnpinnedFor != 3*time.Second || last.Size != 20 {
		t.Fatalf("last observed event = %+v, want COLLECTED of 20 bytes unpinned for 3s", last)
	}
}
