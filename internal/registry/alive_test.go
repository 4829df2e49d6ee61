package registry

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestResolvePinIsAllOrNothing races resolve-and-pin against the
// collector: each call either returns the exact bytes, and the object is
// pinned by the caller afterwards, or returns ErrCollected and nothing is
// pinned. There is no third outcome, over at least 100k calls.
func TestResolvePinIsAllOrNothing(t *testing.T) {
	const (
		workers   = 8
		minCalls  = 100_000
		batch     = 64
		maxWall   = 60 * time.Second
		payloadSz = 24
	)
	r := newRegistry(t, Config{})
	var (
		calls, hits, misses atomic.Int64
		stop                = make(chan struct{})
		wg                  sync.WaitGroup
	)
	// The collector runs all along, so that many unpinned objects go
	// between their Put and the resolve-and-pin.
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				r.Collect()
			}
		}
	})
	deadline := time.Now().Add(maxWall)
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			by := newHolder(r)
			handles := make([]string, batch)
			wants := make([][]byte, batch)
			for calls.Load() < minCalls {
				if time.Now().After(deadline) {
					errs <- errors.New("too slow: deadline passed before 100k calls")
					return
				}
				for i := range handles {
					data := newPayload(payloadSz, byte(rng.Uint32()))
					wants[i] = bytes.Clone(data)
					info, err := r.Put(data, Meta{}, nil)
					if err != nil {
						errs <- err
						return
					}
					handles[i] = info.Handle
				}
				if rng.IntN(2) == 0 {
					runtime.Gosched() // let the collector in
				}
				for i, h := range handles {
					id, _ := r.Parse(h)
					obj, already, err := r.ResolvePin(id, by)
					calls.Add(1)
					_, pins, ierr := r.Inspect(id)
					pinnedByUs := ierr == nil && pinIndex(pins, by) >= 0
					switch {
					case err == nil:
						hits.Add(1)
						if already || !bytes.Equal(obj.Payload().Bytes(), wants[i]) || obj.Info.State != Pinned || !pinnedByUs {
							errs <- errors.New("resolve-and-pin returned bytes but the object is not pinned by the caller, or the bytes differ")
							return
						}
						if _, _, err := r.Unpin(id, by); err != nil {
							errs <- err
							return
						}
					case errors.Is(err, ErrCollected):
						misses.Add(1)
						if pinnedByUs {
							errs <- errors.New("resolve-and-pin said collected but the caller pins the object")
							return
						}
					default:
						errs <- err
						return
					}
				}
			}
		})
	}
	// Stop the collector once the workers are done.
	go func() {
		for calls.Load() < minCalls && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		close(stop)
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d resolve-and-pin calls: %d hits, %d collected", calls.Load(), hits.Load(), misses.Load())
	if hits.Load() == 0 || misses.Load() == 0 {
		t.Fatalf("want both outcomes, got %d hits and %d collected", hits.Load(), misses.Load())
	}
	r.Collect()
	if st := r.Stats(); st.Pins != 0 || st.Objects[Pinned] != 0 {
		t.Fatalf("after the race: %d pins, %d pinned objects; want none", st.Pins, st.Objects[Pinned])
	}
}

func pinIndex(pins []Pin, by Holder) int {
	for i, p := range pins {
		if p.Lease == by.ID {
			return i
		}
	}
	return -1
}

func TestResolvePinOutcomes(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{MaxPinnedBytes: 100})
	a := newHolder(r)
	gone, _ := put(t, r, 10, 3, Meta{}, nil)
	goneID := gone.ID
	r.Collect() // nothing pins it: gone
	weakInfo, want := put(t, r, 10, 5, Meta{}, nil)
	big, _ := put(t, r, 200, 6, Meta{}, nil)
	weakID, bigID := weakInfo.ID, big.ID

	obj, already, err := r.ResolvePin(weakID, a)
	if err != nil || already || !bytes.Equal(obj.Data, want) || obj.Info.State != Pinned || obj.Info.Pins != 1 {
		t.Fatalf("weak object: %v, already %v, info %+v", err, already, obj.Info)
	}
	if _, already, err := r.ResolvePin(weakID, a); err != nil || !already {
		t.Fatalf("second resolve-and-pin: already %v, %v", already, err)
	}
	if _, _, err := r.ResolvePin(goneID, a); !errors.Is(err, ErrCollected) {
		t.Fatalf("collected object: %v, want ErrCollected", err)
	}
	var limit *LimitError
	if _, _, err := r.ResolvePin(bigID, a); !errors.As(err, &limit) || limit.Limit != LimitPinnedBytes {
		t.Fatalf("over the pinned-bytes limit: %v", err)
	}
	if info, _ := r.StatID(bigID); info.State != Weak || info.Pins != 0 {
		t.Fatalf("refused object changed: %+v", info)
	}
	st := r.Stats()
	if st.ResolveMisses[MissCollected] != 1 {
		t.Fatalf("misses %v, want one collected", st.ResolveMisses)
	}
}

// TestHandoffHoldsTheObjectAfterTheLeaseLetsGo: a hand-off keeps the
// object LINGERING after the last pin goes, even when the lease that asked
// for it was not the last to let go.
func TestHandoffHoldsTheObjectAfterTheLeaseLetsGo(t *testing.T) {
	noAutoGC(t)
	clock := newFakeClock()
	r := newRegistry(t, Config{Now: clock.Now})
	a, b := newHolder(r), newHolder(r)
	info, want := put(t, r, 32, 9, Meta{}, &a)
	id := info.ID
	if _, _, err := r.Pin(id, b); err != nil {
		t.Fatal(err)
	}
	// a hands off for a minute while b still pins: still PINNED.
	got, _, err := r.UnpinHandoff(id, a, time.Minute)
	if err != nil || got.State != Pinned || got.Pins != 1 {
		t.Fatalf("after a's hand-off: %+v, %v", got, err)
	}
	// b lets go without one: a's hand-off holds it.
	clock.Advance(10 * time.Second)
	got, _, err = r.Unpin(id, b)
	wantUntil := time.Unix(0, clock.ns.Load()).Add(50 * time.Second)
	if err != nil || got.State != Lingering || !got.LingerUntil.Equal(wantUntil) {
		t.Fatalf("after b let go: state %v until %v, %v; want LINGERING until %v", got.State, got.LingerUntil, err, wantUntil)
	}
	r.Collect()
	mustResolve(t, r, info.Handle, want)
	// Its deadline passes: WEAK, then collected.
	clock.Advance(time.Minute)
	r.endLinger(id)
	if st, err := r.StatID(id); err != nil || st.State != Weak {
		t.Fatalf("after the hand-off: %+v, %v; want WEAK", st, err)
	}
	r.Collect()
	wantGone(t, r, info.Handle, ErrCollected)
}

func TestHandoffShorterThanLingerKeepsTheLinger(t *testing.T) {
	noAutoGC(t)
	clock := newFakeClock()
	r := newRegistry(t, Config{Now: clock.Now})
	a := newHolder(r)
	info, _ := put(t, r, 32, 9, Meta{Linger: time.Hour}, &a)
	got, _, err := r.UnpinHandoff(info.ID, a, time.Minute)
	if err != nil || got.State != Lingering || !got.LingerUntil.Equal(time.Unix(0, clock.ns.Load()).Add(time.Hour)) {
		t.Fatalf("linger of an hour, hand-off of a minute: %+v, %v; want lingering for the hour", got, err)
	}
}

// TestSuspectedLeakIsReported keeps a reference to a weak object's payload
// outside the registry, as a bug would: after LeakGCCycles collections it
// is reported, in Inspect, List, Stat and Stats. An ordinary weak object
// is collected, and a soft-cached one survives, and neither is ever
// reported.
func TestSuspectedLeakIsReported(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{LeakGCCycles: 2, SoftCacheBytes: 1 << 10})
	leaked, _ := put(t, r, 16, 1, Meta{}, nil)
	ordinary, _ := put(t, r, 16, 2, Meta{}, nil)
	cached, want := put(t, r, 16, 3, Meta{}, nil)
	mustResolve(t, r, cached.Handle, want) // into the soft cache
	stray := r.payloadOf(leaked.ID)        // the "bug"

	// The GC clock ticks on the cleanup goroutine, after whatever cleanups
	// earlier tests queued: poll with a deadline, not a count.
	deadline := time.Now().Add(20 * time.Second)
	for {
		r.Collect()
		if in, _, err := r.Inspect(leaked.ID); err == nil && in.SuspectedLeak {
			if in.WeakGCCycles < 2 || in.State != Weak {
				t.Fatalf("suspected leak with %d weak GC cycles, state %v", in.WeakGCCycles, in.State)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a weak object alive after 20 s of collections was never reported")
		}
		if in, _, err := r.Inspect(cached.ID); err != nil || in.SuspectedLeak || !in.SoftCached {
			t.Fatalf("soft-cached object: %+v, %v; want alive, cached, not suspected", in, err)
		}
	}
	if _, err := r.StatID(ordinary.ID); !errors.Is(err, ErrCollected) {
		t.Fatalf("ordinary weak object: %v, want collected", err)
	}
	if n := r.Stats().SuspectedLeaks; n != 1 {
		t.Fatalf("Stats.SuspectedLeaks = %d, want 1", n)
	}
	list, _, err := r.List(Filter{SuspectedLeaks: true}, "", 10)
	if err != nil || len(list) != 1 || list[0].ID != leaked.ID {
		t.Fatalf("List(suspected leaks) = %v, %v; want the leaked object only", list, err)
	}
	if st, _ := r.StatID(cached.ID); st.SuspectedLeak {
		t.Fatal("soft-cached object reported as a leak")
	}
	runtime.KeepAlive(stray) // stray is dead from here on: the GC may take it
	r.Collect()
	if _, err := r.StatID(leaked.ID); !errors.Is(err, ErrCollected) {
		t.Fatalf("once the stray reference is gone: %v, want collected", err)
	}
}

func TestLeakReportsAreOffWithoutAThreshold(t *testing.T) {
	noAutoGC(t)
	r := newRegistry(t, Config{})
	leaked, _ := put(t, r, 16, 1, Meta{}, nil)
	stray := r.payloadOf(leaked.ID)
	waitFor(t, 20*time.Second, "two GC cycles counted", func() bool {
		r.Collect()
		in, _, err := r.Inspect(leaked.ID)
		return err == nil && in.WeakGCCycles >= 2
	})
	if in, _, err := r.Inspect(leaked.ID); err != nil || in.SuspectedLeak || in.WeakGCCycles < 2 {
		t.Fatalf("without a threshold: %+v, %v; want weak GC cycles counted, no report", in, err)
	}
	if r.Stats().SuspectedLeaks != 0 {
		t.Fatal("Stats.SuspectedLeaks counted without a threshold")
	}
	runtime.KeepAlive(stray)
}
