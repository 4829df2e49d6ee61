package observe

import (
	"errors"
	"fmt"
	"testing"

	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

func TestResolveOutcomeNamesEveryMiss(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, "hit"},
		{handle.ErrMalformed, "malformed"},
		{fmt.Errorf("parse: %w", handle.ErrUnknown), "unknown"},
		{&handle.RestartedError{Issued: 1, Current: 2}, "restarted"},
		{&handle.ForeignNodeError{Node: 3}, "foreign_node"},
		{registry.ErrCollected, "collected"},
		{registry.ErrDeleted, "deleted"},
		{errors.New("something else"), "error"},
	}
	for _, tt := range tests {
		if got := ResolveOutcome(tt.err); got != tt.want {
			t.Errorf("ResolveOutcome(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestLabelValuesAreLowerCase(t *testing.T) {
	tests := []struct{ got, want string }{
		{StateName(registry.Pinned), "pinned"},
		{StateName(registry.Weak), "weak"},
		{PinOutcome(lease.AlreadyPinned), "already_pinned"},
		{PinOutcome(lease.Failed), "failed"},
		{EndName(lease.EndDropped), "dropped"},
		{EndName(lease.EndExpired), "expired"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
