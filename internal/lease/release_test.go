package lease_test

import (
	"sync"
	"testing"
	"time"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// TestEndingABigLeaseDoesNotSlowOthers revokes a lease with 100k pins
// while another goroutine calls Counts and an unrelated lease's Put in a
// loop: neither waits for the release. The bound is relative: a call that
// waited on the release would take about as long as it, so none may take a
// tenth of it (or 50ms, when the release is quick), whatever else slows
// the machine; the structural check is
// TestCountsAndPutNeverWaitOnALeaseLock.
func TestEndingABigLeaseDoesNotSlowOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("puts 100k objects")
	}
	const pins = 100_000
	f := newFixture(t, lease.Config{})
	big := f.open(t, lease.OpenParams{Client: "big"})
	for range pins {
		if _, err := f.m.Put(auth.Anonymous, big.ID(), []byte("p"), registry.Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	other := f.open(t, lease.OpenParams{Client: "unrelated"})

	var (
		wg                sync.WaitGroup
		released          = make(chan struct{})
		started           = make(chan struct{})
		maxCounts, maxPut time.Duration
		releaseTook       time.Duration
		calls             int
	)
	wg.Go(func() {
		for i := 0; ; i++ {
			t0 := time.Now()
			f.m.Counts()
			t1 := time.Now()
			if _, err := f.m.Put(auth.Anonymous, other.ID(), []byte("q"), registry.Meta{}); err != nil {
				t.Error(err)
				return
			}
			t2 := time.Now()
			maxCounts, maxPut = max(maxCounts, t1.Sub(t0)), max(maxPut, t2.Sub(t1))
			calls++
			if i == 0 {
				close(started)
			}
			select {
			case <-released:
				return
			default:
			}
		}
	})
	<-started
	t0 := time.Now()
	if n, err := f.m.Revoke(big.ID(), "test"); err != nil || n != pins {
		t.Fatalf("Revoke = %d, %v; want %d", n, err, pins)
	}
	releaseTook = time.Since(t0)
	close(released)
	wg.Wait()
	t.Logf("release of %d pins: %v; %d calls meanwhile, slowest Counts %v, slowest Put %v", pins, releaseTook, calls, maxCounts, maxPut)
	bound := max(50*time.Millisecond, releaseTook/10)
	if maxCounts > bound || maxPut > bound {
		t.Errorf("while a lease released %d pins in %v: slowest Counts %v, slowest unrelated Put %v; want both under %v",
			pins, releaseTook, maxCounts, maxPut, bound)
	}
}

// BenchmarkCounts measures Counts with 10k live leases: it must not
// depend on how many there are.
func BenchmarkCounts(b *testing.B) {
	f := newFixture(b, lease.Config{})
	for range 10_000 {
		f.open(b, lease.OpenParams{Client: "bench"})
	}
	b.ReportAllocs()
	for b.Loop() {
		f.m.Counts()
	}
}
