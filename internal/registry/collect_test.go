package registry

import (
	"runtime/metrics"
	"sync"
	"testing"
	"time"
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
