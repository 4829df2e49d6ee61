package observe

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/trace"

	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/telemetry"
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

// newPipeline starts a pipeline.
func newPipeline(log *slog.Logger, tracer trace.Tracer, tracing, debug bool) *pipeline {
	p := &pipeline{
		log: log, tracer: tracer, tracing: tracing, debug: debug,
		ch: make(chan item, eventQueue), quit: make(chan struct{}), done: make(chan struct{}),
	}
	go p.run()
	return p
}

// enqueue queues ev if the pipeline has anything to do with it, and
// drops it rather than wait when the queue is full.
func (p *pipeline) enqueue(ev registry.Event) {
	if !p.debug && ev.Kind != registry.EventCollected {
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
				telemetry.KeyHandle.String(ev.Handle),
				telemetry.KeyObjectSize.Int64(ev.Size),
				telemetry.KeyUnpinnedFor.Float64(ev.UnpinnedFor.Seconds()),
				telemetry.KeyForced.Bool(it.collect.IsValid()),
			),
		}
		if it.collect.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: it.collect}))
		}
		_, span := p.tracer.Start(context.Background(), telemetry.SpanObjectCollected, opts...)
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
