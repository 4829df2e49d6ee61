package server

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/telemetry"
)

// tracedEnv is an env whose server traces into rec.
func tracedEnv(t *testing.T) (*env, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tel, err := telemetry.New(context.Background(), telemetry.Config{
		TracerProvider: tp,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the server's own cleanup
		tel.Shutdown(context.Background())
		tp.Shutdown(context.Background())
	})
	return newEnvWith(t, envOptions{telemetry: tel}), rec
}

// serverSpan waits for the server span of method to end and returns it.
func serverSpan(t *testing.T, rec *tracetest.SpanRecorder, method string) sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, s := range rec.Ended() {
			if s.Name() == method && s.SpanKind() == trace.SpanKindServer {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no server span %s ended; spans: %v", method, rec.Ended())
		}
		time.Sleep(time.Millisecond)
	}
}

// eventAttrs returns the attributes of span's event name, failing if it
// has none.
func eventAttrs(t *testing.T, span sdktrace.ReadOnlySpan, name string) map[attribute.Key]attribute.Value {
	t.Helper()
	for _, ev := range span.Events() {
		if ev.Name == name {
			out := map[attribute.Key]attribute.Value{}
			for _, kv := range ev.Attributes {
				out[kv.Key] = kv.Value
			}
			return out
		}
	}
	t.Fatalf("span %s has no event %s: %v", span.Name(), name, span.Events())
	return nil
}

// TestLeaseSpanSaysHowTheLeaseEnded: the lease stream's span ends with
// an event saying whether the lease was closed, dropped, left detached
// for its grace, or revoked, and how many pins went with it.
func TestLeaseSpanSaysHowTheLeaseEnded(t *testing.T) {
	tests := []struct {
		name  string
		grace time.Duration
		end   func(t *testing.T, e *env, lc *leaseClient)
		event string
		want  map[attribute.Key]attribute.Value
	}{
		{"closed", 0, func(t *testing.T, e *env, lc *leaseClient) { lc.close() },
			telemetry.EventLeaseEnd, map[attribute.Key]attribute.Value{
				telemetry.KeyLeaseEnd: attribute.StringValue("closed"), telemetry.KeyReleased: attribute.IntValue(1)}},
		{"stream cut without grace", 0, func(t *testing.T, e *env, lc *leaseClient) { lc.cancel() },
			telemetry.EventLeaseEnd, map[attribute.Key]attribute.Value{
				telemetry.KeyLeaseEnd: attribute.StringValue("dropped"), telemetry.KeyReleased: attribute.IntValue(1)}},
		{"stream cut with grace", time.Minute, func(t *testing.T, e *env, lc *leaseClient) { lc.cancel() },
			telemetry.EventLeaseDetach, map[attribute.Key]attribute.Value{
				telemetry.KeyLeaseGrace: attribute.Float64Value(60), telemetry.KeyLeasePins: attribute.IntValue(1)}},
		{"revoked", 0, func(t *testing.T, e *env, lc *leaseClient) {
			if _, err := e.admin.RevokeLease(ctxT(t), &registryv1.RevokeLeaseRequest{LeaseId: lc.id, Reason: "test"}); err != nil {
				t.Fatal(err)
			}
		}, telemetry.EventLeaseEnd, map[attribute.Key]attribute.Value{
			telemetry.KeyLeaseEnd: attribute.StringValue("revoked"), telemetry.KeyReason: attribute.StringValue("test"),
			telemetry.KeyReleased: attribute.IntValue(1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, rec := tracedEnv(t)
			lc := e.openLease(t, "traced", tt.grace)
			e.put(t, "pinned by the lease", lc.id)
			tt.end(t, e, lc)
			span := serverSpan(t, rec, "registry.v1.RegistryService/Lease")
			open := eventAttrs(t, span, telemetry.EventLeaseOpen)
			if open[telemetry.KeyLeaseID].AsString() != lc.id || open[telemetry.KeyLeaseClient].AsString() != "traced" {
				t.Errorf("open event %v, want lease %s client traced", open, lc.id)
			}
			got := eventAttrs(t, span, tt.event)
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s %s = %v, want %v", tt.event, k, got[k].String(), v.String())
				}
			}
			if got[telemetry.KeyLeaseID].AsString() != lc.id {
				t.Errorf("%s names lease %v, want %s", tt.event, got[telemetry.KeyLeaseID].String(), lc.id)
			}
		})
	}
}

// TestPinFailureIsTracedWithItsReason: a handle that fails to pin is an
// event with the reason a unary call would carry.
func TestPinFailureIsTracedWithItsReason(t *testing.T) {
	e, rec := tracedEnv(t)
	lc := e.openLease(t, "traced", 0)
	lc.pin("obj_bad")
	lc.close()
	var pin sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == telemetry.SpanPin {
			pin = s
		}
	}
	if pin == nil {
		t.Fatalf("no %s span: %v", telemetry.SpanPin, rec.Ended())
	}
	got := eventAttrs(t, pin, telemetry.EventPinHandle)
	if got[telemetry.KeyOutcome].AsString() != "failed" || got[telemetry.KeyErrorReason].AsString() != ReasonHandleMalformed {
		t.Fatalf("pin event %v, want outcome failed, reason %s", got, ReasonHandleMalformed)
	}
}

// TestPutEventNamesItsLease: an object stored under a lease, by Put or by
// Upload, says so in its registry.put event, with the same attributes
// either way.
func TestPutEventNamesItsLease(t *testing.T) {
	tests := []struct {
		name, method string
		put          func(t *testing.T, e *env, leaseID string) string
	}{
		{"put", "registry.v1.RegistryService/Put", func(t *testing.T, e *env, leaseID string) string {
			return e.put(t, "put under a lease", leaseID)
		}},
		{"upload", "registry.v1.RegistryService/Upload", func(t *testing.T, e *env, leaseID string) string {
			return e.upload(t, &registryv1.UploadHeader{LeaseId: leaseID}, []byte("uploaded under a lease"), 8).GetHandle()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, rec := tracedEnv(t)
			lc := e.openLease(t, "traced", 0)
			h := tt.put(t, e, lc.id)
			got := eventAttrs(t, serverSpan(t, rec, tt.method), telemetry.EventPut)
			want := map[attribute.Key]attribute.Value{
				telemetry.KeyHandle:      attribute.StringValue(h),
				telemetry.KeyLeaseID:     attribute.StringValue(lc.id),
				telemetry.KeyObjectState: attribute.StringValue("pinned"),
				telemetry.KeyObjectPins:  attribute.IntValue(1),
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k].String(), v.String())
				}
			}
		})
	}
}
