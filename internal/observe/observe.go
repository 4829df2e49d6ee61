// Package observe translates the registry's and the lease manager's
// lifecycle into telemetry: spans of collected objects and forced
// collections, the collection delay histogram, the registry's gauges and
// counters, and debug log lines of every change.
//
// It is the one package that knows both the domain (registry.Event,
// lease.Event, registry.Stats) and internal/telemetry, so that the
// telemetry set-up stays free of the domain: registryctl links it without
// linking the registry. The domain packages know nothing of this one:
// they call the funcs that Registry and Lease return, synchronously and
// cheaply, and the figures are read from registry.Stats and
// lease.Manager.Counts when Prometheus scrapes.
package observe

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/telemetry"
)

// collectionDelayBuckets are the bucket bounds, in seconds, of
// registry_collection_delay_seconds: from a GC right after the unpin to
// an object left weak for an hour in an idle process.
var collectionDelayBuckets = []float64{0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600}

// Observer observes one registry and its lease manager for one
// Telemetry. Its methods are safe for concurrent use; a nil *Observer is
// valid and observes nothing.
type Observer struct {
	tel     *telemetry.Telemetry
	log     *slog.Logger
	tracer  trace.Tracer
	tracing bool
	debug   bool                    // log every change
	delay   metric.Float64Histogram // registry.collection.delay; nil without metrics
	events  *pipeline               // nil unless tracing or debug logging
}

// New returns the observer that reports to tel, and starts its pipeline
// if anything needs it; tel's Shutdown stops the pipeline first, so that
// its last spans go out with the flush. New(nil) returns nil, which
// observes nothing.
func New(tel *telemetry.Telemetry) (*Observer, error) {
	if tel == nil {
		return nil, nil
	}
	o := &Observer{
		tel:     tel,
		log:     tel.Logger(),
		tracer:  tel.Tracer(),
		tracing: tel.Tracing(),
	}
	o.debug = o.log.Enabled(context.Background(), slog.LevelDebug)
	if tel.Metrics() {
		var err error
		o.delay, err = tel.MeterProvider().Meter(telemetry.Scope).Float64Histogram("registry.collection.delay",
			metric.WithUnit("s"),
			metric.WithDescription("How long objects had been unpinned when the garbage collector took them."),
			metric.WithExplicitBucketBoundaries(collectionDelayBuckets...))
		if err != nil {
			return nil, err
		}
	}
	if o.tracing || o.debug {
		o.events = newPipeline(o.log, o.tracer, o.tracing, o.debug)
		tel.OnShutdown(o.events.stop)
	}
	return o, nil
}

// Registry returns the func for registry.Config.Observe, or nil when
// nothing observes objects (so the registry does not even call).
func (o *Observer) Registry() func(registry.Event) {
	if o == nil || (o.delay == nil && o.events == nil) {
		return nil
	}
	return o.observeObject
}

// observeObject is called by the registry with the object's shard lock
// held: it records the collection delay and queues the event, and never
// blocks.
func (o *Observer) observeObject(ev registry.Event) {
	if ev.Kind == registry.EventCollected && o.delay != nil {
		o.delay.Record(context.Background(), ev.UnpinnedFor.Seconds())
	}
	if o.events != nil {
		o.events.enqueue(ev)
	}
}

// Lease returns the func for lease.Config.Observe, or nil when nothing
// observes leases. It logs each change at debug level.
func (o *Observer) Lease() func(lease.Event) {
	if o == nil || !o.debug {
		return nil
	}
	return func(ev lease.Event) {
		attrs := []slog.Attr{slog.String("lease_id", ev.LeaseID), slog.String("client", ev.Client)}
		switch ev.Kind {
		case lease.EventOpened:
			attrs = append(attrs, slog.String("peer", ev.Peer), slog.Duration("grace", ev.Grace))
		case lease.EventResumed, lease.EventDetached:
			attrs = append(attrs, slog.String("peer", ev.Peer), slog.Duration("grace", ev.Grace), slog.Int("pins", ev.Pins))
		case lease.EventEnded:
			attrs = append(attrs, slog.String("end", EndName(ev.End)), slog.Int("released", ev.Released))
			if ev.Reason != "" {
				attrs = append(attrs, slog.String("reason", ev.Reason))
			}
		}
		o.log.LogAttrs(context.Background(), slog.LevelDebug, "lease "+ev.Kind.String(), attrs...)
	}
}

// StartCollect starts the span of a forced collection, child of ctx's
// span, and returns the func that ends it with the report. Objects the
// registry reaps meanwhile link their SpanObjectCollected to it. Without
// a recording span in ctx it does nothing.
func (o *Observer) StartCollect(ctx context.Context) (end func(registry.CollectReport)) {
	if o == nil || !o.tracing || !trace.SpanFromContext(ctx).IsRecording() {
		return func(registry.CollectReport) {}
	}
	_, span := o.tracer.Start(ctx, telemetry.SpanCollect, trace.WithSpanKind(trace.SpanKindInternal))
	sc := span.SpanContext()
	var prev *trace.SpanContext
	if p := o.events; p != nil {
		prev = p.collect.Swap(&sc)
	}
	return func(rep registry.CollectReport) {
		if p := o.events; p != nil {
			p.collect.CompareAndSwap(&sc, prev) // a concurrent collection may have replaced it
		}
		span.SetAttributes(
			telemetry.KeyObjects.Int64(rep.Objects),
			telemetry.KeyBytes.Int64(rep.Bytes),
			telemetry.KeyDuration.Float64(rep.Duration.Seconds()),
			telemetry.KeyHeapBefore.Int64(int64(rep.HeapBefore)),
			telemetry.KeyHeapAfter.Int64(int64(rep.HeapAfter)),
		)
		span.End()
	}
}

// dropped is how many lifecycle events the pipeline dropped.
func (o *Observer) dropped() int64 {
	if o.events == nil {
		return 0
	}
	return o.events.dropped.Load()
}
