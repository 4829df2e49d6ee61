package telemetry

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

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

func TestHandleAttrIsBounded(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"a real handle is kept", "obj_" + strings.Repeat("A", 52), "obj_" + strings.Repeat("A", 52)},
		{"garbage is cut", strings.Repeat("x", 1<<20), strings.Repeat("x", maxHandleAttr)},
		{"on a rune boundary", strings.Repeat("x", maxHandleAttr-1) + "é", strings.Repeat("x", maxHandleAttr-1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := HandleAttr(tt.in).Value.AsString()
			if got != tt.want || !utf8.ValidString(got) {
				t.Fatalf("HandleAttr kept %d bytes %q, want %d", len(got), got[:min(len(got), 80)], len(tt.want))
			}
		})
	}
}
