package telemetry

import (
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"

	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// Span and span event names of the registry's own telemetry, beside the
// gRPC spans otelgrpc names after the method
// ("registry.v1.RegistryService/Put"). docs/OBSERVABILITY.md lists them
// with their attributes; keep the two in step.
const (
	// SpanPin and SpanUnpin: one pin or unpin request on a lease stream,
	// child of the stream's span, with an EventPinHandle or
	// EventUnpinHandle per handle.
	SpanPin   = "registry.pin"
	SpanUnpin = "registry.unpin"
	// SpanCollect: a forced collection (AdminService/Collect).
	SpanCollect = "registry.collect"
	// SpanObjectCollected: one object taken by the garbage collector. It
	// starts when the object was last unpinned and ends when it was
	// collected; a root span, linked to the SpanCollect that reaped it if
	// any.
	SpanObjectCollected = "registry.object.collected"

	EventPut         = "registry.put"
	EventResolve     = "registry.resolve"
	EventPinHandle   = "registry.pin.handle"
	EventUnpinHandle = "registry.unpin.handle"
	EventLeaseOpen   = "registry.lease.open"
	EventLeaseDetach = "registry.lease.detach"
	EventLeaseEnd    = "registry.lease.end"
	EventLeaseRevoke = "registry.lease.revoke"
	EventDelete      = "registry.delete"
)

// Attribute keys.
const (
	KeyHandle       = attribute.Key("registry.handle")
	KeyObjectSize   = attribute.Key("registry.object.size")  // bytes
	KeyObjectState  = attribute.Key("registry.object.state") // pinned, lingering, weak
	KeyObjectPins   = attribute.Key("registry.object.pins")
	KeyUnpinnedFor  = attribute.Key("registry.object.unpinned_for_seconds")
	KeyLeaseID      = attribute.Key("registry.lease.id")
	KeyLeaseClient  = attribute.Key("registry.lease.client")
	KeyLeaseGrace   = attribute.Key("registry.lease.grace_seconds")
	KeyLeaseResumed = attribute.Key("registry.lease.resumed")
	KeyLeaseEnd     = attribute.Key("registry.lease.end") // closed, dropped, expired, revoked, taken_over, shutdown
	KeyLeasePins    = attribute.Key("registry.lease.pins")
	KeyReleased     = attribute.Key("registry.lease.released")
	KeyReason       = attribute.Key("registry.reason") // a revoke's reason, given by the operator
	KeyHandles      = attribute.Key("registry.handles")
	KeyOutcome      = attribute.Key("registry.outcome") // of a resolve, pin or unpin
	KeyErrorReason  = attribute.Key("registry.error.reason")
	KeyForce        = attribute.Key("registry.force")
	KeyForced       = attribute.Key("registry.collect.forced")
	KeyObjects      = attribute.Key("registry.collect.objects")
	KeyBytes        = attribute.Key("registry.collect.bytes")
	KeyDuration     = attribute.Key("registry.collect.duration_seconds")
	KeyHeapBefore   = attribute.Key("registry.collect.heap_before_bytes")
	KeyHeapAfter    = attribute.Key("registry.collect.heap_after_bytes")
)

// Resolve outcomes, in spans and in registry_resolves_total.
const (
	OutcomeHit = "hit"
)

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
		return OutcomeHit
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

// maxHandleAttr bounds a handle attribute: a handle has 56 characters,
// and a client may send anything as one.
const maxHandleAttr = 64

// HandleAttr is the registry.handle attribute for h, cut to 64 bytes on a
// rune boundary so that a client's garbage cannot bloat a trace.
func HandleAttr(h string) attribute.KeyValue { return KeyHandle.String(clip(h, maxHandleAttr)) }

// ReasonAttr is the registry.reason attribute for an operator's reason,
// cut to 256 bytes.
func ReasonAttr(r string) attribute.KeyValue { return KeyReason.String(clip(r, 256)) }

// clip cuts s to at most n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// ObjectAttrs describe an object: handle, size, state and pins.
func ObjectAttrs(in registry.Info) []attribute.KeyValue {
	return []attribute.KeyValue{
		KeyHandle.String(in.Handle),
		KeyObjectSize.Int64(in.Size),
		KeyObjectState.String(StateName(in.State)),
		KeyObjectPins.Int(in.Pins),
	}
}
