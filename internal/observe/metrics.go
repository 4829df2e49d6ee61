package observe

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/telemetry"
)

// Instrument registers the registry's metrics, read from reg.Stats and
// leases.Counts each time they are collected, so that they cost the hot
// paths nothing and are exact. Call it once. It does nothing without
// metrics.
func (obs *Observer) Instrument(reg *registry.Registry, leases *lease.Manager) error {
	if obs == nil || !obs.tel.Metrics() {
		return nil
	}
	m := obs.tel.MeterProvider().Meter(telemetry.Scope)
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
		o.ObserveInt64(resolves, st.ResolveHits, outcome(telemetry.OutcomeHit))
		for reason, n := range st.ResolveMisses {
			o.ObserveInt64(resolves, n, outcome(missOutcomes[reason]))
		}
		o.ObserveInt64(collected, st.Collected)
		o.ObserveInt64(collBytes, st.CollectedBytes)
		o.ObserveInt64(deleted, st.Deleted)
		o.ObserveInt64(gcCycles, st.GCCycles)
		o.ObserveInt64(leaks, st.SuspectedLeaks)
		o.ObserveInt64(cached, st.SoftCache.Bytes)
		o.ObserveInt64(dropped, obs.dropped())
		return nil
	}, objects, bytes, leaseCount, pins, watchers, puts, resolves, collected, collBytes, deleted, gcCycles, dropped, leaks, cached)
	return err
}
