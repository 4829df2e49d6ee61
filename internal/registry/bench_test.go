package registry

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
)

// The payload is shared by every Put of a benchmark: the registry keeps
// bytes as given, and a benchmark of Put should not measure the caller's
// allocation.
const benchSize = 1 << 10

func BenchmarkPut(b *testing.B) {
	r := newRegistry(b, Config{})
	data := newPayload(benchSize, 1)
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Put(data, Meta{}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPutParallel(b *testing.B) {
	r := newRegistry(b, Config{})
	data := newPayload(benchSize, 1)
	b.SetBytes(benchSize)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Put(data, Meta{}, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkPutPinned(b *testing.B) {
	const batch = 1024 // unpinned outside the timer, to bound memory
	r := newRegistry(b, Config{})
	by := newHolder(r)
	data := newPayload(benchSize, 1)
	infos := make([]Info, 0, batch)
	unpin := func() {
		for _, in := range infos {
			if _, _, err := r.Unpin(in.ID, by); err != nil {
				b.Fatal(err)
			}
		}
		infos = infos[:0]
	}
	b.SetBytes(benchSize)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		info, err := r.Put(data, Meta{}, &by)
		if err != nil {
			b.Fatal(err)
		}
		if infos = append(infos, info); len(infos) == batch {
			b.StopTimer()
			unpin()
			b.StartTimer()
		}
	}
	b.StopTimer()
	unpin()
}

func BenchmarkResolveHit(b *testing.B) {
	r := newRegistry(b, Config{})
	by := newHolder(r)
	info, _ := put(b, r, benchSize, 1, Meta{}, &by)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Resolve(info.Handle); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkResolveCollected(b *testing.B) {
	r := newRegistry(b, Config{})
	info, _ := put(b, r, benchSize, 1, Meta{}, nil)
	r.Collect()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Resolve(info.Handle); !errors.Is(err, ErrCollected) {
				b.Errorf("Resolve: %v, want ErrCollected", err)
				return
			}
		}
	})
}

// BenchmarkPinUnpin pins and unpins an object another lease keeps pinned:
// the pin-set path without a state change.
func BenchmarkPinUnpin(b *testing.B) {
	r := newRegistry(b, Config{})
	keeper, by := newHolder(r), newHolder(r)
	info, _ := put(b, r, benchSize, 1, Meta{}, &keeper)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.Pin(info.ID, by); err != nil {
			b.Fatal(err)
		}
		if _, _, err := r.Unpin(info.ID, by); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPinUnpinWeak pins and unpins an object nobody else pins: every
// pin moves it WEAK -> PINNED and every unpin back.
func BenchmarkPinUnpinWeak(b *testing.B) {
	noAutoGC(b) // an unpinned moment must not meet a collection
	r := newRegistry(b, Config{})
	by := newHolder(r)
	info, _ := put(b, r, benchSize, 1, Meta{}, nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.Pin(info.ID, by); err != nil {
			b.Fatal(err)
		}
		if _, _, err := r.Unpin(info.ID, by); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPinUnpinParallel gives each goroutine its own object, so they
// meet only on shard locks and counters.
func BenchmarkPinUnpinParallel(b *testing.B) {
	r := newRegistry(b, Config{})
	keeper := newHolder(r)
	var seed atomic.Int32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		by := newHolder(r)
		data := newPayload(benchSize, byte(seed.Add(1)))
		info, err := r.Put(data, Meta{}, &keeper)
		if err != nil {
			b.Error(err)
			return
		}
		for pb.Next() {
			if _, _, err := r.Pin(info.ID, by); err != nil {
				b.Error(err)
				return
			}
			if _, _, err := r.Unpin(info.ID, by); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkStat(b *testing.B) {
	r := newRegistry(b, Config{})
	by := newHolder(r)
	info, _ := put(b, r, benchSize, 1, Meta{}, &by)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Stat(info.Handle); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkCollect measures a forced collection that finds 1000 objects
// to reap.
func BenchmarkCollect(b *testing.B) {
	noAutoGC(b) // so that Collect, not the runtime, takes them
	r := newRegistry(b, Config{})
	data := newPayload(benchSize, 1)
	b.ReportAllocs()
	for range b.N {
		b.StopTimer()
		for range 1000 {
			if _, err := r.Put(data, Meta{}, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if rep := r.Collect(); rep.Objects != 1000 {
			b.Fatalf("Collect freed %d objects, want 1000", rep.Objects)
		}
	}
}

// BenchmarkStats measures a scrape at 1M objects, half of them pinned and
// half WEAK and kept alive from outside (suspected leaks once the GC clock
// moves): it must not depend on the number of objects.
func BenchmarkStats(b *testing.B) {
	const n = 1 << 20
	r := newRegistry(b, Config{LeakGCCycles: 3, SoftCacheBytes: 1 << 20})
	strays := fillHalfPinned(b, r, n)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.Stats()
	}
	b.StopTimer()
	runtime.KeepAlive(strays)
}

// fillHalfPinned puts n objects, every other one pinned by one holder and
// the rest WEAK, and returns the WEAK ones' payloads: the caller keeps them
// alive, as stray references would, so that the collector leaves them.
func fillHalfPinned(b *testing.B, r *Registry, n int) []*payload {
	b.Helper()
	by := newHolder(r)
	data := newPayload(64, 1)
	strays := make([]*payload, 0, n/2)
	for i := range n {
		holder := &by
		if i%2 == 0 {
			holder = nil
		}
		info, err := r.Put(data, Meta{}, holder)
		if err != nil {
			b.Fatal(err)
		}
		if holder == nil {
			strays = append(strays, r.payloadOf(info.ID))
		}
	}
	return strays
}

// BenchmarkListPage pages through n objects, 100 at a time, from start
// to end and again: a page must cost the same at 10k objects as at 1M.
func BenchmarkListPage(b *testing.B) {
	for _, n := range []int{10_000, 1 << 20} {
		for _, tt := range []struct {
			name string
			f    Filter
		}{
			{"all", Filter{}},
			{"weak", Filter{State: Weak}}, // half match
		} {
			b.Run(fmt.Sprintf("objects=%d/%s", n, tt.name), func(b *testing.B) {
				r := newRegistry(b, Config{})
				strays := fillHalfPinned(b, r, n)
				b.ReportAllocs()
				b.ResetTimer()
				token := ""
				for b.Loop() {
					_, next, err := r.List(tt.f, token, 100)
					if err != nil {
						b.Fatal(err)
					}
					token = next
				}
				b.StopTimer()
				runtime.KeepAlive(strays)
			})
		}
	}
}

// BenchmarkMemoryPerObject puts 1M objects of 100 bytes, each its own
// allocation as an upload's would be, and reports what the heap holds per
// object after a collection: heapB/obj in all, overheadB/obj beyond the
// 100 payload bytes (the payload's size-class rounding, 112 bytes, counts
// as overhead). WEAK objects are kept alive from outside, as strays would
// be, so that the collector leaves them; the 16 bytes per object of the
// slice that keeps them are not counted. It runs once, however long -
// only under -bench: go test -run '^$' -bench MemoryPerObject -benchtime 1x.
func BenchmarkMemoryPerObject(b *testing.B) {
	const (
		n    = 1 << 20
		size = 100
	)
	for _, owned := range []bool{true, false} {
		for _, pinned := range []bool{true, false} {
			name := "boxed/"
			if owned {
				name = "owned/" // as registryd runs: Config.OwnedPayloads
			}
			if pinned {
				name += "pinned"
			} else {
				name += "weak"
			}
			b.Run(name, func(b *testing.B) {
				for range b.N {
					heap, strays := memoryPerObject(b, n, size, Config{OwnedPayloads: owned, WatchHistory: -1}, pinned)
					perObj := float64(heap)/n - float64(16*cap(strays))/n
					b.ReportMetric(perObj, "heapB/obj")
					b.ReportMetric(perObj-size, "overheadB/obj")
					runtime.KeepAlive(strays)
				}
			})
		}
	}
}

// memoryPerObject fills a fresh registry with n objects of size bytes and
// returns the heap bytes it and they added, with the strays that keep the
// WEAK ones alive.
func memoryPerObject(b *testing.B, n, size int, cfg Config, pinned bool) (uint64, []any) {
	b.Helper()
	var strays []any
	if !pinned {
		strays = make([]any, 0, n)
	}
	var before, after runtime.MemStats
	settle(&before)
	r := newRegistry(b, cfg)
	by := newHolder(r)
	holder := &by
	if !pinned {
		holder = nil
	}
	for i := range n {
		data := newPayload(size, byte(i))
		info, err := r.Put(data, Meta{}, holder)
		if err != nil {
			b.Fatal(err)
		}
		if !pinned {
			strays = append(strays, r.payloadRef(info.ID))
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	var alive int64
	for _, k := range r.Stats().Objects {
		alive += k
	}
	if alive != int64(n) {
		b.Fatalf("%d objects alive after the collection, want %d", alive, n)
	}
	runtime.KeepAlive(r)
	return after.HeapAlloc - before.HeapAlloc, strays
}

// BenchmarkResolveHitSerial is ResolveHit on one goroutine: the cost of a
// hit without the two cores fighting over one shard lock's reader count
// and one entry's access time.
func BenchmarkResolveHitSerial(b *testing.B) {
	r := newRegistry(b, Config{})
	by := newHolder(r)
	info, _ := put(b, r, benchSize, 1, Meta{}, &by)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Resolve(info.Handle); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResolveHitSpread gives each goroutine its own object, as many
// clients resolving many objects do: they meet only on the counters.
func BenchmarkResolveHitSpread(b *testing.B) {
	r := newRegistry(b, Config{})
	by := newHolder(r)
	var seed atomic.Int32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		info, err := r.Put(newPayload(benchSize, byte(seed.Add(1))), Meta{}, &by)
		if err != nil {
			b.Error(err)
			return
		}
		for pb.Next() {
			if _, err := r.Resolve(info.Handle); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// settle collects until the heap stops shrinking, so that what earlier
// benchmarks left (objects whose cleanups were still to run, and then
// their entries) is gone before a measurement starts, and reads it.
func settle(ms *runtime.MemStats) {
	runtime.GC()
	runtime.ReadMemStats(ms)
	for range 20 {
		last := ms.HeapAlloc
		runtime.Gosched() // the cleanup goroutine's turn
		runtime.GC()
		runtime.ReadMemStats(ms)
		if ms.HeapAlloc >= last-last/1000 {
			return
		}
	}
}

// BenchmarkPinUnpinParsed is PinUnpin as a lease session calls it, with
// the handle it parsed: the answers carry it, none is made again.
func BenchmarkPinUnpinParsed(b *testing.B) {
	r := newRegistry(b, Config{})
	keeper, by := newHolder(r), newHolder(r)
	info, _ := put(b, r, benchSize, 1, Meta{}, &keeper)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := r.PinParsed(info.ID, info.Handle, by); err != nil {
			b.Fatal(err)
		}
		if _, _, err := r.UnpinHandoffParsed(info.ID, info.Handle, by, 0); err != nil {
			b.Fatal(err)
		}
	}
}
