package lease_test

import (
	"errors"
	"testing"
	"time"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

var (
	alice = auth.Identity{Name: "alice", Role: auth.RoleClient}
	bob   = auth.Identity{Name: "bob", Role: auth.RoleClient}
	root  = auth.Identity{Name: "root", Role: auth.RoleAdmin}
)

// holdings is what a refused request must leave as it was: every lease
// with its pins, and the registry's counts.
func holdings(f *fixture) (leases []lease.Info, st registry.Stats) {
	return f.m.List(), f.reg.Stats()
}

func sameHoldings(t *testing.T, f *fixture, leases []lease.Info, st registry.Stats) {
	t.Helper()
	now, nst := holdings(f)
	if len(now) != len(leases) {
		t.Fatalf("%d leases, want %d", len(now), len(leases))
	}
	was := make(map[string]lease.Info, len(leases)) // List's order is the open times', equal under a fake clock
	for _, in := range leases {
		was[in.ID] = in
	}
	for _, in := range now {
		if in != was[in.ID] {
			t.Errorf("lease %+v, want %+v", in, was[in.ID])
		}
	}
	if nst.Puts != st.Puts || nst.Pins != st.Pins || nst.HeldBytes != st.HeldBytes ||
		nst.Objects[registry.Pinned] != st.Objects[registry.Pinned] || nst.Objects[registry.Weak] != st.Objects[registry.Weak] {
		t.Errorf("registry changed:\nbefore %+v\nafter  %+v", st, nst)
	}
}

// TestOnlyTheOwnerOrAnAdminMayUseALease: another client identity may not
// resume alice's lease, Put into it or ResolvePin with it: each is a
// *lease.NotOwnedError naming the lease, and alice's lease, which holds
// pins, and the registry are unchanged. Alice and an admin may.
func TestOnlyTheOwnerOrAnAdminMayUseALease(t *testing.T) {
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Client: "alice's", Identity: alice, Grace: time.Minute})
	held := f.put(t)
	pin(t, s, held.Handle)
	if _, err := f.m.Put(alice, s.ID(), []byte("alice's own"), registry.Meta{}); err != nil {
		t.Fatal(err)
	}
	weak := f.put(t)

	calls := []struct {
		name string
		call func(who auth.Identity) error
	}{
		{"resume", func(who auth.Identity) error {
			rs, err := f.m.Open(lease.OpenParams{Resume: s.ID(), Identity: who})
			if err == nil && who != alice && !who.Admin() {
				rs.Detach()
			}
			return err
		}},
		{"Put", func(who auth.Identity) error {
			_, err := f.m.Put(who, s.ID(), []byte("into alice's lease"), registry.Meta{})
			return err
		}},
		{"PutPayload", func(who auth.Identity) error {
			_, err := f.m.PutPayload(who, s.ID(), registry.Payload{More: [][]byte{[]byte("in"), []byte("pieces")}}, registry.Meta{})
			return err
		}},
		{"ResolvePin of a WEAK object", func(who auth.Identity) error {
			_, err := f.m.ResolvePin(who, s.ID(), weak.Handle)
			return err
		}},
		{"ResolvePin of an object alice pins", func(who auth.Identity) error {
			_, err := f.m.ResolvePin(who, s.ID(), held.Handle)
			return err
		}},
		{"Check", func(who auth.Identity) error { return f.m.Check(who, s.ID()) }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			leases, st := holdings(f)
			err := c.call(bob)
			var no *lease.NotOwnedError
			if !errors.As(err, &no) || no.LeaseID != s.ID() || no.Identity != "bob" {
				t.Fatalf("bob: %v, want a *lease.NotOwnedError for %s", err, s.ID())
			}
			sameHoldings(t, f, leases, st)
			f.wantPinned(t, held.Handle, 1)
		})
	}
	// The owner may; resuming takes the stream over, so it goes last.
	for _, who := range []auth.Identity{alice, root} {
		if _, err := f.m.Put(who, s.ID(), []byte("allowed"), registry.Meta{}); err != nil {
			t.Errorf("%s Put: %v", who.Name, err)
		}
		if _, err := f.m.ResolvePin(who, s.ID(), held.Handle); err != nil {
			t.Errorf("%s ResolvePin: %v", who.Name, err)
		}
	}
	rs, err := f.m.Open(lease.OpenParams{Resume: s.ID(), Identity: root})
	if err != nil {
		t.Fatalf("admin resume: %v", err)
	}
	if in := rs.Info(); in.Identity != "alice" {
		t.Errorf("resumed by an admin, the lease is %q's; want alice's", in.Identity)
	}
}

// TestPutRecordsTheCallerAsOwner: an object put into a lease is the
// caller's, and the lease says whose it is.
func TestPutRecordsTheCallerAsOwner(t *testing.T) {
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Identity: alice})
	if got := s.Info().Identity; got != "alice" {
		t.Errorf("Info.Identity = %q, want alice", got)
	}
	for _, who := range []auth.Identity{alice, root} {
		info, err := f.m.Put(who, s.ID(), []byte("owned"), registry.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		if info.Owner != who.Name {
			t.Errorf("Put by %s: owner %q", who.Name, info.Owner)
		}
	}
}

// TestMaxLeasesPerIdentity: an identity may own MaxLeasesPerIdentity
// live leases (detached ones count); one more is a *registry.LimitError
// for IDENTITY_LEASE_LIMIT naming it, changing nothing; another identity
// and anonymous are not held back; ending one makes room; resuming is
// not a new lease.
func TestMaxLeasesPerIdentity(t *testing.T) {
	f := newFixture(t, lease.Config{MaxLeasesPerIdentity: 2})
	a1 := f.open(t, lease.OpenParams{Identity: alice})
	a2 := f.open(t, lease.OpenParams{Identity: alice, Grace: time.Minute})
	pin(t, a1, f.put(t).Handle)
	a2.Detach()
	b := f.open(t, lease.OpenParams{Identity: bob})

	leases, st := holdings(f)
	_, err := f.m.Open(lease.OpenParams{Identity: alice})
	var lim *registry.LimitError
	if !errors.As(err, &lim) {
		t.Fatalf("alice's third Open: %v, want *registry.LimitError", err)
	}
	if *lim != (registry.LimitError{Limit: lease.LimitLeasesPerIdentity, Max: 2, Want: 3, Identity: "alice"}) {
		t.Errorf("limit error %+v", lim)
	}
	sameHoldings(t, f, leases, st)
	if n := f.m.Owned("alice"); n != 2 {
		t.Errorf("alice owns %d leases, want 2", n)
	}

	// Others are not held back: bob has room, anonymous has no limit.
	f.open(t, lease.OpenParams{Identity: bob})
	for range 3 {
		f.open(t, lease.OpenParams{Identity: auth.Anonymous})
	}
	// Resuming is no new lease; ending one makes room.
	if _, err := f.m.Open(lease.OpenParams{Resume: a2.ID(), Identity: alice}); err != nil {
		t.Fatalf("resume at the limit: %v", err)
	}
	if _, err := a1.Close(0); err != nil {
		t.Fatal(err)
	}
	f.open(t, lease.OpenParams{Identity: alice})
	if _, err := b.Close(0); err != nil {
		t.Fatal(err)
	}
	if n := f.m.Owned("bob"); n != 1 {
		t.Errorf("bob owns %d leases, want 1", n)
	}
}

// TestOwnedCountsGoToZeroHoweverLeasesEnd: whether closed, dropped,
// expired, revoked or shut down, an ended lease is no longer counted, and
// an identity with none left has no entry.
func TestOwnedCountsGoToZeroHoweverLeasesEnd(t *testing.T) {
	f := newFixture(t, lease.Config{MaxLeasesPerIdentity: 10})
	closed := f.open(t, lease.OpenParams{Identity: alice})
	dropped := f.open(t, lease.OpenParams{Identity: alice})
	revoked := f.open(t, lease.OpenParams{Identity: alice})
	expiring := f.open(t, lease.OpenParams{Identity: alice, Grace: time.Millisecond})
	f.open(t, lease.OpenParams{Identity: alice}) // ended by Shutdown
	if _, err := closed.Close(0); err != nil {
		t.Fatal(err)
	}
	dropped.Detach()
	if _, err := f.m.Revoke(revoked.ID(), "test"); err != nil {
		t.Fatal(err)
	}
	expiring.Detach()
	deadline := time.Now().Add(10 * time.Second)
	for f.m.Owned("alice") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("alice owns %d leases, want 1 (the grace of 1ms is over)", f.m.Owned("alice"))
		}
		time.Sleep(time.Millisecond)
	}
	f.m.Shutdown()
	if n := f.m.Owned("alice"); n != 0 {
		t.Errorf("after Shutdown alice owns %d leases, want 0", n)
	}
}
