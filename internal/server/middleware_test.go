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
	gs := grpc.NewServer(serverOptions(Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, newIdentityLimits(Limits{}))...)
	testpb.RegisterTestServiceServer(gs, panicky{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := testpb.NewTestServiceClient(conn)

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
