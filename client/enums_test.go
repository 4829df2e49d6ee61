package client

import (
	"strings"
	"testing"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// The client's enums are the API's, value for value: infoFrom, eventFrom
// and resultsFrom convert by number.
func TestEnumsMatchTheAPI(t *testing.T) {
	for v, name := range registryv1.ObjectState_name {
		want := strings.ToLower(strings.TrimPrefix(name, "OBJECT_STATE_"))
		if want == "unspecified" {
			want = "unknown"
		}
		if got := State(v).String(); got != want {
			t.Errorf("State(%d) = %q, want %q", v, got, want)
		}
	}
	for v, name := range registryv1.EventKind_name {
		want := strings.TrimPrefix(name, "EVENT_KIND_")
		if want == "UNSPECIFIED" {
			want = "UNKNOWN"
		}
		if got := EventKind(v).String(); got != want {
			t.Errorf("EventKind(%d) = %q, want %q", v, got, want)
		}
	}
	for v, name := range registryv1.PinOutcome_name {
		want := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, "PIN_OUTCOME_"), "_", " "))
		if want == "unspecified" {
			want = "unknown"
		}
		if got := PinOutcome(v).String(); got != want {
			t.Errorf("PinOutcome(%d) = %q, want %q", v, got, want)
		}
	}
}

func TestRevokeCausesMatchTheAPI(t *testing.T) {
	for v, name := range registryv1.RevokeCause_name {
		if v == 0 {
			continue
		}
		if got := RevokeCause(v).String(); got == "revoked" {
			t.Errorf("RevokeCause(%d) (%s) has no description", v, name)
		}
	}
	if int(CauseShutdown) != int(registryv1.RevokeCause_REVOKE_CAUSE_SHUTDOWN) || int(CauseAdmin) != int(registryv1.RevokeCause_REVOKE_CAUSE_ADMIN) {
		t.Error("RevokeCause values differ from the API's")
	}
}

func TestEveryReasonHasAKind(t *testing.T) {
	// Reasons the server gives (internal/server/status.go) that a caller
	// branches on; limits map to ErrLimit by their code instead.
	for _, r := range []string{"HANDLE_MALFORMED", "HANDLE_UNKNOWN", "HANDLE_FOREIGN_NODE", "REGISTRY_RESTARTED",
		"OBJECT_COLLECTED", "OBJECT_DELETED", "OBJECT_PINNED", "LEASE_NOT_FOUND", "SHUTTING_DOWN"} {
		if reasons[r] == nil {
			t.Errorf("reason %s has no error kind", r)
		}
	}
}
