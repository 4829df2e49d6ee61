package telemetry

import (
	"fmt"
	"log"
	"log/slog"
	"net/http"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	"google.golang.org/grpc"
)

// handlingTimeBuckets are the bucket bounds, in seconds, of
// grpc_server_handling_seconds: from 50 µs, where a Resolve or a Put of a
// small object lies, to 10 s, in steps of 1, 2.5 and 5. (The default
// starts at 5 ms, below which every call fell into one bucket.)
var handlingTimeBuckets = []float64{
	50e-6, 100e-6, 250e-6, 500e-6,
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2.5, 5, 10,
}

// setUpMetrics builds the meter provider over a Prometheus exporter on a
// registry of its own, with the Go runtime's metrics, the process's, and
// go-grpc-middleware's gRPC server metrics beside.
func (t *Telemetry) setUpMetrics(res *resource.Resource) error {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		// Prometheus names: dots become underscores, counters end in
		// _total, units are appended (registry_collection_delay_seconds).
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		// No otel_scope_* label on every series: the names say enough.
		otelprom.WithoutScopeInfo(),
	)
	if err != nil {
		return fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))
	t.mp = mp
	t.shutdown = append(t.shutdown, mp.Shutdown)
	t.grpcMetrics = grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets(handlingTimeBuckets)))
	// The Go runtime's metrics come from Prometheus's own collector
	// (go_goroutines, go_memstats_*, go_gc_duration_seconds), the names
	// every Go dashboard knows and promtool accepts; OpenTelemetry's
	// runtime instrumentation would name a gauge go_goroutine_count.
	reg.MustRegister(t.grpcMetrics, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	t.registry = reg
	return nil
}

// UnaryServerInterceptor counts and times unary calls in the gRPC server
// metrics (grpc_server_*), or is nil without metrics.
func (t *Telemetry) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	if !t.Metrics() {
		return nil
	}
	return t.grpcMetrics.UnaryServerInterceptor()
}

// StreamServerInterceptor is UnaryServerInterceptor for streams.
func (t *Telemetry) StreamServerInterceptor() grpc.StreamServerInterceptor {
	if !t.Metrics() {
		return nil
	}
	return t.grpcMetrics.StreamServerInterceptor()
}

// InitializeGRPCMetrics makes a zero series for every method gs serves,
// so that rates work from the first scrape. Call it after every service
// is registered.
func (t *Telemetry) InitializeGRPCMetrics(gs *grpc.Server) {
	if t.Metrics() {
		t.grpcMetrics.InitializeMetrics(gs)
	}
}

// Handler serves /metrics in the Prometheus formats and /healthz, which
// answers 200 while healthy returns true and 503 after. Without metrics,
// /metrics answers 404.
func (t *Telemetry) Handler(healthy func() bool) http.Handler {
	mux := http.NewServeMux()
	if t.Metrics() {
		mux.Handle("GET /metrics", promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{
			ErrorLog: slog.NewLogLogger(t.log.Handler(), slog.LevelWarn),
			Registry: t.registry, // promhttp_metric_handler_errors_total
		}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if healthy != nil && !healthy() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "shutting down")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// ErrorLogger is for an http.Server's ErrorLog: its lines go to the
// telemetry logger at warn level.
func (t *Telemetry) ErrorLogger() *log.Logger {
	return slog.NewLogLogger(t.Logger().Handler(), slog.LevelWarn)
}
