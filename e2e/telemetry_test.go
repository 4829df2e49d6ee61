package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/telemetry"
)

// otlpReceiver is an OTLP/gRPC trace collector on loopback that keeps
// every span it is sent.
type otlpReceiver struct {
	collectortracepb.UnimplementedTraceServiceServer
	Endpoint string // http://127.0.0.1:port

	mu       sync.Mutex
	spans    []*tracepb.Span // guarded by mu
	services []string        // service.name of each export, guarded by mu
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{Endpoint: "http://" + lis.Addr().String()}
	gs := grpc.NewServer()
	collectortracepb.RegisterTraceServiceServer(gs, r)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return r
}

func (r *otlpReceiver) Export(_ context.Context, req *collectortracepb.ExportTraceServiceRequest) (*collectortracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		r.services = append(r.services, attrString(rs.GetResource().GetAttributes(), "service.name"))
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	return &collectortracepb.ExportTraceServiceResponse{}, nil
}

// named returns the received spans called name, oldest first.
func (r *otlpReceiver) named(name string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if s.GetName() == name {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *tracepb.Span) int { return cmp.Compare(a.GetStartTimeUnixNano(), b.GetStartTimeUnixNano()) })
	return out
}

// attr returns the attribute key among kvs, or nil.
func attr(kvs []*commonpb.KeyValue, key string) *commonpb.AnyValue {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue()
		}
	}
	return nil
}

func attrString(kvs []*commonpb.KeyValue, key string) string { return attr(kvs, key).GetStringValue() }

// wantAttrs fails unless kvs hold each of want (string, int or bool
// values).
func wantAttrs(t *testing.T, what string, kvs []*commonpb.KeyValue, want map[string]any) {
	t.Helper()
	for k, w := range want {
		v := attr(kvs, k)
		var got any
		switch w.(type) {
		case string:
			got = v.GetStringValue()
		case int:
			got = int(v.GetIntValue())
		case bool:
			got = v.GetBoolValue()
		}
		if v == nil || got != w {
			t.Errorf("%s: attribute %s = %v, want %v", what, k, v, w)
		}
	}
}

// event returns span's event called name, failing if there is none.
func event(t *testing.T, span *tracepb.Span, name string) *tracepb.Span_Event {
	t.Helper()
	for _, ev := range span.GetEvents() {
		if ev.GetName() == name {
			return ev
		}
	}
	t.Fatalf("span %s has no event %s; it has %v", span.GetName(), name, span.GetEvents())
	return nil
}

// TestTracesReachAnOTLPCollector runs registryd with OTEL_* pointing at a
// collector this test runs, drives an object through put, lease, resolve
// and collection with a traced client, and checks the spans registryd
// exports: gRPC server spans joined to the client's trace, the registry's
// own spans and events with their attributes, status codes, no health
// check, and trace ids on the request log lines.
func TestTracesReachAnOTLPCollector(t *testing.T) {
	rcv := startOTLPReceiver(t)
	d := startDaemonEnv(t, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.Endpoint,
		"OTEL_SERVICE_NAME=registryd-e2e",
		"OTEL_BSP_SCHEDULE_DELAY=50", // export every 50ms, not 5s
	}, "--log-format=json", "--log-slow=0") // a request line for every call, the Put's too

	// The test's own client traces into memory, and sends its context.
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	conn, err := grpc.NewClient(d.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(telemetry.ClientHandler(tp, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{conn: conn, reg: registryv1.NewRegistryServiceClient(conn), admin: registryv1.NewAdminServiceClient(conn)}

	if _, err := healthpb.NewHealthClient(conn).Check(rpcCtx(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health: %v", err)
	}
	data := []byte("traced object, forty-two bytes long......")
	l := openLease(t, c, &registryv1.OpenLease{ClientName: "e2e-trace"})
	h := put(t, c, data, l.ID())
	wantResolves(t, c, h, data)
	_, err = c.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: "obj_bad"})
	wantStatus(t, err, codes.InvalidArgument, "HANDLE_MALFORMED")
	l.send(t, &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Pin{Pin: &registryv1.PinHandles{Handles: []string{h}}}})
	l.in.mustNext(t)
	l.send(t, &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Unpin{Unpin: &registryv1.UnpinHandles{Handles: []string{h}}}})
	l.in.mustNext(t)
	l.close(t, 0)
	if got := collect(t, c).GetCollectedObjects(); got != 1 {
		t.Fatalf("collect freed %d objects, want 1", got)
	}
	wantGone(t, c, h, codes.NotFound, "OBJECT_COLLECTED")

	const (
		putName     = "registry.v1.RegistryService/Put"
		resolveName = "registry.v1.RegistryService/Resolve"
		leaseName   = "registry.v1.RegistryService/Lease"
		collectName = "registry.v1.AdminService/Collect"
	)
	poll(t, waitTimeout, "registryd's spans at the collector", func() bool {
		return len(rcv.named(putName)) == 1 && len(rcv.named(resolveName)) == 3 && len(rcv.named(leaseName)) == 1 &&
			len(rcv.named(telemetry.SpanPin)) == 1 && len(rcv.named(telemetry.SpanUnpin)) == 1 &&
			len(rcv.named(collectName)) == 1 && len(rcv.named(telemetry.SpanCollect)) == 1 &&
			len(rcv.named(telemetry.SpanObjectCollected)) == 1
	})

	t.Run("client and server spans share one trace", func(t *testing.T) {
		var client sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			if s.Name() == putName {
				client = s
			}
		}
		if client == nil || client.SpanKind() != trace.SpanKindClient {
			t.Fatalf("the client recorded no client span for Put: %v", rec.Ended())
		}
		server := rcv.named(putName)[0]
		if got, want := hex.EncodeToString(server.GetTraceId()), client.SpanContext().TraceID().String(); got != want {
			t.Fatalf("server span trace id %s, client span trace id %s: want one trace", got, want)
		}
		if got, want := hex.EncodeToString(server.GetParentSpanId()), client.SpanContext().SpanID().String(); got != want {
			t.Fatalf("server span's parent %s, want the client span %s", got, want)
		}
		if server.GetKind() != tracepb.Span_SPAN_KIND_SERVER {
			t.Errorf("server span kind %v", server.GetKind())
		}
		wantAttrs(t, "Put span", server.GetAttributes(), map[string]any{
			"rpc.method": putName, "rpc.system.name": "grpc", "rpc.response.status_code": "OK",
		})
		wantAttrs(t, "put event", event(t, server, telemetry.EventPut).GetAttributes(), map[string]any{
			string(telemetry.KeyHandle): h, string(telemetry.KeyObjectSize): len(data),
			string(telemetry.KeyObjectState): "pinned", string(telemetry.KeyLeaseID): l.ID(),
		})
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		for _, svc := range rcv.services {
			if svc != "registryd-e2e" {
				t.Errorf("resource service.name %q, want OTEL_SERVICE_NAME's registryd-e2e", svc)
			}
		}
	})

	t.Run("resolve outcomes and status codes", func(t *testing.T) {
		spans := rcv.named(resolveName)
		tests := []struct {
			outcome, code, reason string
		}{
			{"hit", "OK", ""},
			{"malformed", "INVALID_ARGUMENT", "HANDLE_MALFORMED"},
			{"collected", "NOT_FOUND", "OBJECT_COLLECTED"},
		}
		for i, tt := range tests {
			s := spans[i]
			// NOT_FOUND and INVALID_ARGUMENT are the caller's business:
			// the server span's status stays unset, as the semantic
			// conventions say; the client's is an error.
			if s.GetStatus().GetCode() != tracepb.Status_STATUS_CODE_UNSET {
				t.Errorf("resolve %s: server span status %v, want unset", tt.outcome, s.GetStatus())
			}
			wantAttrs(t, "resolve "+tt.outcome, s.GetAttributes(), map[string]any{"rpc.response.status_code": tt.code})
			if tt.reason != "" {
				wantAttrs(t, "resolve "+tt.outcome, s.GetAttributes(), map[string]any{string(telemetry.KeyErrorReason): tt.reason})
			}
			wantAttrs(t, "resolve "+tt.outcome, event(t, s, telemetry.EventResolve).GetAttributes(), map[string]any{string(telemetry.KeyOutcome): tt.outcome})
		}
		var clientErrors int
		for _, s := range rec.Ended() {
			if s.Name() == resolveName && s.Status().Code.String() == "Error" {
				clientErrors++
			}
		}
		if clientErrors != 2 {
			t.Errorf("%d client Resolve spans have status Error, want 2 (malformed, collected)", clientErrors)
		}
	})

	t.Run("lease stream, pin and unpin", func(t *testing.T) {
		stream := rcv.named(leaseName)[0]
		wantAttrs(t, "lease open", event(t, stream, telemetry.EventLeaseOpen).GetAttributes(), map[string]any{
			string(telemetry.KeyLeaseID): l.ID(), string(telemetry.KeyLeaseClient): "e2e-trace", string(telemetry.KeyLeaseResumed): false,
		})
		wantAttrs(t, "lease end", event(t, stream, telemetry.EventLeaseEnd).GetAttributes(), map[string]any{
			string(telemetry.KeyLeaseID): l.ID(), string(telemetry.KeyLeaseEnd): "closed", string(telemetry.KeyReleased): 0,
		})
		for _, tt := range []struct{ span, event, outcome, state string }{
			{telemetry.SpanPin, telemetry.EventPinHandle, "already_pinned", "pinned"},
			{telemetry.SpanUnpin, telemetry.EventUnpinHandle, "unpinned", "weak"},
		} {
			s := rcv.named(tt.span)[0]
			if !bytes.Equal(s.GetTraceId(), stream.GetTraceId()) || !bytes.Equal(s.GetParentSpanId(), stream.GetSpanId()) {
				t.Errorf("%s is not a child of the lease stream's span", tt.span)
			}
			wantAttrs(t, tt.span, s.GetAttributes(), map[string]any{string(telemetry.KeyLeaseID): l.ID(), string(telemetry.KeyHandles): 1})
			wantAttrs(t, tt.event, event(t, s, tt.event).GetAttributes(), map[string]any{
				string(telemetry.KeyHandle): h, string(telemetry.KeyOutcome): tt.outcome, string(telemetry.KeyObjectState): tt.state,
			})
		}
	})

	t.Run("collection", func(t *testing.T) {
		call, coll, obj := rcv.named(collectName)[0], rcv.named(telemetry.SpanCollect)[0], rcv.named(telemetry.SpanObjectCollected)[0]
		if !bytes.Equal(coll.GetParentSpanId(), call.GetSpanId()) {
			t.Errorf("%s is not a child of the Collect call's span", telemetry.SpanCollect)
		}
		wantAttrs(t, telemetry.SpanCollect, coll.GetAttributes(), map[string]any{
			string(telemetry.KeyObjects): 1, string(telemetry.KeyBytes): len(data),
		})
		wantAttrs(t, telemetry.SpanObjectCollected, obj.GetAttributes(), map[string]any{
			string(telemetry.KeyHandle): h, string(telemetry.KeyObjectSize): len(data), string(telemetry.KeyForced): true,
		})
		if links := obj.GetLinks(); len(links) != 1 || !bytes.Equal(links[0].GetSpanId(), coll.GetSpanId()) {
			t.Errorf("%s links %v, want the %s span", telemetry.SpanObjectCollected, links, telemetry.SpanCollect)
		}
		// It lasts from the last unpin to the collection.
		weakFor := attr(obj.GetAttributes(), string(telemetry.KeyUnpinnedFor)).GetDoubleValue()
		unpin := rcv.named(telemetry.SpanUnpin)[0]
		if weakFor <= 0 || obj.GetStartTimeUnixNano() < unpin.GetStartTimeUnixNano() ||
			obj.GetEndTimeUnixNano() > call.GetEndTimeUnixNano() || obj.GetEndTimeUnixNano() <= obj.GetStartTimeUnixNano() {
			t.Errorf("%s runs %d..%d (unpinned for %vs); want from the unpin (%d) to within the Collect call (..%d)",
				telemetry.SpanObjectCollected, obj.GetStartTimeUnixNano(), obj.GetEndTimeUnixNano(), weakFor,
				unpin.GetStartTimeUnixNano(), call.GetEndTimeUnixNano())
		}
	})

	t.Run("health checks are not traced", func(t *testing.T) {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		for _, s := range rcv.spans {
			if strings.HasPrefix(s.GetName(), "grpc.health.v1.Health/") {
				t.Errorf("the collector received a health check span: %s", s.GetName())
			}
		}
		for _, s := range rec.Ended() {
			if strings.HasPrefix(s.Name(), "grpc.health.v1.Health/") {
				t.Errorf("the client traced a health check: %s", s.Name())
			}
		}
	})

	t.Run("request log lines carry the trace id", func(t *testing.T) {
		server := rcv.named(putName)[0]
		want := hex.EncodeToString(server.GetTraceId())
		var found bool
		for line := range strings.SplitSeq(d.Stderr(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "finished call" || rec["grpc.method"] != "Put" {
				continue
			}
			found = true
			if rec["trace_id"] != want || rec["span_id"] != hex.EncodeToString(server.GetSpanId()) {
				t.Errorf("Put's log line has trace_id %v span_id %v, want %s %x: %s", rec["trace_id"], rec["span_id"], want, server.GetSpanId(), line)
			}
		}
		if !found {
			t.Fatalf("no JSON request line for Put in registryd's log:\n%s", d.Stderr())
		}
	})
}

// TestNoOTELNoTraces: without OTEL_* registryd says tracing is off, and
// a request log line carries no trace id even when the client sends a
// traceparent.
func TestNoOTELNoTraces(t *testing.T) {
	d := startDaemon(t)
	if !strings.Contains(d.Stderr(), "tracing=false") {
		t.Fatalf("registryd does not say tracing is off:\n%s", d.Stderr())
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(tracetest.NewSpanRecorder()))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	conn, err := grpc.NewClient(d.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(telemetry.ClientHandler(tp, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_, err = registryv1.NewRegistryServiceClient(conn).Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: "obj_bad"})
	wantStatus(t, err, codes.InvalidArgument, "HANDLE_MALFORMED")
	poll(t, waitTimeout, "the request line", func() bool { return strings.Contains(d.Stderr(), "grpc.method=Resolve") })
	if strings.Contains(d.Stderr(), "trace_id") {
		t.Fatalf("a trace id was logged with tracing off:\n%s", d.Stderr())
	}
}

// TestTelemetryRegistryctlSpansOfCleanCallsAreOK runs registryctl with
// OTEL_* pointing at a collector and checks that the client spans of calls
// the server answered in full end OK: a get (Download), and the lease of a
// hold and of a put --hold closed by an interrupt. They used to end
// CANCELLED, with status ERROR, because the client cut each stream after
// its last message instead of reading it to the server's status.
func TestTelemetryRegistryctlSpansOfCleanCallsAreOK(t *testing.T) {
	t.Parallel()
	rcv := startOTLPReceiver(t)
	d := startDaemon(t)
	otel := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + rcv.Endpoint, "OTEL_SERVICE_NAME=registryctl-e2e"}

	// Lingering, so that no collection takes it before the get.
	r := runCtl(t, ctlOpts{addr: d.Addr, env: otel, stdin: []byte("traced by registryctl")}, "put", "--linger", "5m")
	wantSuccess(t, r)
	h := strings.TrimSpace(r.stdout)
	wantSuccess(t, runCtl(t, ctlOpts{addr: d.Addr, env: otel}, "get", h))

	hold := startCtl(t, ctlOpts{addr: d.Addr, env: otel}, "hold", h)
	hold.waitStderr(t, "holding ")
	wantExit(t, hold.interrupt(t), ctlOK)

	p := startCtl(t, ctlOpts{addr: d.Addr, env: otel, stdin: []byte("held by registryctl")}, "put", "--hold")
	p.waitStderr(t, "holding ")
	wantExit(t, p.interrupt(t), ctlOK)

	const (
		download = "registry.v1.RegistryService/Download"
		lease    = "registry.v1.RegistryService/Lease"
	)
	poll(t, waitTimeout, "registryctl's spans at the collector", func() bool {
		return len(rcv.named(download)) == 1 && len(rcv.named(lease)) == 2
	})
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for _, s := range rcv.spans {
		if s.GetKind() != tracepb.Span_SPAN_KIND_CLIENT {
			t.Errorf("span %s of kind %v: registryctl makes client spans only", s.GetName(), s.GetKind())
		}
		if code := s.GetStatus().GetCode(); code == tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("client span %s ended %v %q (%s), want OK", s.GetName(), code, s.GetStatus().GetMessage(),
				attrString(s.GetAttributes(), "rpc.response.status_code"))
		}
	}
}
