package lease_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/weakref/registry/internal/lease"
)

// TestOnEndSaysTheLeaseWasEndedFromOutside: a session's OnEnd is called
// once, with Done already closed, when its lease is revoked, taken over
// or shut down, and never when its own stream closes or detaches it.
func TestOnEndSaysTheLeaseWasEndedFromOutside(t *testing.T) {
	tests := []struct {
		name  string
		grace time.Duration
		end   func(f *fixture, s *lease.Session)
		want  int32
	}{
		{"revoked", 0, func(f *fixture, s *lease.Session) { f.m.Revoke(s.ID(), "r") }, 1},
		{"revoked twice", 0, func(f *fixture, s *lease.Session) { f.m.Revoke(s.ID(), "r"); f.m.Revoke(s.ID(), "r") }, 1},
		{"taken over", time.Minute, func(f *fixture, s *lease.Session) { f.open(t, lease.OpenParams{Resume: s.ID()}) }, 1},
		{"shut down", 0, func(f *fixture, s *lease.Session) { f.m.Shutdown() }, 1},
		{"closed", 0, func(f *fixture, s *lease.Session) { s.Close(0) }, 0},
		{"detached without grace", 0, func(f *fixture, s *lease.Session) { s.Detach() }, 0},
		{"detached with a grace", time.Minute, func(f *fixture, s *lease.Session) { s.Detach() }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, lease.Config{})
			var calls atomic.Int32
			var s *lease.Session
			s = f.open(t, lease.OpenParams{Client: "c", Grace: tt.grace, OnEnd: func() {
				if !isDone(s.Done()) {
					t.Error("OnEnd called before Done was closed")
				}
				calls.Add(1)
			}})
			tt.end(f, s)
			if got := calls.Load(); got != tt.want {
				t.Fatalf("OnEnd called %d times, want %d", got, tt.want)
			}
		})
	}
}
