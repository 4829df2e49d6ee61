package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// eventQueue is how many lifecycle events the pipeline may fall behind
// before it drops them (and says so): the registry never waits for it.
const eventQueue = 4096

// pipeline turns the registry's lifecycle events into spans and debug
// log lines on a goroutine of its own, so that exporting and logging
// never hold a registry lock.
type pipeline struct {
	log     *slog.Logger
	tracer  trace.Tracer
	tracing bool // make a span of each COLLECTED event
	debug   bool // log every event

	ch      chan item     // never closed: the runtime may reap after stop
	quit    chan struct{} // closed by stop
	done    chan struct{} // closed when run returns
	once    sync.Once
	dropped atomic.Int64 // events not queued, since the start
	warned  int64        // dropped when last logged; only run uses it

	// collect is the span context of the forced collection in progress,
	// if any: objects it reaps link to it.
	collect atomic.Pointer[trace.SpanContext]
}

// item is one queued event and the forced collection that reaped it.
type item struct {
	ev      registry.Event
	collect trace.SpanContext
}

// startEvents starts the pipeline if anything needs it.
func (t *Telemetry) startEvents() {
	debug := t.log.Enabled(context.Background(), slog.LevelDebug)
	if !t.tracing && !debug {
		return
	}
	p := &pipeline{
		log: t.log, tracer: t.tracer, tracing: t.tracing, debug: debug,
		ch: make(chan item, eventQueue), quit: make(chan struct{}), done: make(chan struct{}),
	}
	t.events = p
	go p.run()
}

// RegistryObserver returns the func for registry.Config.Observe, or nil
// when nothing observes objects (so the registry does not even call).
func (t *Telemetry) RegistryObserver() func(registry.Event) {
	if t == nil || (t.delay == nil && t.events == nil) {
		return nil
	}
	return t.observeObject
}

// observeObject is called by the registry with the object's shard lock
// held: it records the collection delay and queues the event, and never
// blocks.
func (t *Telemetry) observeObject(ev registry.Event) {
	if ev.Kind == registry.EventCollected && t.delay != nil {
		t.delay.Record(context.Background(), ev.UnpinnedFor.Seconds())
	}
	p := t.events
	if p == nil || (!p.debug && ev.Kind != registry.EventCollected) {
		return
	}
	it := item{ev: ev}
	if ev.Kind == registry.EventCollected {
		if sc := p.collect.Load(); sc != nil {
			it.collect = *sc
		}
	}
	select {
	case p.ch <- it:
	default:
		p.dropped.Add(1)
	}
}

// run consumes events until stop, then what was queued before it.
func (p *pipeline) run() {
	defer close(p.done)
	for {
		select {
		case it := <-p.ch:
			p.handle(it)
		case <-p.quit:
			for {
				select {
				case it := <-p.ch:
					p.handle(it)
				default:
					return
				}
			}
		}
	}
}

func (p *pipeline) handle(it item) {
	if n := p.dropped.Load(); n > p.warned {
		p.log.Warn("telemetry fell behind the registry: lifecycle events were neither traced nor logged", "dropped", n-p.warned)
		p.warned = n
	}
	ev := it.ev
	if p.debug {
		attrs := []slog.Attr{
			slog.String("event", ev.Kind.String()),
			slog.String("handle", ev.Handle),
			slog.String("state", ev.State.String()),
			slog.Int("pins", ev.Pins),
			slog.Int64("size", ev.Size),
			slog.Uint64("seq", ev.Seq),
		}
		if ev.LeaseID != "" {
			attrs = append(attrs, slog.String("lease_id", ev.LeaseID))
		}
		if ev.Kind == registry.EventCollected {
			attrs = append(attrs, slog.Duration("unpinned_for", ev.UnpinnedFor))
		}
		p.log.LogAttrs(context.Background(), slog.LevelDebug, "object "+ev.Kind.String(), attrs...)
	}
	if p.tracing && ev.Kind == registry.EventCollected {
		opts := []trace.SpanStartOption{
			trace.WithNewRoot(),
			trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithTimestamp(ev.Time.Add(-ev.UnpinnedFor)),
			trace.WithAttributes(
				KeyHandle.String(ev.Handle),
				KeyObjectSize.Int64(ev.Size),
				KeyUnpinnedFor.Float64(ev.UnpinnedFor.Seconds()),
				KeyForced.Bool(it.collect.IsValid()),
			),
		}
		if it.collect.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: it.collect}))
		}
		_, span := p.tracer.Start(context.Background(), SpanObjectCollected, opts...)
		span.End(trace.WithTimestamp(ev.Time))
	}
}

// stop ends run after it has handled what was queued, or when ctx ends.
func (p *pipeline) stop(ctx context.Context) {
	p.once.Do(func() { close(p.quit) })
	select {
	case <-p.done:
	case <-ctx.Done():
	}
}

// LeaseObserver returns the func for lease.Config.Observe, or nil when
// nothing observes leases. It logs each change at debug level.
func (t *Telemetry) LeaseObserver() func(lease.Event) {
	if t == nil || !t.log.Enabled(context.Background(), slog.LevelDebug) {
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
		t.log.LogAttrs(context.Background(), slog.LevelDebug, "lease "+ev.Kind.String(), attrs...)
	}
}

// StartCollect starts the span of a forced collection, child of ctx's
// span, and returns the func that ends it with the report. Objects the
// registry reaps meanwhile link their SpanObjectCollected to it. Without
// a recording span in ctx it does nothing.
func (t *Telemetry) StartCollect(ctx context.Context) (end func(registry.CollectReport)) {
	if !t.Tracing() || !trace.SpanFromContext(ctx).IsRecording() {
		return func(registry.CollectReport) {}
	}
	_, span := t.tracer.Start(ctx, SpanCollect, trace.WithSpanKind(trace.SpanKindInternal))
	sc := span.SpanContext()
	var prev *trace.SpanContext
	if p := t.events; p != nil {
		prev = p.collect.Swap(&sc)
	}
	return func(rep registry.CollectReport) {
		if p := t.events; p != nil {
			p.collect.CompareAndSwap(&sc, prev) // a concurrent collection may have replaced it
		}
		span.SetAttributes(
			KeyObjects.Int64(rep.Objects),
			KeyBytes.Int64(rep.Bytes),
			KeyDuration.Float64(rep.Duration.Seconds()),
			KeyHeapBefore.Int64(int64(rep.HeapBefore)),
			KeyHeapAfter.Int64(int64(rep.HeapAfter)),
		)
		span.End()
	}
}

// Instrument registers the registry's metrics, read from reg.Stats and
// leases.Counts each time they are collected, so that they cost the hot
// paths nothing and are exact. Call it once. It does nothing without
// metrics.
func (t *Telemetry) Instrument(reg *registry.Registry, leases *lease.Manager) error {
	if !t.Metrics() {
		return nil
	}
	m := t.meter()
	var errs []error
	gauge := func(name, unit, desc string) metric.Int64ObservableGauge {
		g, err := m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return g
	}
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	var (
		objects    = gauge("registry.objects", "{object}", "Live objects by state.")
		bytes      = gauge("registry.object.bytes", "By", "Payload bytes of live objects by state.")
		leaseCount = gauge("registry.leases", "{lease}", "Live leases: attached to a stream, or detached and waiting out their grace.")
		pins       = gauge("registry.pins", "{pin}", "Pins: one per lease per object it pins.")
		watchers   = gauge("registry.watchers", "{watcher}", "Open Watch and WatchEvents subscriptions.")
		puts       = counter("registry.puts", "{object}", "Objects put.")
		resolves   = counter("registry.resolves", "{resolve}", "Resolve calls by outcome: hit, or why they missed.")
		collected  = counter("registry.collected.objects", "{object}", "Objects taken by the garbage collector.")
		collBytes  = counter("registry.collected.bytes", "By", "Payload bytes of the objects taken by the garbage collector.")
		deleted    = counter("registry.deleted.objects", "{object}", "Objects deleted by an operator.")
		gcCycles   = counter("registry.gc.cycles", "{cycle}", "Completed Go garbage collection cycles.")
		dropped    = counter("registry.telemetry.dropped.events", "{event}", "Lifecycle events the tracing and logging pipeline dropped because it fell behind.")
		leaks      = gauge("registry.suspected.leaks", "{object}", "WEAK objects that survived --leak-gc-cycles garbage collections: something still references them.")
		cached     = gauge("registry.soft.cache.bytes", "By", "Payload bytes the soft cache holds strongly.")
	)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	states := []registry.State{registry.Pinned, registry.Lingering, registry.Weak}
	stateAttrs := make(map[registry.State]metric.ObserveOption, len(states))
	for _, s := range states {
		stateAttrs[s] = metric.WithAttributeSet(attribute.NewSet(attribute.String("state", StateName(s))))
	}
	outcome := func(o string) metric.ObserveOption {
		return metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", o)))
	}
	attached := metric.WithAttributeSet(attribute.NewSet(attribute.String("state", "attached")))
	detached := metric.WithAttributeSet(attribute.NewSet(attribute.String("state", "detached")))
	_, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := reg.Stats()
		for _, s := range states {
			o.ObserveInt64(objects, st.Objects[s], stateAttrs[s])
			o.ObserveInt64(bytes, st.Bytes[s], stateAttrs[s])
		}
		a, d := leases.Counts()
		o.ObserveInt64(leaseCount, int64(a), attached)
		o.ObserveInt64(leaseCount, int64(d), detached)
		o.ObserveInt64(pins, st.Pins)
		o.ObserveInt64(watchers, int64(st.Watchers))
		o.ObserveInt64(puts, st.Puts)
		o.ObserveInt64(resolves, st.ResolveHits, outcome(OutcomeHit))
		for reason, n := range st.ResolveMisses {
			o.ObserveInt64(resolves, n, outcome(missOutcomes[reason]))
		}
		o.ObserveInt64(collected, st.Collected)
		o.ObserveInt64(collBytes, st.CollectedBytes)
		o.ObserveInt64(deleted, st.Deleted)
		o.ObserveInt64(gcCycles, st.GCCycles)
		o.ObserveInt64(leaks, st.SuspectedLeaks)
		o.ObserveInt64(cached, st.SoftCache.Bytes)
		if p := t.events; p != nil {
			o.ObserveInt64(dropped, p.dropped.Load())
		} else {
			o.ObserveInt64(dropped, 0)
		}
		return nil
	}, objects, bytes, leaseCount, pins, watchers, puts, resolves, collected, collBytes, deleted, gcCycles, dropped, leaks, cached)
	return err
}
