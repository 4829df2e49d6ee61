package lease_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

func TestOpenGivesParsableLeaseIDThatListShows(t *testing.T) {
	f := newFixture(t, lease.Config{MaxGrace: time.Minute})
	opened := f.clock.Now()
	s := f.open(t, lease.OpenParams{Client: "worker-7", Grace: 10 * time.Second, Peer: "10.0.0.7:5555"})

	if !strings.HasPrefix(s.ID(), "lse_") {
		t.Errorf("lease id %q lacks the lse_ prefix", s.ID())
	}
	if _, err := f.m.ParseID(s.ID()); err != nil {
		t.Errorf("ParseID(%q): %v", s.ID(), err)
	}
	if s.Resumed() {
		t.Error("a new lease reports Resumed")
	}
	want := lease.Info{
		ID:       s.ID(),
		Client:   "worker-7",
		Opened:   opened,
		Grace:    10 * time.Second,
		Attached: true,
		Peer:     "10.0.0.7:5555",
	}
	ls := f.m.List()
	if len(ls) != 1 {
		t.Fatalf("List() = %+v, want one lease", ls)
	}
	if ls[0] != want {
		t.Errorf("List()[0] = %+v\nwant        %+v", ls[0], want)
	}
	if got, err := f.m.Lookup(s.ID()); err != nil || got != want {
		t.Errorf("Lookup = %+v, %v; want %+v", got, err, want)
	}
	if got := s.Info(); got != want {
		t.Errorf("Session.Info = %+v, want %+v", got, want)
	}
}

func TestParseIDRejectsWhatIsNotALeaseID(t *testing.T) {
	f := newFixture(t, lease.Config{})
	obj := f.put(t)
	tests := []struct {
		name string
		id   string
		want error
	}{
		{"empty", "", handle.ErrMalformed},
		{"garbage", "lse_not-a-lease", handle.ErrMalformed},
		{"object handle", obj.Handle, handle.ErrMalformed},
		{"other key", foreignLeaseID(t), handle.ErrUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.m.ParseID(tt.id); !errors.Is(err, tt.want) {
				t.Errorf("ParseID(%q): err %v, want %v", tt.id, err, tt.want)
			}
		})
	}
}

func TestOpenCapsGrace(t *testing.T) {
	tests := []struct {
		name     string
		maxGrace time.Duration
		ask      time.Duration
		want     time.Duration
	}{
		{"below the cap is kept", time.Minute, 10 * time.Second, 10 * time.Second},
		{"at the cap is kept", time.Minute, time.Minute, time.Minute},
		{"above the cap is cut to it", time.Minute, time.Hour, time.Minute},
		{"zero stays zero", time.Minute, 0, 0},
		{"negative becomes zero", time.Minute, -5 * time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, lease.Config{MaxGrace: tt.maxGrace})
			s := f.open(t, lease.OpenParams{Client: "t", Grace: tt.ask})
			if got := s.Info().Grace; got != tt.want {
				t.Errorf("grace asked %v under cap %v: got %v, want %v", tt.ask, tt.maxGrace, got, tt.want)
			}
		})
	}
}

func TestOpenCutsLongClientNamesToValidUTF8(t *testing.T) {
	tests := []struct {
		name   string
		client string
		want   string
	}{
		{"short name is kept", "reporter", "reporter"},
		{"exactly the limit is kept", strings.Repeat("a", 128), strings.Repeat("a", 128)},
		{"ASCII is cut to the limit", strings.Repeat("a", 300), strings.Repeat("a", 128)},
		// "€" is 3 bytes: 43 of them are 129 bytes; 42 fit in 126.
		{"never inside a rune", strings.Repeat("€", 43), strings.Repeat("€", 42)},
		{"two-byte runes fill the limit", strings.Repeat("é", 100), strings.Repeat("é", 64)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, lease.Config{})
			s := f.open(t, lease.OpenParams{Client: tt.client})
			got := s.Info().Client
			if got != tt.want {
				t.Errorf("client name cut to %q (%d bytes), want %q (%d bytes)", got, len(got), tt.want, len(tt.want))
			}
			if len(got) > lease.MaxClientNameBytes || !utf8.ValidString(got) {
				t.Errorf("client name %q: %d bytes, valid UTF-8 %v; want at most %d bytes of valid UTF-8",
					got, len(got), utf8.ValidString(got), lease.MaxClientNameBytes)
			}
		})
	}
}

func TestListIsOldestFirst(t *testing.T) {
	f := newFixture(t, lease.Config{})
	var want []string
	for range 40 { // more than one map group, so map order is not open order
		want = append(want, f.open(t, lease.OpenParams{Client: "t"}).ID())
		f.clock.Advance(time.Second)
	}
	ls := f.m.List()
	if len(ls) != len(want) {
		t.Fatalf("List() has %d leases, want %d", len(ls), len(want))
	}
	for i, in := range ls {
		if in.ID != want[i] {
			t.Fatalf("List()[%d] = %s, want %s (oldest first)", i, in.ID, want[i])
		}
	}
}

func TestCountsAndClientsReflectLiveLeases(t *testing.T) {
	f := newFixture(t, lease.Config{})
	a := f.open(t, lease.OpenParams{Client: "alpha", Grace: time.Minute})
	b := f.open(t, lease.OpenParams{Client: "beta", Grace: time.Minute})
	c := f.open(t, lease.OpenParams{Client: "gamma"})
	b.Detach()
	if _, err := c.Close(0); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if at, de := f.m.Counts(); at != 1 || de != 1 {
		t.Errorf("Counts() = %d attached, %d detached; want 1, 1", at, de)
	}
	ids := make(map[string]handle.ID)
	for _, s := range []*lease.Session{a, b, c} {
		id, err := f.m.ParseID(s.ID())
		if err != nil {
			t.Fatalf("ParseID: %v", err)
		}
		ids[s.Info().Client] = id
	}
	got := f.m.Clients([]handle.ID{ids["alpha"], ids["beta"], ids["gamma"]})
	want := map[handle.ID]lease.Holding{ids["alpha"]: {Client: "alpha"}, ids["beta"]: {Client: "beta"}}
	if len(got) != len(want) || got[ids["alpha"]].Client != "alpha" || got[ids["beta"]].Client != "beta" {
		t.Errorf("Clients() = %v, want %v (the closed lease left out)", got, want)
	}
}

func TestMaxLeasesLimitsLiveLeases(t *testing.T) {
	f := newFixture(t, lease.Config{MaxLeases: 2})
	a := f.open(t, lease.OpenParams{Client: "a"})
	b := f.open(t, lease.OpenParams{Client: "b", Grace: time.Minute})
	b.Detach() // a detached lease still counts

	_, err := f.m.Open(lease.OpenParams{Client: "c"})
	var lim *registry.LimitError
	if !errors.As(err, &lim) {
		t.Fatalf("third Open: err %v, want *registry.LimitError", err)
	}
	if lim.Limit != "LEASE_LIMIT" || lim.Max != 2 || lim.Want != 3 {
		t.Errorf("limit error = %+v, want LEASE_LIMIT max 2 want 3", lim)
	}
	if n := len(f.m.List()); n != 2 {
		t.Errorf("a refused Open left %d leases, want 2", n)
	}

	// Resuming is not a new lease: it works at the limit.
	rb, err := f.m.Open(lease.OpenParams{Resume: b.ID()})
	if err != nil {
		t.Fatalf("resume at the limit: %v", err)
	}
	// Ending a lease makes room again.
	if _, err := a.Close(0); err != nil {
		t.Fatalf("Close: %v", err)
	}
	f.open(t, lease.OpenParams{Client: "c"})
	if _, err := rb.Close(0); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestRevokeEndsLeaseAndTellsSession(t *testing.T) {
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Client: "t"})
	o1, o2 := f.put(t), f.put(t)
	pin(t, s, o1.Handle, o2.Handle)
	if isDone(s.Done()) {
		t.Fatal("Done closed before any revoke")
	}

	n, err := f.m.Revoke(s.ID(), "maintenance window")
	if err != nil || n != 2 {
		t.Fatalf("Revoke = %d, %v; want 2 pins released", n, err)
	}
	if !isDone(s.Done()) {
		t.Fatal("Revoke did not close the session's Done")
	}
	cause, reason, released := s.Revocation()
	if cause != lease.CauseAdmin || reason != "maintenance window" || released != 2 {
		t.Errorf("Revocation() = %v, %q, %d; want CauseAdmin, %q, 2", cause, reason, released, "maintenance window")
	}
	if _, err := s.Pin([]string{o1.Handle}); !errors.Is(err, lease.ErrEnded) {
		t.Errorf("Pin after revoke: err %v, want ErrEnded", err)
	}
	if _, err := s.Unpin([]string{o1.Handle}, 0); !errors.Is(err, lease.ErrEnded) {
		t.Errorf("Unpin after revoke: err %v, want ErrEnded", err)
	}
	if _, err := s.Close(0); !errors.Is(err, lease.ErrEnded) {
		t.Errorf("Close after revoke: err %v, want ErrEnded", err)
	}
	s.Detach() // does nothing, and must not panic
	if n, err := f.m.Revoke(s.ID(), "again"); !errors.Is(err, lease.ErrNotFound) || n != 0 {
		t.Errorf("second Revoke = %d, %v; want 0, ErrNotFound", n, err)
	}
	f.wantWeak(t, o1.Handle)
	f.wantWeak(t, o2.Handle)
	f.wantNoLeases(t)
}

func TestRevokeRejectsBadIDs(t *testing.T) {
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Client: "bystander"})
	o := f.put(t)
	pin(t, s, o.Handle)
	var neverOpened string
	{
		c, err := handle.NewCodec(handle.Config{Key: testKey, Epoch: 1})
		if err != nil {
			t.Fatal(err)
		}
		_, neverOpened = c.New(handle.Lease)
	}
	tests := []struct {
		name string
		id   string
		want error
	}{
		{"malformed", "lse_nope", handle.ErrMalformed},
		{"empty", "", handle.ErrMalformed},
		{"object handle", o.Handle, handle.ErrMalformed},
		{"issued by another key", foreignLeaseID(t), lease.ErrNotFound},
		{"genuine but never opened", neverOpened, lease.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := f.m.Revoke(tt.id, "r")
			if !errors.Is(err, tt.want) || n != 0 {
				t.Errorf("Revoke(%q) = %d, %v; want 0, %v", tt.id, n, err, tt.want)
			}
			// A bad revoke disturbs no one.
			if isDone(s.Done()) {
				t.Error("a bad Revoke ended an unrelated session")
			}
			f.wantPinned(t, o.Handle, 1)
		})
	}
}

func TestRevokeOfRestartedLeaseIDSaysRestarted(t *testing.T) {
	f := newFixture(t, lease.Config{})
	old, err := handle.NewCodec(handle.Config{Key: testKey, Epoch: 99})
	if err != nil {
		t.Fatal(err)
	}
	_, id := old.New(handle.Lease)
	var restarted *handle.RestartedError
	if _, err := f.m.Revoke(id, "r"); !errors.As(err, &restarted) {
		t.Errorf("Revoke of an earlier run's lease id: err %v, want *handle.RestartedError", err)
	}
}

func TestShutdownEndsSessionsAndRefusesOpen(t *testing.T) {
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Client: "t"})
	o := f.put(t)
	pin(t, s, o.Handle)

	f.m.Shutdown()
	if !isDone(s.Done()) {
		t.Fatal("Shutdown did not close the session's Done")
	}
	if cause, _, released := s.Revocation(); cause != lease.CauseShutdown || released != 1 {
		t.Errorf("Revocation() = %v, released %d; want CauseShutdown, 1", cause, released)
	}
	if _, err := f.m.Open(lease.OpenParams{Client: "late"}); !errors.Is(err, lease.ErrClosed) {
		t.Errorf("Open after Shutdown: err %v, want ErrClosed", err)
	}
	if _, err := s.Pin([]string{o.Handle}); !errors.Is(err, lease.ErrEnded) {
		t.Errorf("Pin after Shutdown: err %v, want ErrEnded", err)
	}
	f.wantNoLeases(t)
	f.m.Shutdown() // twice is harmless
}

func TestManagerPutPinsAtomically(t *testing.T) {
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Client: "producer"})
	sub, err := f.reg.WatchAll()
	if err != nil {
		t.Fatalf("WatchAll: %v", err)
	}
	defer sub.Close()

	info, err := f.m.Put(auth.Anonymous, s.ID(), []byte("a freshly computed result"), registry.Meta{ContentType: "text/plain"})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	// The registry publishes synchronously: every event of the Put is
	// queued by now. It must go from created to pinned with no WEAK between.
	var kinds []registry.EventKind
	for len(sub.Events()) > 0 {
		ev := <-sub.Events()
		if ev.ID != info.ID {
			continue
		}
		kinds = append(kinds, ev.Kind)
		if ev.Kind == registry.EventPinned && (ev.LeaseID != s.ID() || ev.Pins != 1) {
			t.Errorf("PINNED event by %s with %d pins; want by %s with 1", ev.LeaseID, ev.Pins, s.ID())
		}
	}
	if want := []registry.EventKind{registry.EventCreated, registry.EventPinned}; !slices.Equal(kinds, want) {
		t.Errorf("events of a Put with a lease: %v, want %v", kinds, want)
	}
	// The very first view of the object, from Put itself, is PINNED.
	if info.State != registry.Pinned || info.Pins != 1 {
		t.Errorf("Put returned state %v, pins %d; want PINNED, 1", info.State, info.Pins)
	}
	f.wantPinned(t, info.Handle, 1)
	if got := s.Info().Pins; got != 1 {
		t.Errorf("lease pins = %d, want 1", got)
	}
	f.wantSurvives(t, info.Handle, 1)

	// The lease owns the pin like any other: Unpin lets it go.
	rs, err := s.Unpin([]string{info.Handle}, 0)
	if err != nil || rs[0].Outcome != lease.Unpinned {
		t.Fatalf("Unpin = %+v, %v; want Unpinned", rs, err)
	}
	f.wantCollected(t, info.Handle)
}

func TestManagerPutPinsEvenWhileDetached(t *testing.T) {
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Client: "t", Grace: time.Minute})
	s.Detach()
	info, err := f.m.Put(auth.Anonymous, s.ID(), []byte("kept for the resuming stream"), registry.Meta{})
	if err != nil {
		t.Fatalf("Put into a detached lease: %v", err)
	}
	f.wantSurvives(t, info.Handle, 1)
	r := f.open(t, lease.OpenParams{Resume: s.ID()})
	if got := r.Info().Pins; got != 1 {
		t.Errorf("resumed lease pins = %d, want 1", got)
	}
}

func TestManagerPutFailsWithoutStoring(t *testing.T) {
	f := newFixture(t, lease.Config{MaxPinsPerLease: 1})
	full := f.open(t, lease.OpenParams{Client: "full"})
	pin(t, full, f.put(t).Handle)
	closed := f.open(t, lease.OpenParams{Client: "closed"})
	if _, err := closed.Close(0); err != nil {
		t.Fatal(err)
	}
	live := f.open(t, lease.OpenParams{Client: "live"})

	tests := []struct {
		name    string
		leaseID string
		data    []byte
		check   func(t *testing.T, err error)
	}{
		{"malformed lease id", "lse_bad", []byte("x"), wantNotLive(handle.ErrMalformed)},
		{"empty lease id", "", []byte("x"), wantNotLive(handle.ErrMalformed)},
		{"lease id from another key", foreignLeaseID(t), []byte("x"), wantNotLive(lease.ErrNotFound)},
		{"ended lease", closed.ID(), []byte("x"), wantNotLive(lease.ErrNotFound)},
		{"lease at its pin limit", full.ID(), []byte("x"), wantLimit("LEASE_PIN_LIMIT", 1, 2)},
		{"empty payload", live.ID(), nil, func(t *testing.T, err error) {
			if !errors.Is(err, registry.ErrPayloadEmpty) {
				t.Errorf("err %v, want registry.ErrPayloadEmpty", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.reg.Stats()
			fullPins, livePins := full.Info().Pins, live.Info().Pins
			_, err := f.m.Put(auth.Anonymous, tt.leaseID, tt.data, registry.Meta{})
			tt.check(t, err)
			after := f.reg.Stats()
			if after.Puts != before.Puts || after.Pins != before.Pins {
				t.Errorf("failed Put changed the registry: puts %d→%d, pins %d→%d",
					before.Puts, after.Puts, before.Pins, after.Pins)
			}
			if full.Info().Pins != fullPins || live.Info().Pins != livePins {
				t.Error("failed Put changed a lease's pin count")
			}
		})
	}
}

func wantNotLive(cause error) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		var nl *lease.NotLiveError
		if !errors.As(err, &nl) || !errors.Is(err, cause) {
			t.Errorf("err %v (%T), want *lease.NotLiveError wrapping %v", err, err, cause)
		}
	}
}

func wantLimit(name string, limit, want int64) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		var lim *registry.LimitError
		if !errors.As(err, &lim) {
			t.Errorf("err %v (%T), want *registry.LimitError", err, err)
			return
		}
		if lim.Limit != name || lim.Max != limit || lim.Want != want {
			t.Errorf("limit error %+v, want %s max %d want %d", lim, name, limit, want)
		}
	}
}

func TestDropPinsForgetsForceDeletedObject(t *testing.T) {
	f := newFixture(t, lease.Config{})
	a := f.open(t, lease.OpenParams{Client: "a"})
	b := f.open(t, lease.OpenParams{Client: "b"})
	doomed, kept := f.put(t), f.put(t)
	pin(t, a, doomed.Handle, kept.Handle)
	pin(t, b, doomed.Handle)

	_, pins, err := f.reg.Delete(doomed.ID, true)
	if err != nil || len(pins) != 2 {
		t.Fatalf("forced Delete = %d pins, %v; want 2 pins", len(pins), err)
	}
	f.m.DropPins(doomed.ID, pins)

	if got := a.Info().Pins; got != 1 {
		t.Errorf("lease a pins = %d after DropPins, want 1", got)
	}
	if got := b.Info().Pins; got != 0 {
		t.Errorf("lease b pins = %d after DropPins, want 0", got)
	}
	// The dropped pin is not the lease's any more: Close counts only the
	// one it still holds.
	if n, err := a.Close(0); err != nil || n != 1 {
		t.Errorf("a.Close() = %d, %v; want 1", n, err)
	}
	if n, err := b.Close(0); err != nil || n != 0 {
		t.Errorf("b.Close() = %d, %v; want 0", n, err)
	}
	f.wantNoLeases(t)
	f.wantCollected(t, kept.Handle)
}

func TestDropPinsIgnoresEndedLeases(t *testing.T) {
	f := newFixture(t, lease.Config{})
	s := f.open(t, lease.OpenParams{Client: "t"})
	o := f.put(t)
	pin(t, s, o.Handle)
	_, pins, err := f.reg.Delete(o.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Close(0); err != nil {
		t.Fatal(err)
	}
	f.m.DropPins(o.ID, pins) // the lease is gone: nothing to do, no panic
	f.wantNoLeases(t)
}
