package observe

import (
	"strings"

	"go.opentelemetry.io/otel/attribute"

	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/telemetry"
)

// The domain's values as attribute and label values.

// missOutcomes name each registry miss reason as an outcome.
var missOutcomes = map[string]string{
	registry.MissMalformed: "malformed",
	registry.MissUnknown:   "unknown",
	registry.MissRestarted: "restarted",
	registry.MissForeign:   "foreign_node",
	registry.MissCollected: "collected",
	registry.MissDeleted:   "deleted",
}

// ResolveOutcome names what a Resolve that returned err did: "hit", or
// why it missed ("collected", "unknown", "malformed"...), or "error".
func ResolveOutcome(err error) string {
	if err == nil {
		return telemetry.OutcomeHit
	}
	if o, ok := missOutcomes[registry.MissReason(err)]; ok {
		return o
	}
	return "error"
}

// StateName is a state as a label value: "pinned", "weak"...
func StateName(s registry.State) string { return strings.ToLower(s.String()) }

// PinOutcome is a pin or unpin outcome as an attribute value: "pinned",
// "already_pinned", "unpinned", "not_pinned", "failed".
func PinOutcome(o lease.Outcome) string {
	switch o {
	case lease.Pinned:
		return "pinned"
	case lease.AlreadyPinned:
		return "already_pinned"
	case lease.Unpinned:
		return "unpinned"
	case lease.NotPinned:
		return "not_pinned"
	case lease.Failed:
		return "failed"
	}
	return "unknown"
}

// EndName is how a lease ended, as an attribute value: "closed",
// "dropped", "expired", "revoked", "shutdown".
func EndName(e lease.End) string { return strings.ToLower(e.String()) }

// ObjectAttrs describe an object: handle, size, state and pins.
func ObjectAttrs(in registry.Info) []attribute.KeyValue {
	return []attribute.KeyValue{
		telemetry.KeyHandle.String(in.Handle),
		telemetry.KeyObjectSize.Int64(in.Size),
		telemetry.KeyObjectState.String(StateName(in.State)),
		telemetry.KeyObjectPins.Int(in.Pins),
	}
}
