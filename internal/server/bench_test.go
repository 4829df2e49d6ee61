package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/telemetry"
)

// The benchmarks run the whole server on a real TCP loopback listener, so
// they measure what a client on the same machine sees: gRPC framing,
// HTTP/2 and the kernel's loopback included.

func loopbackEnv(b *testing.B) *env {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return newEnv(b, lis)
}

var benchPayload = bytes.Repeat([]byte("x"), 512)

func BenchmarkGRPCPut(b *testing.B) {
	e := loopbackEnv(b)
	ctx := ctxT(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.rs.Put(ctx, &registryv1.PutRequest{Data: benchPayload}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkGRPCResolveHit(b *testing.B) {
	e := loopbackEnv(b)
	lc := e.openLease(b, "bench", 0)
	h := e.put(b, string(benchPayload), lc.id)
	ctx := ctxT(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	b.RunParallel(func(pb *testing.PB) {
		req := &registryv1.ResolveRequest{Handle: h}
		for pb.Next() {
			if _, err := e.rs.Resolve(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkGRPCResolveCollected(b *testing.B) {
	e := loopbackEnv(b)
	h := e.put(b, "gone soon", "")
	ctx := ctxT(b)
	if _, err := e.admin.Collect(ctx, &registryv1.CollectRequest{}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := &registryv1.ResolveRequest{Handle: h}
		for pb.Next() {
			if _, err := e.rs.Resolve(ctx, req); err == nil {
				b.Error("resolved a collected object")
				return
			}
		}
	})
}

// BenchmarkGRPCPinUnpin measures one pin and one unpin round trip on an
// open lease stream: two messages each way per op.
func BenchmarkGRPCPinUnpin(b *testing.B) {
	e := loopbackEnv(b)
	h := e.put(b, string(benchPayload), "")
	holder := e.openLease(b, "holder", 0) // keeps the object alive throughout
	holder.pin(h)
	lc := e.openLease(b, "bench", 0)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if r := lc.pin(h); r[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_PINNED {
			b.Fatal(r)
		}
		if r := lc.unpin(h); r[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_UNPINNED {
			b.Fatal(r)
		}
	}
}

// BenchmarkGRPCResolveTelemetry measures Resolve over loopback gRPC with
// the telemetry set-ups registryd can run with, in one run so that
// benchstat -col /telemetry compares them (docs/PERFORMANCE.md):
//
//   - off: no Telemetry at all, as --telemetry=off.
//   - on: registryd's default, telemetry on with no OTEL_* variable and
//     no --metrics-addr: nothing is exported, nothing should be slower.
//   - metrics: with --metrics-addr (go-grpc-middleware's interceptor).
//   - traced: every call sampled and exported (to a no-op exporter).
func BenchmarkGRPCResolveTelemetry(b *testing.B) {
	for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		b.Setenv(k, "")
	}
	discard := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))
	setups := []struct {
		name    string
		on      bool // a Telemetry, or none
		metrics bool
		traced  bool
	}{
		{name: "off"},
		{name: "on", on: true},
		{name: "metrics", on: true, metrics: true},
		{name: "traced", on: true, traced: true},
	}
	for _, s := range setups {
		b.Run("telemetry="+s.name, func(b *testing.B) {
			var tel *telemetry.Telemetry
			if s.on {
				cfg := telemetry.Config{Logger: discard, Metrics: s.metrics}
				if s.traced {
					tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
					b.Cleanup(func() { tp.Shutdown(context.Background()) })
					cfg.TracerProvider = tp
				}
				var err error
				if tel, err = telemetry.New(context.Background(), cfg); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { tel.Shutdown(context.Background()) })
			}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			e := newEnvWith(b, envOptions{lis: lis, telemetry: tel})
			lc := e.openLease(b, "bench", 0)
			h := e.put(b, string(benchPayload), lc.id)
			ctx := ctxT(b)
			b.ReportAllocs()
			b.SetBytes(int64(len(benchPayload)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req := &registryv1.ResolveRequest{Handle: h}
				for pb.Next() {
					if _, err := e.rs.Resolve(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkGRPCResolveHitAuth is BenchmarkGRPCResolveHit with a client
// token checked on every call: what authentication and the role check
// cost beside it.
func BenchmarkGRPCResolveHitAuth(b *testing.B) {
	e := newEnvWith(b, envOptions{lis: loopbackListener(b), auth: newTestAuthenticator(b, true)})
	ctx := withToken(ctxT(b), clientToken)
	stream, err := e.rs.Lease(ctx) // pins the object, as the lease in BenchmarkGRPCResolveHit does
	if err != nil {
		b.Fatal(err)
	}
	lc := &leaseClient{t: b, stream: stream, cancel: func() {}}
	opened := lc.send(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Open{Open: &registryv1.OpenLease{ClientName: "bench"}}})
	resp, err := e.rs.Put(ctx, &registryv1.PutRequest{Data: benchPayload, LeaseId: opened.GetOpened().GetLeaseId()})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	b.RunParallel(func(pb *testing.PB) {
		req := &registryv1.ResolveRequest{Handle: resp.GetHandle()}
		for pb.Next() {
			if _, err := e.rs.Resolve(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
