package lease_test

import (
	"errors"
	"testing"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// BenchmarkPinUnpin measures one pin and one unpin of one object by one
// session: the object goes WEAK → PINNED → WEAK each time. Between two
// operations the object is WEAK, so a GC may take it; it is then replaced
// off the clock.
func BenchmarkPinUnpin(b *testing.B) {
	gcOn(b)
	f := newFixture(b, lease.Config{})
	s := f.open(b, lease.OpenParams{Client: "bench"})
	hs := []string{f.put(b).Handle}
	b.ReportAllocs()
	for b.Loop() {
		rs, err := s.Pin(hs)
		if err == nil && rs[0].Outcome == lease.Failed && errors.Is(rs[0].Err, registry.ErrCollected) {
			b.StopTimer()
			hs[0] = f.put(b).Handle
			b.StartTimer()
			rs, err = s.Pin(hs)
		}
		if err != nil || rs[0].Outcome != lease.Pinned {
			b.Fatalf("Pin = %+v, %v", rs, err)
		}
		rs, err = s.Unpin(hs, 0)
		if err != nil || rs[0].Outcome != lease.Unpinned {
			b.Fatalf("Unpin = %+v, %v", rs, err)
		}
	}
}

// BenchmarkPinUnpinParallel is BenchmarkPinUnpin with one session per
// goroutine, all over the same small set of objects.
func BenchmarkPinUnpinParallel(b *testing.B) {
	gcOn(b)
	f := newFixture(b, lease.Config{})
	keeper := f.open(b, lease.OpenParams{Client: "keeper"}) // keeps the objects alive through GCs
	var hs []string
	for range 64 {
		h := f.put(b).Handle
		hs = append(hs, h)
	}
	pin(b, keeper, hs...)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		s, err := f.m.Open(lease.OpenParams{Client: "bench"})
		if err != nil {
			b.Error(err)
			return
		}
		defer s.Close(0)
		for i := 0; pb.Next(); i++ {
			h := hs[i%len(hs) : i%len(hs)+1]
			if _, err := s.Pin(h); err != nil {
				b.Error(err)
				return
			}
			if _, err := s.Unpin(h, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkOpenClose measures a lease's whole life with no pins.
func BenchmarkOpenClose(b *testing.B) {
	gcOn(b)
	f := newFixture(b, lease.Config{})
	p := lease.OpenParams{Client: "bench", Peer: "127.0.0.1:1"}
	b.ReportAllocs()
	for b.Loop() {
		s, err := f.m.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Close(0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutWithLease measures Manager.Put: store and pin in one step.
// The lease is closed and replaced, off the clock, every few thousand
// objects so that its pin set and the registry stay of bounded size.
func BenchmarkPutWithLease(b *testing.B) {
	const perLease = 4096
	gcOn(b)
	f := newFixture(b, lease.Config{})
	s := f.open(b, lease.OpenParams{Client: "bench"})
	data := make([]byte, 1024) // the registry shares it, never copies it
	meta := registry.Meta{ContentType: "application/octet-stream"}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := f.m.Put(auth.Anonymous, s.ID(), data, meta); err != nil {
			b.Fatal(err)
		}
		if n++; n == perLease {
			b.StopTimer()
			if _, err := s.Close(0); err != nil {
				b.Fatal(err)
			}
			s = f.open(b, lease.OpenParams{Client: "bench"})
			n = 0
			b.StartTimer()
		}
	}
}
