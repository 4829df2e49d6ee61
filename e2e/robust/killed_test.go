package robust

import (
	"strconv"
	"testing"
	"time"
)

// TestKilledLeaseStreamsLeaveNoPins kills -robust.streams lease streams
// abruptly, each holding pins: half of the holding workers get SIGKILL,
// the other half lose their network to a blackhole. Every lease must be
// gone, and every pin released, within keepalive time + timeout, and
// registryd's goroutines must return to the idle baseline.
func TestKilledLeaseStreamsLeaveNoPins(t *testing.T) {
	const workers, pins = 10, 3
	streams := *flagStreams
	if testing.Short() {
		streams = min(streams, 100)
	}
	perWorker := max(streams/workers, 1)
	c := newCluster(t, registrydBin, nil)
	c.collect()
	base, err := c.figures()
	if err != nil {
		t.Fatal(err)
	}
	ready := c.hist.watchOp(OpReady)
	var ws []*worker
	for range workers {
		ws = append(ws, c.startWorker("hold", "-leases", strconv.Itoa(perWorker), "-objects", strconv.Itoa(pins)))
	}
	want := perWorker * workers
	deadline := time.After(2 * time.Minute)
	for n := range want {
		select {
		case r := <-ready:
			if r.Result != strconv.Itoa(pins) {
				t.Fatalf("a holder pinned %s objects, want %d", r.Result, pins)
			}
		case <-deadline:
			t.Fatalf("only %d of %d lease streams ready", n, want)
		}
	}
	held, err := c.figures()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("holding: %d leases, %d pins, %d objects, heap %.1f MiB (idle: %.1f MiB)", held.leases, held.pins, held.objects, float64(held.heap)/(1<<20), float64(base.heap)/(1<<20))
	if held.leases < int64(want) || held.pins < int64(want*pins) {
		t.Fatalf("registryd counts %v, want at least %d leases and %d pins", held, want, want*pins)
	}

	if streams >= 1000 { // the full run: tell how many goroutines the streams cost
		g, _ := c.goroutinesUntil(0, func(int) bool { return true })
		t.Logf("registryd goroutines while holding: %d", g)
	}
	start := time.Now()
	for i, w := range ws {
		if i%2 == 0 {
			c.killWorker(w, "abruptly")
		} else {
			c.fault(w.id, "blackhole")
			w.proxy.SetBlackhole(true)
		}
	}
	limit := keepaliveTime + keepaliveTimeout
	var f figures
	gone := poll(limit+10*time.Second, func() bool {
		f, err = c.figures()
		return err == nil && f.leases == 0 && f.pins == 0
	})
	took := time.Since(start)
	t.Logf("%d lease streams killed (%d by SIGKILL, %d blackholed): leases and pins gone in %v; now %d leases, %d pins",
		want, (workers+1)/2*perWorker, workers/2*perWorker, took.Round(time.Millisecond), f.leases, f.pins)
	if !gone {
		t.Fatalf("after %v registryd still counts %v, want 0 leases and 0 pins", took, f)
	}
	// Keepalive pings after keepaliveTime of silence and waits
	// keepaliveTimeout; allow one more period for the ping's timer
	// and a loaded machine.
	if took > limit+keepaliveTime+2*time.Second {
		t.Errorf("leases gone in %v, want within keepalive time + timeout (%v) and a little", took, limit)
	}
	for _, w := range ws {
		c.killWorker(w, "done")
	}
	g, ok := c.goroutinesUntil(10*time.Second, func(n int) bool { return n <= base.goroutines+5 })
	t.Logf("registryd goroutines %d after, %d idle before", g, base.goroutines)
	if !ok {
		t.Errorf("goroutines %d, idle baseline %d", g, base.goroutines)
	}
	var now figures
	c.collect()
	if now, err = c.figures(); err == nil && now.objects != 0 {
		t.Errorf("a forced collection after every lease ended left %d objects", now.objects)
	}
}
