package lease_test

import (
	"errors"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// badHandle is a handle that Pin must fail on, with a check of the exact
// error.
type badHandle struct {
	name   string
	handle string
	isErr  func(error) bool
}

func errIs(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

// makeBadHandles makes one of each kind of handle that cannot be pinned.
func makeBadHandles(t *testing.T, f *fixture) []badHandle {
	t.Helper()
	collected := f.put(t)
	f.wantCollected(t, collected.Handle)
	deleted := f.put(t)
	if _, _, err := f.reg.Delete(deleted.ID, false); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	old, err := handle.NewCodec(handle.Config{Key: testKey, Epoch: 99})
	if err != nil {
		t.Fatal(err)
	}
	_, restarted := old.New(handle.Object)
	_, leaseID := f.codec.New(handle.Lease)
	return []badHandle{
		{"malformed", "obj_not-a-handle", errIs(handle.ErrMalformed)},
		{"empty", "", errIs(handle.ErrMalformed)},
		{"lease id as object handle", leaseID, errIs(handle.ErrMalformed)},
		{"never issued", foreignHandle(t), errIs(handle.ErrUnknown)},
		{"collected", collected.Handle, errIs(registry.ErrCollected)},
		{"deleted", deleted.Handle, errIs(registry.ErrDeleted)},
		{"earlier run", restarted, func(err error) bool {
			var re *handle.RestartedError
			return errors.As(err, &re)
		}},
	}
}

func TestPinReportsEachHandleInOrder(t *testing.T) {
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Client: "t"})
	bad := makeBadHandles(t, f) // collects: put what must live after it
	o1, o2 := f.put(t), f.put(t)

	handles := []string{o1.Handle, o1.Handle}
	for _, b := range bad {
		handles = append(handles, b.handle)
	}
	handles = append(handles, o2.Handle)

	rs, err := s.Pin(handles)
	if err != nil {
		t.Fatalf("Pin: %v", err)
	}
	if len(rs) != len(handles) {
		t.Fatalf("Pin gave %d results for %d handles", len(rs), len(handles))
	}
	for i, r := range rs {
		if r.Handle != handles[i] {
			t.Errorf("result %d is for %q, want %q (results in request order)", i, r.Handle, handles[i])
		}
	}
	check := func(i int, want lease.Outcome, what string) {
		t.Helper()
		if rs[i].Outcome != want || rs[i].Err != nil {
			t.Errorf("%s: outcome %v, err %v; want %v, nil", what, rs[i].Outcome, rs[i].Err, want)
		}
		if rs[i].Info.State != registry.Pinned || rs[i].Info.Pins != 1 {
			t.Errorf("%s: info state %v pins %d; want PINNED, 1", what, rs[i].Info.State, rs[i].Info.Pins)
		}
	}
	check(0, lease.Pinned, "first pin")
	check(1, lease.AlreadyPinned, "duplicate pin")
	for j, b := range bad {
		r := rs[2+j]
		if r.Outcome != lease.Failed || !b.isErr(r.Err) {
			t.Errorf("%s: outcome %v, err %v; want Failed with the matching error", b.name, r.Outcome, r.Err)
		}
	}
	check(len(rs)-1, lease.Pinned, "pin after failures")

	if got := s.Info().Pins; got != 2 {
		t.Errorf("lease pins = %d, want 2", got)
	}
	f.wantPinned(t, o1.Handle, 1) // a duplicate does not count twice
	f.wantPinned(t, o2.Handle, 1)
	if st := f.reg.Stats(); st.Pins != 2 {
		t.Errorf("registry pins = %d, want 2", st.Pins)
	}
}

func TestPinFailureChangesNothing(t *testing.T) {
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Client: "t"})
	held := f.put(t)
	pin(t, s, held.Handle)

	for _, b := range makeBadHandles(t, f) {
		t.Run(b.name, func(t *testing.T) {
			before := f.reg.Stats()
			rs, err := s.Pin([]string{b.handle})
			if err != nil {
				t.Fatalf("Pin: %v", err)
			}
			if rs[0].Outcome != lease.Failed || !b.isErr(rs[0].Err) {
				t.Fatalf("outcome %v, err %v; want Failed with the matching error", rs[0].Outcome, rs[0].Err)
			}
			after := f.reg.Stats()
			if after.Pins != before.Pins || after.Objects[registry.Pinned] != before.Objects[registry.Pinned] ||
				after.Bytes[registry.Pinned] != before.Bytes[registry.Pinned] || after.Puts != before.Puts {
				t.Errorf("failed pin changed registry stats: %+v → %+v", before, after)
			}
			if got := s.Info().Pins; got != 1 {
				t.Errorf("lease pins = %d after a failed pin, want 1", got)
			}
			f.wantPinned(t, held.Handle, 1)
		})
	}
}

func TestPinLimitIsPerLeaseAndSparesRepins(t *testing.T) {
	f := newFixture(t, lease.Config{MaxPinsPerLease: 2})
	s := f.open(t, lease.OpenParams{Client: "t"})
	a, b, c := f.put(t), f.put(t), f.put(t)

	rs, err := s.Pin([]string{a.Handle, b.Handle, c.Handle, a.Handle})
	if err != nil {
		t.Fatalf("Pin: %v", err)
	}
	want := []lease.Outcome{lease.Pinned, lease.Pinned, lease.Failed, lease.AlreadyPinned}
	for i, r := range rs {
		if r.Outcome != want[i] {
			t.Errorf("result %d: outcome %v, want %v", i, r.Outcome, want[i])
		}
	}
	wantLimit("LEASE_PIN_LIMIT", 2, 3)(t, rs[2].Err)
	f.wantWeak(t, c.Handle)
	if st := f.reg.Stats(); st.Pins != 2 {
		t.Errorf("registry pins = %d, want 2", st.Pins)
	}
	if got := s.Info().Pins; got != 2 {
		t.Errorf("lease pins = %d, want 2", got)
	}

	// Another lease has its own budget.
	other := f.open(t, lease.OpenParams{Client: "other"})
	pin(t, other, c.Handle)

	// Unpinning frees room in this one.
	if rs, err := s.Unpin([]string{a.Handle}, 0); err != nil || rs[0].Outcome != lease.Unpinned {
		t.Fatalf("Unpin = %+v, %v", rs, err)
	}
	pin(t, s, c.Handle)
	f.wantPinned(t, c.Handle, 2)
}

func TestUnpinReportsEachHandleInOrder(t *testing.T) {
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Client: "t"})
	other := f.open(t, lease.OpenParams{Client: "other"})
	collected := f.put(t)
	f.wantCollected(t, collected.Handle) // before putting what must live
	mine, kept, theirs, free := f.put(t), f.put(t), f.put(t), f.put(t)
	pin(t, s, mine.Handle, kept.Handle)
	pin(t, other, theirs.Handle)

	handles := []string{mine.Handle, mine.Handle, theirs.Handle, free.Handle, "obj_???", collected.Handle, foreignHandle(t)}
	rs, err := s.Unpin(handles, 0)
	if err != nil {
		t.Fatalf("Unpin: %v", err)
	}
	tests := []struct {
		name  string
		want  lease.Outcome
		isErr func(error) bool
		state registry.State
		pins  int
	}{
		{"own pin", lease.Unpinned, nil, registry.Weak, 0},
		{"own pin again", lease.NotPinned, nil, registry.Weak, 0},
		{"another lease's pin", lease.NotPinned, nil, registry.Pinned, 1},
		{"unpinned object", lease.NotPinned, nil, registry.Weak, 0},
		{"malformed", lease.Failed, errIs(handle.ErrMalformed), 0, 0},
		{"collected", lease.Failed, errIs(registry.ErrCollected), 0, 0},
		{"never issued", lease.Failed, errIs(handle.ErrUnknown), 0, 0},
	}
	if len(rs) != len(tests) {
		t.Fatalf("Unpin gave %d results for %d handles", len(rs), len(handles))
	}
	for i, tt := range tests {
		r := rs[i]
		if r.Handle != handles[i] || r.Outcome != tt.want {
			t.Errorf("%s: result for %q outcome %v; want for %q, %v", tt.name, r.Handle, r.Outcome, handles[i], tt.want)
		}
		if tt.isErr != nil {
			if !tt.isErr(r.Err) {
				t.Errorf("%s: err %v, not the expected one", tt.name, r.Err)
			}
			continue
		}
		if r.Err != nil {
			t.Errorf("%s: err %v, want nil", tt.name, r.Err)
		}
		if r.Info.State != tt.state || r.Info.Pins != tt.pins {
			t.Errorf("%s: info state %v pins %d; want %v, %d", tt.name, r.Info.State, r.Info.Pins, tt.state, tt.pins)
		}
	}

	// What was not this lease's to unpin is as it was.
	f.wantPinned(t, theirs.Handle, 1)
	f.wantWeak(t, free.Handle)
	f.wantPinned(t, kept.Handle, 1)
	if got := s.Info().Pins; got != 1 {
		t.Errorf("lease pins = %d, want 1", got)
	}
	if got := other.Info().Pins; got != 1 {
		t.Errorf("other lease pins = %d, want 1", got)
	}
	if st := f.reg.Stats(); st.Pins != 2 {
		t.Errorf("registry pins = %d, want 2", st.Pins)
	}
	f.wantCollected(t, mine.Handle, free.Handle)
	f.wantSurvives(t, theirs.Handle, 1)
}

func TestUnpinOfForceDeletedObjectStillLetsGo(t *testing.T) {
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Client: "t"})
	o := f.put(t)
	pin(t, s, o.Handle)
	if _, _, err := f.reg.Delete(o.ID, true); err != nil {
		t.Fatal(err)
	}
	// The operator's DropPins has not reached the lease yet.
	rs, err := s.Unpin([]string{o.Handle}, 0)
	if err != nil || rs[0].Outcome != lease.Unpinned {
		t.Fatalf("Unpin = %+v, %v; want Unpinned", rs, err)
	}
	if got := s.Info().Pins; got != 0 {
		t.Errorf("lease pins = %d, want 0", got)
	}
}

func TestCloseReleasesPinsAndEndsSession(t *testing.T) {
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Client: "t"})
	o := f.put(t)
	pin(t, s, o.Handle)
	if n, err := s.Close(0); err != nil || n != 1 {
		t.Fatalf("Close = %d, %v; want 1", n, err)
	}
	if isDone(s.Done()) {
		t.Error("Close closed Done, which is only for ends from outside")
	}
	if _, err := s.Close(0); !errors.Is(err, lease.ErrEnded) {
		t.Errorf("second Close: err %v, want ErrEnded", err)
	}
	if _, err := s.Pin([]string{o.Handle}); !errors.Is(err, lease.ErrEnded) {
		t.Errorf("Pin after Close: err %v, want ErrEnded", err)
	}
	if _, err := f.m.Open(lease.OpenParams{Resume: s.ID()}); !errors.Is(err, lease.ErrNotFound) {
		t.Errorf("resume after Close: err %v, want ErrNotFound", err)
	}
	f.wantNoLeases(t)
}

func TestTakeOverMovesLeaseToNewSession(t *testing.T) {
	f := newFixture(t, lease.Config{})
	a := f.open(t, lease.OpenParams{Client: "t", Grace: time.Minute, Peer: "old:1"})
	o1, o2 := f.put(t), f.put(t)
	pin(t, a, o1.Handle, o2.Handle)

	b, err := f.m.Open(lease.OpenParams{Resume: a.ID(), Peer: "new:2"})
	if err != nil {
		t.Fatalf("resume of an attached lease: %v", err)
	}
	if !b.Resumed() || b.ID() != a.ID() {
		t.Errorf("b: resumed %v, id %s; want true, %s", b.Resumed(), b.ID(), a.ID())
	}
	if !isDone(a.Done()) {
		t.Fatal("take-over did not close the old session's Done")
	}
	if cause, reason, released := a.Revocation(); cause != lease.CauseTakenOver || reason != "" || released != 0 {
		t.Errorf("a.Revocation() = %v, %q, %d; want CauseTakenOver, \"\", 0", cause, reason, released)
	}
	if isDone(b.Done()) {
		t.Error("the new session's Done is closed")
	}

	if _, err := a.Pin([]string{o1.Handle}); !errors.Is(err, lease.ErrTakenOver) {
		t.Errorf("a.Pin: err %v, want ErrTakenOver", err)
	}
	if _, err := a.Unpin([]string{o1.Handle}, 0); !errors.Is(err, lease.ErrTakenOver) {
		t.Errorf("a.Unpin: err %v, want ErrTakenOver", err)
	}
	if _, err := a.Close(0); !errors.Is(err, lease.ErrTakenOver) {
		t.Errorf("a.Close: err %v, want ErrTakenOver", err)
	}
	a.Detach() // the old stream's handler ending: must not touch b's lease

	in := b.Info()
	if !in.Attached || in.Peer != "new:2" || in.Pins != 2 || !in.ExpireAt.IsZero() {
		t.Errorf("after take-over: %+v; want attached to new:2 with 2 pins", in)
	}
	if ls := f.m.List(); len(ls) != 1 {
		t.Errorf("List() = %d leases, want 1", len(ls))
	}
	f.wantSurvives(t, o1.Handle, 1)
	f.wantSurvives(t, o2.Handle, 1)

	if n, err := b.Close(0); err != nil || n != 2 {
		t.Errorf("b.Close() = %d, %v; want 2", n, err)
	}
	f.wantNoLeases(t)
}
