package observe

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/telemetry"
	"github.com/weakref/registry/internal/testlog"
)

// A registry reaps collected objects on a goroutine of its own that ends once
// its queue is empty: one may still be finishing a large collection here.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/weakref/registry/internal/registry.(*Registry).drainReaps"))
}

// otelVars are the variables that turn tracing on; each test clears them,
// so that only its own TracerProvider traces.
var otelVars = []string{
	"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
}

// TestNothingObservedCostsNothing: with no tracing, no metrics and no
// debug logging, the registry and the leases get no observer to call.
func TestNothingObservedCostsNothing(t *testing.T) {
	for _, k := range otelVars {
		t.Setenv(k, "")
	}
	tel, err := telemetry.New(context.Background(), telemetry.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	obs, err := New(tel)
	if err != nil {
		t.Fatal(err)
	}
	if obs.Registry() != nil || obs.Lease() != nil {
		t.Fatal("an observer is set")
	}
	var nilObs *Observer // a nil Observer is valid too
	if nilObs.Registry() != nil || nilObs.Lease() != nil || nilObs.Instrument(nil, nil) != nil {
		t.Fatal("a nil Observer does something")
	}
	nilObs.StartCollect(context.Background())(registry.CollectReport{})
}

// fixture is a registry and lease manager observed by a Telemetry.
type fixture struct {
	tel    *telemetry.Telemetry
	obs    *Observer
	reg    *registry.Registry
	leases *lease.Manager
	codec  *handle.Codec
}

func newFixture(t testing.TB, cfg telemetry.Config) *fixture {
	return newFixtureWith(t, cfg, registry.Config{})
}

// newFixtureWith is newFixture with the registry configured by rc (its
// Codec and Observe are the fixture's).
func newFixtureWith(t testing.TB, cfg telemetry.Config, rc registry.Config) *fixture {
	t.Helper()
	tel, err := telemetry.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := New(tel)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := handle.NewCodec(handle.Config{Key: bytes.Repeat([]byte{1}, handle.MinKeyLen)})
	if err != nil {
		t.Fatal(err)
	}
	rc.Codec, rc.Observe = codec, obs.Registry()
	reg := registry.New(rc)
	leases := lease.New(lease.Config{Codec: codec, Registry: reg, Observe: obs.Lease(), MaxGrace: time.Minute})
	if err := obs.Instrument(reg, leases); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		leases.Shutdown()
		reg.Close()
		tel.Shutdown(context.Background())
	})
	return &fixture{tel: tel, obs: obs, reg: reg, leases: leases, codec: codec}
}

func TestMetricsHandlerServesRegistryFigures(t *testing.T) {
	for _, k := range otelVars {
		t.Setenv(k, "")
	}
	f := newFixture(t, telemetry.Config{Metrics: true, Logger: slog.New(slog.DiscardHandler)})
	s, err := f.leases.Open(lease.OpenParams{Client: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.leases.Put(auth.Anonymous, s.ID(), []byte("0123456789"), registry.Meta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reg.Put([]byte("weak bytes"), registry.Meta{}, nil); err != nil {
		t.Fatal(err)
	}
	healthy := true
	srv := httptest.NewServer(f.tel.Handler(func() bool { return healthy }))
	defer srv.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{
		`registry_objects{state="pinned"} 1`,
		`registry_objects{state="weak"} 1`,
		`registry_object_bytes{state="pinned"} 10`,
		`registry_leases{state="attached"} 1`,
		`registry_puts_total 2`,
		`registry_pins 1`,
		"go_goroutines",
		"process_cpu_seconds_total",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, tt := range []struct {
		healthy bool
		code    int
	}{{true, http.StatusOK}, {false, http.StatusServiceUnavailable}} {
		healthy = tt.healthy
		if code, body := get("/healthz"); code != tt.code {
			t.Errorf("/healthz while healthy=%v: %d %s, want %d", tt.healthy, code, body, tt.code)
		}
	}
}

// TestCollectedObjectsBecomeSpansAndHistogramSamples: each collected
// object is measured in registry_collection_delay_seconds and traced as a
// span from its last unpin to its collection, linked to the forced
// collection that reaped it.
func TestCollectedObjectsBecomeSpansAndHistogramSamples(t *testing.T) {
	for _, k := range otelVars {
		t.Setenv(k, "")
	}
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	f := newFixture(t, telemetry.Config{Metrics: true, TracerProvider: tp, Logger: slog.New(slog.DiscardHandler)})

	in, err := f.reg.Put(bytes.Repeat([]byte("z"), 64), registry.Meta{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A forced collection under a recording span, as AdminService/Collect
	// runs it.
	ctx, parent := tp.Tracer("test").Start(context.Background(), "AdminService/Collect")
	end := f.obs.StartCollect(ctx)
	rep := f.reg.Collect()
	end(rep)
	parent.End()
	if rep.Objects != 1 {
		t.Fatalf("collected %d objects, want 1", rep.Objects)
	}
	f.obs.events.stop(context.Background()) // handle what was queued

	var collect, collected sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		switch s.Name() {
		case telemetry.SpanCollect:
			collect = s
		case telemetry.SpanObjectCollected:
			collected = s
		}
	}
	if collect == nil || collected == nil {
		t.Fatalf("spans: %v", rec.Ended())
	}
	if collect.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("%s is not a child of the call's span", telemetry.SpanCollect)
	}
	wantAttr(t, collect.Attributes(), telemetry.KeyObjects.Int64(1), telemetry.KeyBytes.Int64(64))
	wantAttr(t, collected.Attributes(), telemetry.KeyHandle.String(in.Handle), telemetry.KeyObjectSize.Int64(64), telemetry.KeyForced.Bool(true))
	if l := collected.Links(); len(l) != 1 || l[0].SpanContext.SpanID() != collect.SpanContext().SpanID() {
		t.Errorf("links %v, want the %s span", l, telemetry.SpanCollect)
	}
	if collected.Parent().IsValid() {
		t.Errorf("%s has a parent; want a root span", telemetry.SpanObjectCollected)
	}
	if !collected.StartTime().Before(collected.EndTime()) || collected.StartTime().Before(in.Created) {
		t.Errorf("%s runs %v..%v; want from the put (%v) to the collection", telemetry.SpanObjectCollected, collected.StartTime(), collected.EndTime(), in.Created)
	}

	srv := httptest.NewServer(f.tel.Handler(nil))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"registry_collection_delay_seconds_count 1", "registry_collected_objects_total 1", "registry_collected_bytes_total 64"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func wantAttr(t *testing.T, got []attribute.KeyValue, want ...attribute.KeyValue) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, g := range got {
			if g.Key == w.Key {
				found = true
				if g.Value != w.Value {
					t.Errorf("attribute %s = %v, want %v", w.Key, g.Value.String(), w.Value.String())
				}
			}
		}
		if !found {
			t.Errorf("no attribute %s in %v", w.Key, got)
		}
	}
}

// TestLifecycleEventsAreLoggedAtDebug: with the logger at debug, every
// object and lease change is a log line; above debug, none is and the
// observers are not even installed.
func TestLifecycleEventsAreLoggedAtDebug(t *testing.T) {
	for _, k := range otelVars {
		t.Setenv(k, "")
	}
	tests := []struct {
		level slog.Level
		want  []string
	}{
		{slog.LevelDebug, []string{
			"msg=\"lease OPENED\"", "msg=\"object CREATED\"", "msg=\"object PINNED\"", "msg=\"object UNPINNED\"",
			"msg=\"object WEAK\"", "msg=\"lease ENDED\"", "end=closed released=1", "msg=\"object COLLECTED\"", "unpinned_for=",
		}},
		{slog.LevelInfo, nil},
	}
	for _, tt := range tests {
		t.Run(tt.level.String(), func(t *testing.T) {
			var logs testlog.Buffer
			f := newFixture(t, telemetry.Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: tt.level}))})
			s, err := f.leases.Open(lease.OpenParams{Client: "logged"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.leases.Put(auth.Anonymous, s.ID(), []byte("logged object"), registry.Meta{}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Close(0); err != nil {
				t.Fatal(err)
			}
			f.reg.Collect()
			f.tel.Shutdown(context.Background()) // the pipeline has logged all it queued
			for _, w := range tt.want {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("the log lacks %s:\n%s", w, logs.String())
				}
			}
			if tt.want == nil && logs.String() != "" {
				t.Errorf("logged above debug:\n%s", logs.String())
			}
		})
	}
}
