// Package telemetry sets up the OpenTelemetry traces and metrics of
// registryd and registryctl, and names the registry's spans, span events
// and attributes.
//
// Traces are exported over OTLP/gRPC, configured only by the standard
// OTEL_* environment variables; with none of them set the tracer provider
// is OpenTelemetry's no-op one, the gRPC stats handler is not installed at
// all, and tracing costs nothing. Metrics go through the OpenTelemetry
// metrics SDK to a Prometheus exporter on a registry of their own, served
// by Handler, beside go-grpc-middleware's gRPC server metrics and Go
// runtime metrics.
//
// It knows nothing of the domain, so that a client links it without the
// registry: internal/observe translates the registry's and the leases'
// lifecycle into spans, metrics and log lines through it.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
)

// Config configures Telemetry.
type Config struct {
	// ServiceName is service.name unless OTEL_SERVICE_NAME or
	// OTEL_RESOURCE_ATTRIBUTES say otherwise. Default "registryd".
	ServiceName string
	// ServiceVersion is service.version.
	ServiceVersion string
	// Disabled turns tracing and metrics off, whatever the environment
	// says: every method then returns no-ops.
	Disabled bool
	// Metrics builds the meter provider and the Prometheus registry that
	// Handler serves. Without it there are no metrics.
	Metrics bool
	// Logger receives lifecycle events at debug level and telemetry's
	// own warnings. Default slog.Default().
	Logger *slog.Logger
	// TracerProvider, when set, turns tracing on with it instead of one
	// made from OTEL_*, for tests and benchmarks. Its owner shuts it down.
	TracerProvider trace.TracerProvider
}

// Telemetry is one process's tracer and meter providers. Its methods are
// safe for concurrent use; a nil *Telemetry is valid and does nothing.
type Telemetry struct {
	log     *slog.Logger
	tp      trace.TracerProvider // no-op unless tracing
	tracer  trace.Tracer         // of tp, for the registry's own spans
	prop    propagation.TextMapPropagator
	mp      metric.MeterProvider // no-op unless metrics
	tracing bool

	// Set when metrics are on.
	registry    *prometheus.Registry
	grpcMetrics *grpcprom.ServerMetrics

	mu     sync.Mutex
	before []func(context.Context) // OnShutdown's, guarded by mu

	shutdownOnce sync.Once
	shutdown     []func(context.Context) error
	shutdownErr  error
}

// Scope is the instrumentation scope of the registry's own spans and
// metrics.
const Scope = "github.com/weakref/registry"

// New sets up tracing from the OTEL_* environment and, if cfg.Metrics,
// metrics. Call Shutdown to flush and stop.
func New(ctx context.Context, cfg Config) (*Telemetry, error) {
	if cfg.ServiceName == "" {
		cfg.ServiceName = "registryd"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &Telemetry{
		log:  cfg.Logger,
		tp:   tracenoop.NewTracerProvider(),
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		mp:   metricnoop.NewMeterProvider(),
	}
	t.tracer = t.tp.Tracer(Scope)
	if cfg.Disabled {
		return t, nil
	}
	if cfg.TracerProvider != nil {
		t.tp, t.tracer, t.tracing = cfg.TracerProvider, cfg.TracerProvider.Tracer(Scope), true
	}
	tracing, err := tracingFromEnv()
	if err != nil {
		return nil, err
	}
	tracing = tracing && cfg.TracerProvider == nil
	if !tracing && !cfg.Metrics {
		return t, nil
	}
	res, err := newResource(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if tracing {
		// The exporter reads OTEL_EXPORTER_OTLP_* itself, and connects
		// lazily: a collector that is down delays nothing here.
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("OTLP trace exporter: %w", err)
		}
		// NewTracerProvider reads OTEL_TRACES_SAMPLER(_ARG) and
		// WithBatcher reads OTEL_BSP_*.
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		t.tp, t.tracer, t.tracing = tp, tp.Tracer(Scope), true
		t.shutdown = append(t.shutdown, tp.Shutdown)
	}
	if cfg.Metrics {
		if err := t.setUpMetrics(res); err != nil {
			// The set-up error is the one to report.
			_ = t.Shutdown(ctx)
			return nil, err
		}
	}
	return t, nil
}

// tracingFromEnv says whether the OTEL_* environment asks for traces: an
// OTLP endpoint, or OTEL_TRACES_EXPORTER=otlp, and neither
// OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none.
func tracingFromEnv() (bool, error) {
	if strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true") {
		return false, nil
	}
	on := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	if v := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); v != "" {
		on = false
		for e := range strings.SplitSeq(v, ",") {
			switch e = strings.TrimSpace(e); e {
			case "none":
				return false, nil
			case "otlp":
				on = true
			default:
				return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: registryd exports traces with otlp or not at all (none)", v)
			}
		}
	}
	if !on {
		return false, nil
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := os.Getenv(name); v != "" {
			if v != "grpc" {
				return false, fmt.Errorf("%s=%q: registryd speaks OTLP over gRPC only; set it to grpc or unset it", name, v)
			}
			break // the more specific one wins
		}
	}
	return true, nil
}

// newResource describes this process: service.name and service.version,
// then whatever OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME say, which
// win.
func newResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attrs...),
		resource.WithTelemetrySDK(),
		resource.WithProcessPID(),
		resource.WithHost(),
		resource.WithFromEnv(),
	)
	if errors.Is(err, resource.ErrPartialResource) {
		cfg.Logger.Warn("some OTEL_RESOURCE_ATTRIBUTES were not understood", "err", err)
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	return res, nil
}

// Tracing reports whether spans are recorded and exported.
func (t *Telemetry) Tracing() bool { return t != nil && t.tracing }

// Metrics reports whether metrics are measured.
func (t *Telemetry) Metrics() bool { return t != nil && t.registry != nil }

// TracerProvider returns the tracer provider: OpenTelemetry's no-op one
// unless tracing.
func (t *Telemetry) TracerProvider() trace.TracerProvider {
	if t == nil {
		return tracenoop.NewTracerProvider()
	}
	return t.tp
}

// Tracer returns the tracer of the registry's own spans: a no-op one
// unless tracing.
func (t *Telemetry) Tracer() trace.Tracer {
	if t == nil {
		return tracenoop.NewTracerProvider().Tracer(Scope)
	}
	return t.tracer
}

// Propagator returns the propagator of trace context between processes:
// W3C trace context and baggage.
func (t *Telemetry) Propagator() propagation.TextMapPropagator {
	if t == nil {
		return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return t.prop
}

// MeterProvider returns the meter provider: OpenTelemetry's no-op one
// unless metrics.
func (t *Telemetry) MeterProvider() metric.MeterProvider {
	if t == nil {
		return metricnoop.NewMeterProvider()
	}
	return t.mp
}

// Logger returns the logger of lifecycle events and telemetry's own
// warnings.
func (t *Telemetry) Logger() *slog.Logger {
	if t == nil {
		return slog.Default()
	}
	return t.log
}

// OnShutdown has Shutdown call f first, before it flushes the spans: for
// what still makes spans, such as the lifecycle observers' pipeline. Call
// it before Shutdown.
func (t *Telemetry) OnShutdown(f func(context.Context)) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.before = append(t.before, f)
}

// Shutdown runs the OnShutdown funcs, flushes the spans not exported yet,
// and stops the providers, within ctx. Later calls return the first
// call's result.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	t.shutdownOnce.Do(func() {
		t.mu.Lock()
		before := t.before
		t.mu.Unlock()
		for _, f := range before {
			f(ctx) // their last spans go out with the flush below
		}
		var errs []error
		for _, f := range t.shutdown {
			errs = append(errs, f(ctx))
		}
		t.shutdownErr = errors.Join(errs...)
	})
	return t.shutdownErr
}
