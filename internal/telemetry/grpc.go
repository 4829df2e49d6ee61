package telemetry

import (
	"context"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// notHealth leaves grpc.health.v1.Health out of traces: probes every few
// seconds would bury every other span.
var notHealth = filters.Not(filters.HealthCheck())

// ServerHandler returns the gRPC stats handler that makes a server span
// of each call, child of the caller's span when the request carries a W3C
// traceparent; health checks are not traced. It is nil unless tracing:
// with no OTEL_* configuration the server runs without it and pays
// nothing.
func (t *Telemetry) ServerHandler() stats.Handler {
	if !t.Tracing() {
		return nil
	}
	return otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithPropagators(t.prop),
		// The gRPC server metrics come from go-grpc-middleware, on the
		// Prometheus endpoint; otelgrpc's would be the same figures twice.
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithFilter(notHealth),
	)
}

// ClientHandler returns a gRPC stats handler that makes a client span of
// each call a client makes and sends its context in W3C traceparent and
// baggage headers, so that the server's span joins the caller's trace.
// Health checks are not traced. prop nil means W3C trace context and
// baggage. For a client that gets its tracer provider from elsewhere,
// such as the Go client's options or a test.
func ClientHandler(tp trace.TracerProvider, prop propagation.TextMapPropagator) stats.Handler {
	if prop == nil {
		prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return otelgrpc.NewClientHandler(
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithPropagators(prop),
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithFilter(notHealth),
	)
}

// DialOptions returns the options that trace a gRPC client's calls with
// t's tracer provider (see ClientHandler), or none unless tracing. For
// registryctl and other clients that set up their own Telemetry:
//
//	tel, err := telemetry.New(ctx, telemetry.Config{ServiceName: "registryctl"})
//	...
//	defer tel.Shutdown(ctx)
//	conn, err := grpc.NewClient(addr, append(opts, tel.DialOptions()...)...)
func (t *Telemetry) DialOptions() []grpc.DialOption {
	if !t.Tracing() {
		return nil
	}
	return []grpc.DialOption{grpc.WithStatsHandler(ClientHandler(t.tp, t.prop))}
}

// LogFields returns the trace_id and span_id of ctx's span for a log
// line, or nil when no span is recording.
func LogFields(ctx context.Context) []any {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return nil
	}
	sc := span.SpanContext()
	return []any{"trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String()}
}
