package registry

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// drain returns sub's replay and every event queued on it now.
func drain(sub *Subscription) []Event {
	got := slices.Clone(sub.Replay())
	for len(sub.Events()) > 0 {
		got = append(got, <-sub.Events())
	}
	return got
}

func seqsOf(evs []Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Seq
	}
	return out
}

// seqRange returns from, from+1, ..., to.
func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for n := from; n <= to; n++ {
		out = append(out, n)
	}
	return out
}

// pinUnpin makes two events on a pinned object: PINNED then UNPINNED by
// another holder.
func pinUnpin(t testing.TB, r *Registry, id handle.ID, by Holder) {
	t.Helper()
	mustPin(t, r, id, by)
	mustUnpin(t, r, id, by)
}

// wantCompacted fails unless err is a *CompactedError saying from, oldest
// and newest.
func wantCompacted(t testing.TB, err error, from, oldest, newest uint64) {
	t.Helper()
	var ce *CompactedError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a *CompactedError", err)
	}
	if ce.From != from || ce.Oldest != oldest || ce.Newest != newest {
		t.Fatalf("got %+v, want From %d Oldest %d Newest %d", *ce, from, oldest, newest)
	}
}

// TestResumeReplaysEveryEventExactlyOnceWhilePublishing: watches that
// resume from a sequence while other goroutines publish receive, through
// their replay and then their channel, every event from that sequence on,
// each once, in order, exactly as a watch that never stopped did.
func TestResumeReplaysEveryEventExactlyOnceWhilePublishing(t *testing.T) {
	const (
		objects    = 16
		publishers = 4
		rounds     = 300 // pin+unpin pairs per publisher
		resumers   = 40
	)
	r := newRegistry(t, Config{WatchBuffer: 1 << 16, WatchHistory: 1 << 16})
	reference, err := r.WatchAll() // a watch that never stops
	if err != nil {
		t.Fatal(err)
	}
	defer reference.Close()
	keeper := newHolder(r)
	infos := make([]Info, objects)
	for i := range infos {
		infos[i], _ = put(t, r, 32, byte(i), Meta{}, &keeper) // pinned throughout: no GC decides anything here
	}

	type resumed struct {
		sub  *Subscription
		from uint64
		ids  []handle.ID // nil: every object
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		resumes []resumed
	)
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			by := newHolder(r)
			for i := range rounds {
				id := infos[(p+i)%objects].ID
				if _, _, err := r.Pin(id, by); err != nil {
					t.Errorf("Pin: %v", err)
					return
				}
				if _, _, err := r.Unpin(id, by); err != nil {
					t.Errorf("Unpin: %v", err)
					return
				}
			}
		}()
	}
	for i := range resumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := r.events.lastSeq()
			from := last + 1 - min(last, uint64(rand.IntN(200))) // 1 ... last+1
			var ids []handle.ID
			var sub *Subscription
			var err error
			if i%2 == 0 {
				sub, err = r.WatchAllFrom(from)
			} else {
				ids = []handle.ID{infos[i%objects].ID, infos[(i+5)%objects].ID}
				sub, err = r.WatchFrom(ids, from)
			}
			if err != nil {
				t.Errorf("resume from %d: %v", from, err)
				return
			}
			mu.Lock()
			resumes = append(resumes, resumed{sub, from, ids})
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	// Delivery is synchronous: every event is queued by now.
	all := drain(reference)
	last := r.events.lastSeq()
	if want := seqRange(1, last); !slices.Equal(seqsOf(all), want) {
		t.Fatalf("the reference watch saw %d events, want %d in order", len(all), len(want))
	}
	for _, rs := range resumes {
		got := drain(rs.sub)
		rs.sub.Close()
		var want []Event
		for _, ev := range all[rs.from-1:] {
			if rs.ids == nil || slices.Contains(rs.ids, ev.ID) {
				want = append(want, ev)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("resumed from %d (ids %d): got seqs %v,\nwant %v", rs.from, len(rs.ids), seqsOf(got), seqsOf(want))
		}
		if rs.sub.Err() != nil {
			t.Fatalf("resumed watch ended with %v", rs.sub.Err())
		}
	}
}

// TestResumeWhileObjectsEnd: a watch of some objects that resumes while
// they are deleted gets each final event once, from the replay or live,
// and counts in Ending exactly the objects that had not ended before its
// sequence.
func TestResumeWhileObjectsEnd(t *testing.T) {
	const objects = 24
	r := newRegistry(t, Config{WatchHistory: 1 << 12})
	keeper := newHolder(r)
	infos := make([]Info, objects)
	ids := make([]handle.ID, objects)
	for i := range infos {
		infos[i], _ = put(t, r, 32, byte(i), Meta{}, &keeper)
		ids[i] = infos[i].ID
	}
	reference, err := r.WatchAll()
	if err != nil {
		t.Fatal(err)
	}
	defer reference.Close()
	start := r.events.lastSeq() + 1

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, id := range ids {
			if _, _, err := r.Delete(id, true); err != nil {
				t.Errorf("Delete: %v", err)
			}
		}
	}()
	subs := make([]*Subscription, 0, 32)
	froms := make([]uint64, 0, 32)
	for range 32 {
		from := max(start, r.events.lastSeq()-uint64(rand.IntN(4)))
		sub, err := r.WatchFrom(ids, from)
		if err != nil {
			t.Fatal(err)
		}
		subs, froms = append(subs, sub), append(froms, from)
	}
	wg.Wait()
	all := drain(reference)
	reference.Close()
	for i, sub := range subs {
		got := drain(sub)
		sub.Close()
		var want []Event
		for _, ev := range all {
			if ev.Seq >= froms[i] {
				want = append(want, ev)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("resumed from %d: got seqs %v, want %v", froms[i], seqsOf(got), seqsOf(want))
		}
		// Every object here ends with one DELETED event each.
		if sub.Ending() != len(want) {
			t.Fatalf("resumed from %d: Ending() = %d, want %d (the objects not deleted before it)", froms[i], sub.Ending(), len(want))
		}
	}
	assertHoldsNothing(t, r)
}

// TestHistoryWrapsAroundAndRefusesWhatItLost: the history keeps the last
// WatchHistory events; resuming before them, or past the next event, is
// refused with the oldest sequence one can resume from.
func TestHistoryWrapsAroundAndRefusesWhatItLost(t *testing.T) {
	r := newRegistry(t, Config{WatchHistory: 8})
	keeper, by := newHolder(r), newHolder(r)
	info, _ := put(t, r, 10, 1, Meta{}, &keeper) // CREATED, PINNED: seqs 1, 2
	if st := r.Stats().WatchHistory; st != (HistoryStats{Capacity: 8, Events: 2, Oldest: 1, Newest: 2}) {
		t.Fatalf("history stats = %+v, want 2 events, 1 to 2, of 8", st)
	}
	for range 9 {
		pinUnpin(t, r, info.ID, by) // seqs 3 ... 20
	}
	if st := r.Stats().WatchHistory; st != (HistoryStats{Capacity: 8, Events: 8, Oldest: 13, Newest: 20}) {
		t.Fatalf("history stats = %+v, want 8 events, 13 to 20", st)
	}
	for _, from := range []uint64{13, 14, 17, 20, 21} {
		for _, ids := range [][]handle.ID{nil, {info.ID}} {
			var sub *Subscription
			var err error
			if ids == nil {
				sub, err = r.WatchAllFrom(from)
			} else {
				sub, err = r.WatchFrom(ids, from)
			}
			if err != nil {
				t.Fatalf("resume from %d: %v", from, err)
			}
			got := drain(sub)
			if want := seqRange(from, 20); !slices.Equal(seqsOf(got), want) {
				t.Fatalf("resume from %d: got %v, want %v", from, seqsOf(got), want)
			}
			for _, ev := range got {
				want := EventPinned
				if ev.Seq%2 == 0 {
					want = EventUnpinned
				}
				if ev.Kind != want || ev.ID != info.ID || ev.LeaseID != by.LeaseID {
					t.Fatalf("replayed seq %d = %v of %s by %s, want %v by %s", ev.Seq, ev.Kind, ev.Handle, ev.LeaseID, want, by.LeaseID)
				}
			}
			sub.Close()
		}
	}
	for _, tt := range []struct {
		name string
		from uint64
	}{{"compacted", 12}, {"first ever", 1}, {"beyond the next", 22}, {"far beyond", 1 << 40}} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.WatchAllFrom(tt.from)
			wantCompacted(t, err, tt.from, 13, 20)
			_, err = r.WatchFrom([]handle.ID{info.ID}, tt.from)
			wantCompacted(t, err, tt.from, 13, 20)
		})
	}
	// A refused resume registers nothing.
	if st := r.Stats(); st.Watchers != 0 {
		t.Fatalf("%d watchers after refused and closed resumes, want 0", st.Watchers)
	}
}

// TestResumedWatchFollowsItsObjectsOnly: a resumed watch of some objects
// replays their events only, with no CURRENT event, then follows them
// live; an object that ended within the replay is not watched further,
// one that ended before the sequence is not mentioned at all.
func TestResumedWatchFollowsItsObjectsOnly(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	keeper, by := newHolder(r), newHolder(r)
	early, _ := put(t, r, 10, 1, Meta{}, nil) // WEAK: ends before the resume point
	r.Collect()
	from := r.events.lastSeq() + 1
	a, _ := put(t, r, 10, 2, Meta{}, &keeper)
	b, _ := put(t, r, 10, 3, Meta{}, &keeper)
	other, _ := put(t, r, 10, 4, Meta{}, &keeper)
	pinUnpin(t, r, other.ID, by)
	mustPin(t, r, a.ID, by)
	if _, _, err := r.Delete(b.ID, true); err != nil {
		t.Fatal(err)
	}

	sub, err := r.WatchFrom([]handle.ID{early.ID, a.ID, b.ID, a.ID}, from)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	want := []wantEvent{
		{kind: EventCreated, info: a, state: Pinned, pins: 1},
		{kind: EventPinned, info: a, state: Pinned, pins: 1, lease: keeper.LeaseID},
		{kind: EventCreated, info: b, state: Pinned, pins: 1},
		{kind: EventPinned, info: b, state: Pinned, pins: 1, lease: keeper.LeaseID},
		{kind: EventPinned, info: a, state: Pinned, pins: 2, lease: by.LeaseID},
		{kind: EventDeleted, info: b, state: Deleted},
	}
	replay := sub.Replay()
	if len(replay) != len(want) {
		t.Fatalf("replay = %v, want %d events", seqsOf(replay), len(want))
	}
	for i, w := range want {
		checkEvent(t, replay[i], w)
		if i > 0 && replay[i].Seq <= replay[i-1].Seq {
			t.Fatalf("replay out of order: %v", seqsOf(replay))
		}
	}
	noEvent(t, sub)
	// early ended before from: not counted; b within the replay; a is live.
	if sub.Ending() != 2 {
		t.Fatalf("Ending() = %d, want 2 (a live, b deleted within the replay)", sub.Ending())
	}
	r.events.mu.Lock()
	_, watchesB := r.events.byID[b.ID]
	_, watchesEarly := r.events.byID[early.ID]
	r.events.mu.Unlock()
	if watchesB || watchesEarly {
		t.Fatal("the hub watches an object that has ended")
	}
	mustUnpin(t, r, other.ID, keeper) // not watched
	mustUnpin(t, r, a.ID, by)
	checkEvent(t, nextEvent(t, sub), wantEvent{kind: EventUnpinned, info: a, state: Pinned, pins: 1, lease: by.LeaseID})
	noEvent(t, sub)
	if _, _, err := r.Delete(a.ID, true); err != nil {
		t.Fatal(err)
	}
	checkEvent(t, nextEvent(t, sub), wantEvent{kind: EventDeleted, info: a, state: Deleted})
	noEvent(t, sub)
}

// TestResumedWatchAllFiltersReplayByKind: the kinds asked for filter the
// replay as they filter live events.
func TestResumedWatchAllFiltersReplayByKind(t *testing.T) {
	r := newRegistry(t, Config{})
	keeper, by := newHolder(r), newHolder(r)
	info, _ := put(t, r, 10, 1, Meta{}, &keeper) // 1 CREATED, 2 PINNED
	pinUnpin(t, r, info.ID, by)                  // 3 PINNED, 4 UNPINNED
	sub, err := r.WatchAllFrom(2, EventPinned)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if got := seqsOf(sub.Replay()); !slices.Equal(got, []uint64{2, 3}) {
		t.Fatalf("replayed seqs %v, want the two PINNED events 2 and 3", got)
	}
	pinUnpin(t, r, info.ID, by) // 5 PINNED, 6 UNPINNED
	if ev := nextEvent(t, sub); ev.Kind != EventPinned || ev.Seq != 5 {
		t.Fatalf("live event %v seq %d, want PINNED 5", ev.Kind, ev.Seq)
	}
	noEvent(t, sub)
}

// TestReplayLargerThanTheBufferKeepsItsWatcher: a replay is not bound by
// the live buffer, so a watcher that resumes far back is not dropped for
// it; the live events after it still are bound by the buffer.
func TestReplayLargerThanTheBufferKeepsItsWatcher(t *testing.T) {
	const buffer = 4
	r := newRegistry(t, Config{WatchBuffer: buffer, WatchHistory: 100})
	keeper, by := newHolder(r), newHolder(r)
	info, _ := put(t, r, 10, 1, Meta{}, &keeper)
	for range 20 {
		pinUnpin(t, r, info.ID, by) // 42 events in all
	}
	all, err := r.WatchAllFrom(1)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	one, err := r.WatchFrom([]handle.ID{info.ID}, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	for _, sub := range []*Subscription{all, one} {
		if got := seqsOf(sub.Replay()); !slices.Equal(got, seqRange(1, 42)) {
			t.Fatalf("replay = %v, want 1 to 42", got)
		}
	}
	pinUnpin(t, r, info.ID, by) // 43, 44
	for _, sub := range []*Subscription{all, one} {
		select {
		case <-sub.Done():
			t.Fatalf("a replay of 42 events dropped its watcher of buffer %d: %v", buffer, sub.Err())
		default:
		}
		if got := seqsOf(drain(sub)[42:]); !slices.Equal(got, []uint64{43, 44}) {
			t.Fatalf("live after the replay: %v, want 43 and 44", got)
		}
	}
	// Live events still count against the buffer.
	for range buffer {
		pinUnpin(t, r, info.ID, by)
	}
	for _, sub := range []*Subscription{all, one} {
		if !errors.Is(sub.Err(), ErrWatchTooSlow) {
			t.Fatalf("after %d unread live events: Err %v, want ErrWatchTooSlow", 2*buffer, sub.Err())
		}
	}
}

// TestHistorySizes: 0 takes the default; negative keeps nothing, and then
// only a resume from the next event is possible.
func TestHistorySizes(t *testing.T) {
	if st := newRegistry(t, Config{}).Stats().WatchHistory; st != (HistoryStats{Capacity: 10000}) {
		t.Fatalf("default history = %+v, want capacity 10000 and empty", st)
	}
	r := newRegistry(t, Config{WatchHistory: -1})
	keeper := newHolder(r)
	info, _ := put(t, r, 10, 1, Meta{}, &keeper) // seqs 1, 2
	if st := r.Stats().WatchHistory; st != (HistoryStats{}) {
		t.Fatalf("history with none kept = %+v, want zeros", st)
	}
	_, err := r.WatchAllFrom(2)
	wantCompacted(t, err, 2, 3, 2)
	_, err = r.WatchFrom([]handle.ID{info.ID}, 1)
	wantCompacted(t, err, 1, 3, 2)
	sub, err := r.WatchFrom([]handle.ID{info.ID}, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if len(sub.Replay()) != 0 || sub.Ending() != 1 {
		t.Fatalf("resume from the next event: replay %v, Ending %d; want none and 1", seqsOf(sub.Replay()), sub.Ending())
	}
	mustUnpin(t, r, info.ID, keeper)
	if ev := nextEvent(t, sub); ev.Kind != EventUnpinned || ev.Seq != 3 {
		t.Fatalf("first live event %v seq %d, want UNPINNED 3", ev.Kind, ev.Seq)
	}
}

// TestResumeAfterCloseIsRefused: a closed registry takes no watch, resumed
// or not.
func TestResumeAfterCloseIsRefused(t *testing.T) {
	r := newRegistry(t, Config{})
	info, _ := put(t, r, 10, 1, Meta{}, nil)
	r.Close()
	if _, err := r.WatchAllFrom(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("WatchAllFrom after Close: %v, want ErrClosed", err)
	}
	if _, err := r.WatchFrom([]handle.ID{info.ID}, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("WatchFrom after Close: %v, want ErrClosed", err)
	}
}

// BenchmarkHubPublish measures numbering, recording and delivering one
// event with no subscriber, with and without a history: what the history
// adds to every change is the difference.
func BenchmarkHubPublish(b *testing.B) {
	for _, history := range []int{0, 10000} {
		b.Run("history="+strconv.Itoa(history), func(b *testing.B) {
			h := newHub(1024, history, 0)
			ev := Event{Kind: EventPinned, State: Pinned, Handle: "obj_" + strings.Repeat("A", 52), LeaseID: "lse_" + strings.Repeat("B", 52), Time: time.Now()}
			b.ReportAllocs()
			for b.Loop() {
				h.publish(&ev)
			}
		})
	}
}

// TestPublishingAllocatesNothing: numbering, recording and delivering an
// event costs no allocation, watched or not, one at a time (Put, Pin,
// Unpin) or a reaped chunk's at once: the hot paths and a collection of
// millions pay none per event.
func TestPublishingAllocatesNothing(t *testing.T) {
	h := newHub(1024, 100, 0)
	t.Cleanup(h.close)
	ev := Event{Kind: EventPinned, State: Pinned, Handle: "obj_" + strings.Repeat("A", 52), LeaseID: "lse_" + strings.Repeat("B", 52), Time: time.Now()}
	for i := range h.histCap { // the ring at its full size
		ev.ID[0] = byte(i)
		h.publish(&ev)
	}
	chunk := make([]Event, reapChunk)
	for i := range chunk {
		chunk[i] = Event{Kind: EventCollected, State: Collected, ID: handle.ID{byte(i), 1}}
	}
	if n := testing.AllocsPerRun(100, func() { h.publish(&ev) }); n != 0 {
		t.Errorf("an unwatched publish allocates %v times, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { h.publishAll(chunk) }); n != 0 {
		t.Errorf("publishing a reaped chunk allocates %v times, want 0", n)
	}
	sub, err := h.subscribe(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	drain := func() {
		for len(sub.ch) > 0 {
			<-sub.ch
		}
	}
	if n := testing.AllocsPerRun(100, func() { h.publish(&ev); drain() }); n != 0 {
		t.Errorf("a publish to a watcher of everything allocates %v times, want 0", n)
	}
}
