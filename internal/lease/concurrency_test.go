package lease_test

import (
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// TestConcurrentLeasesLeaveNoPinBehind churns leases from several
// goroutines over one shared set of objects, ending them every way there
// is while an admin revokes at random and the collector runs, and then
// checks that nothing stays pinned.
func TestConcurrentLeasesLeaveNoPinBehind(t *testing.T) {
	const (
		workers  = 6
		maxIters = 400 // per worker: bounds the test on a fast machine
		churn    = 300 * time.Millisecond
	)
	f := newFixture(t, lease.Config{MaxGrace: time.Minute})

	// Half the objects are kept alive by a keeper lease throughout, so
	// they must never be collected; the other half are the collector's
	// whenever nobody pins them, and are replaced after each collection so
	// that objects keep going WEAK → PINNED → WEAK all along.
	keeper := f.open(t, lease.OpenParams{Client: "keeper"})
	var kept []string
	for range 8 {
		info, err := f.m.Put(auth.Anonymous, keeper.ID(), []byte("kept alive by the keeper lease"), registry.Meta{})
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		kept = append(kept, info.Handle)
	}
	free := &objectPool{}
	free.refill(t, f, 8)

	stop := make(chan struct{})
	var admins sync.WaitGroup
	admins.Go(func() { // an operator revoking leases at random
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, in := range f.m.List() {
				if in.ID != keeper.ID() && rng.IntN(4) == 0 {
					if _, err := f.m.Revoke(in.ID, "chaos"); err != nil && !errors.Is(err, lease.ErrNotFound) {
						t.Errorf("Revoke: %v", err)
					}
				}
			}
			f.m.Counts()
			runtime.Gosched()
		}
	})
	admins.Go(func() { // the collector, now and then
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				f.reg.Collect()
				for _, h := range kept {
					if _, err := f.reg.Resolve(h); err != nil {
						t.Errorf("kept object %s lost while pinned: %v", h, err)
					}
				}
				free.refill(t, f, 8)
			}
		}
	})

	deadline := time.Now().Add(churn)
	var workersWG sync.WaitGroup
	for w := range workers {
		workersWG.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for i := 0; i < maxIters && time.Now().Before(deadline); i++ {
				churnOne(t, f, rng, append(free.current(), kept...), i%5)
			}
		})
	}
	workersWG.Wait()
	close(stop)
	admins.Wait()

	// Short graces run out by themselves; then only the keeper is left.
	eventually(t, expiryWait, "every churned lease ends", func() bool { return len(f.m.List()) == 1 })
	if at, de := f.m.Counts(); at != 1 || de != 0 { // kept as leases change, never counted: check it agrees
		t.Errorf("Counts() = %d, %d after the churn; want the keeper alone: 1, 0", at, de)
	}
	if n, err := keeper.Close(0); err != nil || n != len(kept) {
		t.Fatalf("keeper.Close() = %d, %v; want %d", n, err, len(kept))
	}
	if at, de := f.m.Counts(); at != 0 || de != 0 {
		t.Errorf("Counts() = %d, %d with no lease; want 0, 0", at, de)
	}
	f.wantNoLeases(t)
	all := append(free.everyOne(), kept...)
	t.Logf("%d free objects over the run; %d collected", len(all)-len(kept), f.reg.Stats().Collected)
	for _, h := range all {
		info, err := f.reg.Stat(h)
		switch {
		case errors.Is(err, registry.ErrCollected):
			// A free object that nobody pinned at some collection.
		case err != nil:
			t.Errorf("Stat(%s): %v", h, err)
		case info.State != registry.Weak || info.Pins != 0:
			t.Errorf("object %s: state %v, pins %d; want WEAK, 0", h, info.State, info.Pins)
		}
	}
	f.wantCollected(t, all...)
}

// objectPool is a set of unpinned objects that the collector may take,
// topped up after each collection.
type objectPool struct {
	mu    sync.Mutex
	live  []string // guarded by mu; not known to be collected
	every []string // guarded by mu; every handle ever in the pool
}

// refill drops the pool's collected objects and puts new ones up to n.
func (p *objectPool) refill(t *testing.T, f *fixture, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live = slices.DeleteFunc(p.live, func(h string) bool {
		_, err := f.reg.Stat(h)
		return errors.Is(err, registry.ErrCollected)
	})
	for len(p.live) < n {
		info, err := f.reg.Put([]byte("free for the collector to take"), registry.Meta{}, nil)
		if err != nil {
			t.Errorf("Put: %v", err)
			return
		}
		p.live = append(p.live, info.Handle)
		p.every = append(p.every, info.Handle)
	}
}

func (p *objectPool) current() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.live)
}

func (p *objectPool) everyOne() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.every)
}

// churnOne opens one lease, uses it, and ends it the way mode says. The
// lease may be revoked by the admin goroutine at any point; that is not an
// error.
func churnOne(t *testing.T, f *fixture, rng *rand.Rand, objs []string, mode int) {
	grace := time.Duration(0)
	switch mode {
	case 2:
		grace = 5 * time.Millisecond
	case 3, 4:
		grace = time.Minute
	}
	s, err := f.m.Open(lease.OpenParams{Client: "churn", Grace: grace})
	if err != nil {
		t.Errorf("Open: %v", err)
		return
	}
	use := func(s *lease.Session) bool {
		for range 1 + rng.IntN(3) {
			hs := pickSome(rng, objs)
			rs, err := s.Pin(hs)
			if err != nil {
				return endedFromOutside(t, err)
			}
			for _, r := range rs {
				if r.Outcome == lease.Failed && !errors.Is(r.Err, registry.ErrCollected) {
					t.Errorf("Pin(%s): %v", r.Handle, r.Err)
				}
			}
			if _, err := s.Unpin(pickSome(rng, hs), 0); err != nil {
				return endedFromOutside(t, err)
			}
		}
		if rng.IntN(2) == 0 {
			if _, err := f.m.Put(auth.Anonymous, s.ID(), []byte("made under a lease by a churning worker"), registry.Meta{}); err != nil {
				var nl *lease.NotLiveError
				if !errors.As(err, &nl) {
					t.Errorf("Put: %v", err)
				}
			}
		}
		return true
	}
	if !use(s) {
		s.Detach() // as the stream handler does however it ends
		return
	}
	switch mode {
	case 0: // the client closes
		if _, err := s.Close(0); err != nil {
			endedFromOutside(t, err)
		}
	case 1, 2: // the stream drops: released now, or when the grace runs out
		s.Detach()
	case 3: // the stream drops and an operator revokes what is left
		s.Detach()
		if _, err := f.m.Revoke(s.ID(), "cleanup"); err != nil && !errors.Is(err, lease.ErrNotFound) {
			t.Errorf("Revoke: %v", err)
		}
	case 4: // the stream drops, the client comes back and closes
		s.Detach()
		r, err := f.m.Open(lease.OpenParams{Resume: s.ID()})
		if err != nil {
			if !errors.Is(err, lease.ErrNotFound) {
				t.Errorf("resume: %v", err)
			}
			return
		}
		if use(r) {
			if _, err := r.Close(0); err != nil {
				endedFromOutside(t, err)
			}
		}
		r.Detach()
	}
}

// endedFromOutside checks that err says the lease was ended by someone
// else, and reports false so the caller stops using the session.
func endedFromOutside(t *testing.T, err error) bool {
	if !errors.Is(err, lease.ErrEnded) && !errors.Is(err, lease.ErrTakenOver) {
		t.Errorf("session call: %v, want ErrEnded or ErrTakenOver", err)
	}
	return false
}

// pickSome returns a random non-empty subset of hs, possibly with
// repeats.
func pickSome(rng *rand.Rand, hs []string) []string {
	out := make([]string, 1+rng.IntN(len(hs)))
	for i := range out {
		out[i] = hs[rng.IntN(len(hs))]
	}
	return out
}

// TestPutRacingLeaseEndLeavesNoPin races Manager.Put against the end of
// its lease: a Put that loses must fail as NotLive, never store an object
// pinned by a lease that is gone. The lease pins many objects so that its
// end holds it for a while, and a Put that found the lease meanwhile
// queues behind it.
func TestPutRacingLeaseEndLeavesNoPin(t *testing.T) {
	f := newFixture(t, lease.Config{})
	hs := keptObjects(t, f, 64)
	data := []byte("stored while the lease ends")
	for i := range 200 {
		s := f.open(t, lease.OpenParams{Client: "t"})
		pin(t, s, hs...)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				<-start
				for range 3 {
					_, err := f.m.Put(auth.Anonymous, s.ID(), data, registry.Meta{})
					var nl *lease.NotLiveError
					if err != nil && !errors.As(err, &nl) {
						t.Errorf("Put: %v, want success or *lease.NotLiveError", err)
					}
				}
			})
		}
		close(start)
		if i%2 == 0 {
			if _, err := s.Close(0); err != nil {
				t.Fatalf("Close: %v", err)
			}
		} else if _, err := f.m.Revoke(s.ID(), "r"); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		wg.Wait()
		if st := f.reg.Stats(); st.Pins != int64(len(hs)) {
			t.Fatalf("iteration %d: %d pins, want only the keeper's %d", i, st.Pins, len(hs))
		}
	}
}

// keptObjects puts n objects pinned by a keeper lease that lasts as long as
// the test, so that they can never be collected.
func keptObjects(t *testing.T, f *fixture, n int) []string {
	t.Helper()
	keeper := f.open(t, lease.OpenParams{Client: "keeper"})
	var hs []string
	for range n {
		o, err := f.m.Put(auth.Anonymous, keeper.ID(), []byte("kept alive by the keeper lease"), registry.Meta{})
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		hs = append(hs, o.Handle)
	}
	return hs
}

// TestResumeRacingRevokeLeavesNoPin races a client resuming its detached
// lease against an operator revoking it: a resume that loses must fail,
// never bring back a lease that has already let its pins go. The lease
// pins many objects so that the revoke holds it for a while, and a resume
// that found the lease meanwhile queues behind it.
func TestResumeRacingRevokeLeavesNoPin(t *testing.T) {
	f := newFixture(t, lease.Config{})
	hs := keptObjects(t, f, 64)
	for i := range 200 {
		s := f.open(t, lease.OpenParams{Client: "t", Grace: time.Minute})
		pin(t, s, hs...)
		s.Detach()
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			<-start
			r, err := f.m.Open(lease.OpenParams{Resume: s.ID()})
			if err != nil {
				if !errors.Is(err, lease.ErrNotFound) {
					t.Errorf("resume: %v, want success or ErrNotFound", err)
				}
				return
			}
			if _, err := r.Pin(hs[:1]); err != nil && !errors.Is(err, lease.ErrEnded) {
				t.Errorf("Pin: %v", err)
			}
			r.Detach() // its stream drops again: kept for its grace
		})
		close(start)
		if _, err := f.m.Revoke(s.ID(), "r"); err != nil && !errors.Is(err, lease.ErrNotFound) {
			t.Errorf("Revoke: %v", err)
		}
		wg.Wait()
		// A resume that won is a live lease again: end it by its id. One
		// that attached to the revoked lease could not be reached so.
		if _, err := f.m.Revoke(s.ID(), "r"); err != nil && !errors.Is(err, lease.ErrNotFound) {
			t.Errorf("Revoke: %v", err)
		}
		if st := f.reg.Stats(); st.Pins != int64(len(hs)) {
			t.Fatalf("iteration %d: %d pins, want only the keeper's %d", i, st.Pins, len(hs))
		}
	}
}
