package lease_test

import (
	"errors"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// shortGrace is a grace the tests wait out by polling.
const shortGrace = 50 * time.Millisecond

// expiryWait bounds how long a test polls for a short grace to run out,
// generous for a loaded machine under -race.
const expiryWait = 5 * time.Second

// TestLeaseEndLeavesNoPinBehind protects invariant 3: a lease that ends for
// any reason leaves no pin behind, so its objects become collectable.
func TestLeaseEndLeavesNoPinBehind(t *testing.T) {
	tests := []struct {
		name  string
		grace time.Duration
		// end ends s's lease and returns once it has ended.
		end func(t *testing.T, f *fixture, s *lease.Session)
	}{
		{"close", 0, func(t *testing.T, f *fixture, s *lease.Session) {
			if n, err := s.Close(0); err != nil || n != 3 {
				t.Fatalf("Close = %d, %v; want 3", n, err)
			}
		}},
		{"detach without grace", 0, func(t *testing.T, f *fixture, s *lease.Session) {
			s.Detach()
		}},
		{"detach with grace, then expiry", shortGrace, func(t *testing.T, f *fixture, s *lease.Session) {
			s.Detach()
			eventually(t, expiryWait, "grace runs out", gone(f.m, s.ID()))
		}},
		{"revoke while attached", time.Minute, func(t *testing.T, f *fixture, s *lease.Session) {
			if n, err := f.m.Revoke(s.ID(), "r"); err != nil || n != 3 {
				t.Fatalf("Revoke = %d, %v; want 3", n, err)
			}
		}},
		{"revoke while detached", time.Minute, func(t *testing.T, f *fixture, s *lease.Session) {
			s.Detach()
			if n, err := f.m.Revoke(s.ID(), "r"); err != nil || n != 3 {
				t.Fatalf("Revoke = %d, %v; want 3", n, err)
			}
		}},
		{"shutdown while attached", time.Minute, func(t *testing.T, f *fixture, s *lease.Session) {
			f.m.Shutdown()
		}},
		{"shutdown while detached", time.Minute, func(t *testing.T, f *fixture, s *lease.Session) {
			s.Detach()
			f.m.Shutdown()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, lease.Config{})
			s := f.open(t, lease.OpenParams{Client: "t", Grace: tt.grace})
			objs := []registry.Info{f.put(t), f.put(t), f.put(t)}
			var hs []string
			for _, o := range objs {
				hs = append(hs, o.Handle)
			}
			pin(t, s, hs...)
			for _, h := range hs {
				f.wantPinned(t, h, 1)
			}

			tt.end(t, f, s)

			for _, h := range hs {
				f.wantWeak(t, h)
			}
			f.wantNoLeases(t)
			if _, err := f.m.Lookup(s.ID()); !errors.Is(err, lease.ErrNotFound) {
				t.Errorf("Lookup of the ended lease: err %v, want ErrNotFound", err)
			}
			f.wantCollected(t, hs...)
		})
	}
}

func TestObjectLivesWhileAnyLeasePinsIt(t *testing.T) {
	tests := []struct {
		name        string
		first, last func(t *testing.T, f *fixture, s *lease.Session)
	}{
		{"close then close", closeSession, closeSession},
		{"revoke then detach", revokeSession, detachSession},
		{"detach then revoke", detachSession, revokeSession},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, lease.Config{})
			a := f.open(t, lease.OpenParams{Client: "a"})
			b := f.open(t, lease.OpenParams{Client: "b"})
			shared := f.put(t)
			pin(t, a, shared.Handle)
			pin(t, b, shared.Handle)
			f.wantPinned(t, shared.Handle, 2)

			tt.first(t, f, a)
			f.wantSurvives(t, shared.Handle, 1)

			tt.last(t, f, b)
			f.wantWeak(t, shared.Handle)
			f.wantNoLeases(t)
			f.wantCollected(t, shared.Handle)
		})
	}
}

func closeSession(t *testing.T, f *fixture, s *lease.Session) {
	t.Helper()
	if _, err := s.Close(0); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func detachSession(t *testing.T, f *fixture, s *lease.Session) {
	t.Helper()
	s.Detach()
}

func revokeSession(t *testing.T, f *fixture, s *lease.Session) {
	t.Helper()
	if _, err := f.m.Revoke(s.ID(), "r"); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
}

func TestGraceKeepsPinsUntilResume(t *testing.T) {
	f := newFixture(t, lease.Config{MaxGrace: time.Hour})
	s := f.open(t, lease.OpenParams{Client: "t", Grace: time.Minute, Peer: "a:1"})
	o1, o2 := f.put(t), f.put(t)
	pin(t, s, o1.Handle, o2.Handle)

	f.clock.Advance(3 * time.Second)
	detachedAt := f.clock.Now()
	s.Detach()

	ls := f.m.List()
	if len(ls) != 1 {
		t.Fatalf("List() = %+v, want the detached lease", ls)
	}
	in := ls[0]
	if in.ID != s.ID() || in.Attached || in.Peer != "" || in.Pins != 2 || !in.ExpireAt.Equal(detachedAt.Add(time.Minute)) {
		t.Errorf("detached lease = %+v; want detached, no peer, 2 pins, expiring at %v", in, detachedAt.Add(time.Minute))
	}
	if at, de := f.m.Counts(); at != 0 || de != 1 {
		t.Errorf("Counts() = %d, %d; want 0 attached, 1 detached", at, de)
	}
	// The old stream can do nothing more with it.
	if _, err := s.Pin([]string{o1.Handle}); !errors.Is(err, lease.ErrEnded) {
		t.Errorf("Pin on the detached session: err %v, want ErrEnded", err)
	}
	f.wantSurvives(t, o1.Handle, 1)
	f.wantSurvives(t, o2.Handle, 1)

	r, err := f.m.Open(lease.OpenParams{Client: "ignored", Resume: s.ID(), Peer: "b:2"})
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if !r.Resumed() || r.ID() != s.ID() {
		t.Errorf("resumed session: Resumed %v, id %s; want true, %s", r.Resumed(), r.ID(), s.ID())
	}
	in = r.Info()
	if !in.Attached || in.Peer != "b:2" || in.Pins != 2 || !in.ExpireAt.IsZero() || in.Client != "t" {
		t.Errorf("resumed lease = %+v; want attached to b:2, client t, 2 pins, no expiry", in)
	}
	// The resumed session owns the pins: it can unpin them.
	rs, err := r.Unpin([]string{o1.Handle}, 0)
	if err != nil || rs[0].Outcome != lease.Unpinned {
		t.Fatalf("Unpin on the resumed session = %+v, %v", rs, err)
	}
	f.wantCollected(t, o1.Handle)
	f.wantSurvives(t, o2.Handle, 1)
}

// TestResumeStopsGraceTimer checks that a resumed lease outlives the grace
// it was detached with. A second lease, detached just after it with a
// longer grace, marks when the first grace has surely run out.
func TestResumeStopsGraceTimer(t *testing.T) {
	f := newFixture(t, lease.Config{})
	const g = 200 * time.Millisecond // room to resume in time on a loaded machine
	s := f.open(t, lease.OpenParams{Client: "t", Grace: g})
	marker := f.open(t, lease.OpenParams{Client: "marker", Grace: 2 * g})
	o := f.put(t)
	pin(t, s, o.Handle)

	s.Detach()
	marker.Detach()
	r, err := f.m.Open(lease.OpenParams{Resume: s.ID()})
	if err != nil {
		t.Fatalf("resume within the grace: %v", err)
	}

	eventually(t, expiryWait, "the marker's longer grace runs out", gone(f.m, marker.ID()))
	in, err := f.m.Lookup(s.ID())
	if err != nil {
		t.Fatalf("resumed lease ended when its old grace ran out: %v", err)
	}
	if !in.Attached || in.Pins != 1 {
		t.Errorf("resumed lease = %+v; want attached with 1 pin", in)
	}
	f.wantSurvives(t, o.Handle, 1)
	if _, err := r.Close(0); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestRedetachGetsAFreshGrace checks that a lease resumed and detached
// again is not ended by the timer of its first detach.
//
// Timeline, with g = the lease's grace: detach at 0; resume after the
// marker m1 (grace g/2) expires; detach again at once, so the lease's new
// deadline is after 3g/2; the marker m2 (grace 7g/6) expires after the old
// deadline g and well before the new one.
func TestRedetachGetsAFreshGrace(t *testing.T) {
	const g = 400 * time.Millisecond
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Client: "t", Grace: g})
	m1 := f.open(t, lease.OpenParams{Client: "m1", Grace: g / 2})
	m2 := f.open(t, lease.OpenParams{Client: "m2", Grace: g * 7 / 6})
	o := f.put(t)
	pin(t, s, o.Handle)

	s.Detach()
	m1.Detach()
	m2.Detach()
	eventually(t, expiryWait, "m1's grace runs out", gone(f.m, m1.ID()))
	r, err := f.m.Open(lease.OpenParams{Resume: s.ID()})
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	r.Detach()

	eventually(t, expiryWait, "m2's grace runs out", gone(f.m, m2.ID()))
	if _, err := f.m.Lookup(s.ID()); err != nil {
		t.Fatalf("the first detach's timer ended the re-detached lease: %v", err)
	}
	f.wantPinned(t, o.Handle, 1)

	// The second grace does run out.
	eventually(t, expiryWait, "the second grace runs out", gone(f.m, s.ID()))
	f.wantNoLeases(t)
	f.wantCollected(t, o.Handle)
}

// TestTinyGraceExpires detaches leases whose grace is so short that the
// timer fires before Detach has finished setting it up.
func TestTinyGraceExpires(t *testing.T) {
	f := newFixture(t, lease.Config{})
	var hs []string
	for range 50 {
		s := f.open(t, lease.OpenParams{Client: "t", Grace: time.Nanosecond})
		o := f.put(t)
		pin(t, s, o.Handle)
		hs = append(hs, o.Handle)
		s.Detach()
	}
	eventually(t, expiryWait, "every tiny grace runs out", func() bool { return len(f.m.List()) == 0 })
	f.wantNoLeases(t)
	f.wantCollected(t, hs...)
}

func TestResumeRefusesWhatIsNotALiveLease(t *testing.T) {
	f := newFixture(t, lease.Config{})
	closed := f.open(t, lease.OpenParams{Client: "closed", Grace: time.Minute})
	if _, err := closed.Close(0); err != nil {
		t.Fatal(err)
	}
	revoked := f.open(t, lease.OpenParams{Client: "revoked", Grace: time.Minute})
	revoked.Detach()
	if _, err := f.m.Revoke(revoked.ID(), "r"); err != nil {
		t.Fatal(err)
	}
	expired := f.open(t, lease.OpenParams{Client: "expired", Grace: shortGrace})
	expired.Detach()
	eventually(t, expiryWait, "grace runs out", gone(f.m, expired.ID()))
	noGrace := f.open(t, lease.OpenParams{Client: "no grace"})
	noGrace.Detach()

	tests := []struct {
		name string
		id   string
		want error
	}{
		{"malformed", "lse_bad", handle.ErrMalformed},
		{"never issued", foreignLeaseID(t), lease.ErrNotFound},
		{"closed", closed.ID(), lease.ErrNotFound},
		{"revoked while detached", revoked.ID(), lease.ErrNotFound},
		{"grace ran out", expired.ID(), lease.ErrNotFound},
		{"detached with no grace", noGrace.ID(), lease.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := f.m.Open(lease.OpenParams{Client: "t", Resume: tt.id})
			if !errors.Is(err, tt.want) || s != nil {
				t.Errorf("resume %q: %v, %v; want nil, %v", tt.id, s, err, tt.want)
			}
		})
	}
	f.wantNoLeases(t)
}
