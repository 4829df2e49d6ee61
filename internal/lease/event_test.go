package lease_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/weakref/registry/internal/lease"
)

// recorder collects the events a Manager observes.
type recorder struct {
	mu     sync.Mutex
	events []lease.Event // guarded by mu
}

func (r *recorder) observe(ev lease.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorder) all() []lease.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// brief is what a test checks of an event.
type brief struct {
	Kind     lease.EventKind
	End      lease.End
	Pins     int
	Released int
	Reason   string
}

// TestObserverSeesEveryWayALeaseEnds: Config.Observe hears each lease
// opened, resumed, detached and ended, with how it ended and how many
// pins it let go.
func TestObserverSeesEveryWayALeaseEnds(t *testing.T) {
	tests := []struct {
		name  string
		grace time.Duration
		// end ends the lease of s, which pins one object.
		end  func(t *testing.T, f *fixture, s *lease.Session, rec *recorder)
		want []brief
	}{
		{"closed", 0, func(t *testing.T, f *fixture, s *lease.Session, _ *recorder) {
			if _, err := s.Close(0); err != nil {
				t.Fatal(err)
			}
		}, []brief{{Kind: lease.EventOpened}, {Kind: lease.EventEnded, End: lease.EndClosed, Released: 1}}},
		{"dropped without grace", 0, func(t *testing.T, f *fixture, s *lease.Session, _ *recorder) {
			s.Detach()
		}, []brief{{Kind: lease.EventOpened}, {Kind: lease.EventEnded, End: lease.EndDropped, Released: 1}}},
		{"revoked", 0, func(t *testing.T, f *fixture, s *lease.Session, _ *recorder) {
			if _, err := f.m.Revoke(s.ID(), "enough"); err != nil {
				t.Fatal(err)
			}
		}, []brief{{Kind: lease.EventOpened}, {Kind: lease.EventEnded, End: lease.EndRevoked, Released: 1, Reason: "enough"}}},
		{"shutdown", 0, func(t *testing.T, f *fixture, s *lease.Session, _ *recorder) {
			f.m.Shutdown()
		}, []brief{{Kind: lease.EventOpened}, {Kind: lease.EventEnded, End: lease.EndShutdown, Released: 1, Reason: "registryd is shutting down"}}},
		{"detached, resumed, then its grace expires", 100 * time.Millisecond /* time to resume in, under load */, func(t *testing.T, f *fixture, s *lease.Session, rec *recorder) {
			s.Detach()
			r := f.open(t, lease.OpenParams{Resume: s.ID()})
			r.Detach()
			// The timer reports the end after the lease is gone: wait
			// for the report.
			eventually(t, expiryWait, "the grace runs out", func() bool { return len(rec.all()) == 5 })
		}, []brief{
			{Kind: lease.EventOpened},
			{Kind: lease.EventDetached, Pins: 1},
			{Kind: lease.EventResumed, Pins: 1},
			{Kind: lease.EventDetached, Pins: 1},
			{Kind: lease.EventEnded, End: lease.EndExpired, Released: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			f := newFixture(t, lease.Config{Observe: rec.observe})
			s := f.open(t, lease.OpenParams{Client: "observed", Grace: tt.grace})
			pin(t, s, f.put(t).Handle)
			tt.end(t, f, s, &rec)
			got := rec.all()
			var briefs []brief
			for _, ev := range got {
				if ev.LeaseID != s.ID() || ev.Client != "observed" || ev.Grace != tt.grace {
					t.Errorf("event %+v: want lease %s, client observed, grace %v", ev, s.ID(), tt.grace)
				}
				briefs = append(briefs, brief{ev.Kind, ev.End, ev.Pins, ev.Released, ev.Reason})
			}
			if !slices.Equal(briefs, tt.want) {
				t.Fatalf("observed %+v\nwant     %+v", briefs, tt.want)
			}
		})
	}
}
