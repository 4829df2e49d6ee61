package telemetry

import (
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
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
