package server

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/testlog"
)

// panicky is a service whose every method panics.
type panicky struct {
	testpb.UnimplementedTestServiceServer
}

func (panicky) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	panic("boom")
}

func (panicky) StreamingOutputCall(*testpb.StreamingOutputCallRequest, grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	panic("boom")
}

// TestPanicBecomesInternalError: a panicking handler answers INTERNAL
// with a reason, is logged with its stack, and the server keeps serving.
func TestPanicBecomesInternalError(t *testing.T) {
	var logs testlog.Buffer
	tc := servePanicky(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	for i := range 2 { // twice: the server survived the first
		_, err := tc.UnaryCall(ctxT(t), &testpb.SimpleRequest{})
		wantStatus(t, err, codes.Internal, ReasonInternal)
		if i == 0 && !strings.Contains(logs.String(), "panic serving a request") {
			t.Fatalf("the panic was not logged:\n%s", logs.String())
		}
	}
	stream, err := tc.StreamingOutputCall(ctxT(t), &testpb.StreamingOutputCallRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantStatus(t, err, codes.Internal, ReasonInternal)
}

// TestEachRequestIsLoggedOnce: one structured line per request with the
// method, code and duration; health probes are not logged.
func TestEachRequestIsLoggedOnce(t *testing.T) {
	var logs testlog.Buffer
	e := newEnvWith(t, envOptions{logger: slog.New(slog.NewTextHandler(&logs, nil))})
	_, err := e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: "obj_bad"})
	wantStatus(t, err, codes.InvalidArgument, ReasonHandleMalformed)
	if _, err := healthpb.NewHealthClient(e.conn).Check(ctxT(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	// The line is written after the answer is sent: poll for it.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "grpc.method=Resolve") && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(l, "finished call") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("got %d request lines, want 1 (the health check is not logged):\n%s", len(lines), logs.String())
	}
	for _, want := range []string{"grpc.service=registry.v1.RegistryService", "grpc.method=Resolve", "grpc.code=InvalidArgument", "grpc.time_ms="} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("request line lacks %q: %s", want, lines[0])
		}
	}
}

// TestRequestLinesAreFailedAndSlowCalls: with a slow-call threshold, a
// call that ends OK sooner is logged at debug only, so that a busy
// server writes no line per call at info; a failed call is logged at its
// code's level, whatever the threshold, and at warn too when that level
// is an error's; with the threshold 0 every call is logged at info.
func TestRequestLinesAreFailedAndSlowCalls(t *testing.T) {
	tests := []struct {
		name    string
		level   slog.Level
		slow    time.Duration
		okLine  string // the OK Resolve's line's level, "" for none
		badLine string // the malformed Resolve's
	}{
		{"info, OK calls quicker than the threshold", slog.LevelInfo, time.Hour, "", "level=INFO"},
		{"info, every call slow", slog.LevelInfo, 0, "level=INFO", "level=INFO"},
		{"debug logs every call", slog.LevelDebug, time.Hour, "level=DEBUG", "level=INFO"},
		{"warn logs neither", slog.LevelWarn, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs testlog.Buffer
			e := newEnvWith(t, envOptions{logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: tt.level})), logSlow: tt.slow})
			lc := e.openLease(t, "keeper", 0)
			h := e.put(t, "kept", lc.id)
			if _, err := e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: h}); err != nil {
				t.Fatal(err)
			}
			_, err := e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: "obj_bad"})
			wantStatus(t, err, codes.InvalidArgument, ReasonHandleMalformed)
			// A unary call's line is written before its answer leaves the
			// interceptors: both are in the log by now.
			lines := map[string]string{} // by code
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "finished call") && strings.Contains(l, "grpc.method=Resolve") {
					_, code, _ := strings.Cut(l, "grpc.code=")
					code, _, _ = strings.Cut(code, " ")
					lines[code] = l
				}
			}
			for code, want := range map[string]string{"OK": tt.okLine, "InvalidArgument": tt.badLine} {
				got := lines[code]
				if (want == "") != (got == "") || !strings.Contains(got, want) {
					t.Errorf("%s Resolve: line %q, want one with %q (none if empty)", code, got, want)
				}
			}
		})
	}
}

// TestFailedCallIsLoggedAtWarn: a call that ends INTERNAL (a panic) is
// logged at ERROR at --log-level=warn, where OK calls are not.
func TestFailedCallIsLoggedAtWarn(t *testing.T) {
	var logs testlog.Buffer
	cfg := Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	_, err := servePanicky(t, cfg).UnaryCall(ctxT(t), &testpb.SimpleRequest{})
	wantStatus(t, err, codes.Internal, ReasonInternal)
	line := waitLogLine(t, &logs, "grpc.method=UnaryCall")
	for _, want := range []string{"level=ERROR", "grpc.code=Internal", "grpc.method_type=unary", "peer.address=127.0.0.1:", "grpc.time_ms="} {
		if !strings.Contains(line, want) {
			t.Errorf("request line lacks %q: %s", want, line)
		}
	}
}

// TestSlowWatcherIsDropped: a watcher that does not read is dropped with
// WATCH_TOO_SLOW once its buffer and the transport's are full, and the
// registry never waits for it.
func TestSlowWatcherIsDropped(t *testing.T) {
	e := newEnvWith(t, envOptions{watchBuffer: 4})
	lc := e.openLease(t, "keeper", 0)
	h := e.put(t, "watched", lc.id)
	stream, err := e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: []string{h}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // CURRENT: the watch is in place
		t.Fatal(err)
	}
	id, err := e.reg.Parse(h)
	if err != nil {
		t.Fatal(err)
	}
	lid, ls := e.codec.New(handle.Lease)
	by := registry.Holder{ID: lid, LeaseID: ls}
	// Far more events than the transport buffers, made in process so the
	// test is quick; none of these calls may block on the watcher.
	start := time.Now()
	for range 50000 {
		e.reg.Pin(id, by)
		e.reg.Unpin(id, by)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("100000 changes took %v: the registry waited for its watcher", took)
	}
	for range 200000 {
		_, err = stream.Recv()
		if err != nil {
			break
		}
	}
	wantStatus(t, err, codes.ResourceExhausted, ReasonWatchTooSlow)
	if st := e.reg.Stats(); st.Watchers != 0 {
		t.Fatalf("%d watchers left after the drop", st.Watchers)
	}
}

// servePanicky serves panicky{} on loopback behind the server's
// interceptors as cfg sets them up, until t ends, and returns a client.
func servePanicky(t *testing.T, cfg Config) testpb.TestServiceClient {
	t.Helper()
	gs := grpc.NewServer(serverOptions(cfg, newIdentityLimits(Limits{}), newInflight())...)
	testpb.RegisterTestServiceServer(gs, panicky{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testpb.NewTestServiceClient(conn)
}
