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

// TestEveryReasonHasAKind: every reason of the API's enum matches one of
// the client's errors.
func TestEveryReasonHasAKind(t *testing.T) {
	for v, name := range registryv1.ErrorReason_name {
		if v == 0 {
			continue
		}
		if reasons[name] == nil {
			t.Errorf("reason %s has no error kind", name)
		}
	}
}
