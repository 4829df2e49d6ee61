package server

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/observe"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/telemetry"
)

// The registry's own spans and span events hang below otelgrpc's server
// span of each call. Every helper here first asks whether that span is
// recording, so that with tracing off they cost one interface call.

// reasonUnaryInterceptor sets the ErrorInfo reason of a failed call on
// its span, so that traces can be searched by reason.
func reasonUnaryInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		setReason(trace.SpanFromContext(ctx), err)
	}
	return resp, err
}

// reasonStreamInterceptor is reasonUnaryInterceptor for streams.
func reasonStreamInterceptor(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	if err != nil {
		setReason(trace.SpanFromContext(ss.Context()), err)
	}
	return err
}

func setReason(span trace.Span, err error) {
	if !span.IsRecording() {
		return
	}
	st, ok := status.FromError(err)
	if !ok {
		return
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			span.SetAttributes(telemetry.KeyErrorReason.String(info.GetReason()))
			return
		}
	}
}

// addEvent adds a span event to ctx's span if it is recording; attrs is
// called only then.
func addEvent(ctx context.Context, name string, attrs func() []attribute.KeyValue) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(name, trace.WithAttributes(attrs()...))
	}
}

// putAttrs are the attributes of a registry.put event, by Put or Upload:
// the new object's, and the lease that pins it, if any.
func putAttrs(info registry.Info, leaseID string) []attribute.KeyValue {
	attrs := observe.ObjectAttrs(info)
	if leaseID != "" {
		attrs = append(attrs, telemetry.KeyLeaseID.String(leaseID))
	}
	return attrs
}

// traceResults wraps one pin or unpin request of a lease stream in a
// span, child of the stream's, with one event per handle. It returns the
// func that records the results and ends the span.
func (s *registryService) traceResults(ctx context.Context, name, event, leaseID string, handles int) func([]lease.Result, error) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return func([]lease.Result, error) {}
	}
	_, span := s.tel.Tracer().Start(ctx, name,
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(telemetry.KeyLeaseID.String(leaseID), telemetry.KeyHandles.Int(handles)))
	return func(rs []lease.Result, err error) {
		defer span.End()
		if err != nil {
			setReason(span, toStatus(err, handle.Lease))
			return
		}
		for _, r := range rs {
			attrs := []attribute.KeyValue{telemetry.HandleAttr(r.Handle), telemetry.KeyOutcome.String(observe.PinOutcome(r.Outcome))}
			if r.Err != nil {
				_, reason, _ := statusOf(r.Err, handle.Object)
				attrs = append(attrs, telemetry.KeyErrorReason.String(reason))
			} else if r.Info.Handle != "" {
				attrs = append(attrs,
					telemetry.KeyObjectSize.Int64(r.Info.Size),
					telemetry.KeyObjectState.String(observe.StateName(r.Info.State)),
					telemetry.KeyObjectPins.Int(r.Info.Pins))
			}
			span.AddEvent(event, trace.WithAttributes(attrs...))
		}
	}
}
