package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/authz"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/observe"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/telemetry"
)

// A registry reaps collected objects on a goroutine of its own that ends once
// its queue is empty: one may still be finishing a large collection here.
// The lease streams' pool keeps a goroutine for poolLinger after its last
// job: the check waits that long for them to end on their own.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(poolIdleAfter{m}, goleak.IgnoreAnyFunction("github.com/weakref/registry/internal/registry.(*Registry).drainReaps"))
}

// poolIdleAfter runs the tests, then waits, a little more than
// poolLinger at most, for the pool's goroutines to end.
type poolIdleAfter struct{ m *testing.M }

func (p poolIdleAfter) Run() int {
	code := p.m.Run()
	deadline := time.Now().Add(poolLinger + 5*time.Second)
	for goroutinesIn("server.(*pool).serve") > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return code
}

// testLimits are small enough for tests to reach.
var testLimits = Limits{
	MaxObjectBytes:  1 << 10,
	MaxMessageBytes: 1 << 20,
	MaxPinnedBytes:  1 << 20,
	MaxPinsPerLease: 100,
	MaxLeases:       100,
	MaxGrace:        time.Minute,
}

// env is one in-process registryd and a client connection to it.
type env struct {
	t      *testing.T
	codec  *handle.Codec
	reg    *registry.Registry
	leases *lease.Manager
	srv    *Server
	conn   *grpc.ClientConn
	rs     registryv1.RegistryServiceClient
	admin  registryv1.AdminServiceClient
}

// envOptions change what newEnvWith starts.
type envOptions struct {
	lis         net.Listener  // default: a bufconn listener
	logger      *slog.Logger  // default: discard
	logSlow     time.Duration // Config.LogSlow; default 0, every call at info
	watchBuffer int
	telemetry   *telemetry.Telemetry // default: none
	limits      *Limits              // default: testLimits
	stall       time.Duration        // default: DefaultStreamStallTimeout
	leakCycles  int                  // registry.Config.LeakGCCycles; default 0, off
	auth        *auth.Authenticator  // default: none, authentication off
	authz       *authz.FileWatcherInterceptor
	peers       Peers // the cluster's other nodes; default: none, a single node
}

// testIdentityHeader names, in a test's request metadata, the identity the
// server takes the caller to be, as authentication would: "NAME" for a
// client, "NAME:admin" for an admin. Without it the caller is
// auth.Anonymous, as with authentication off.
const testIdentityHeader = "x-test-identity"

// asIdentity returns a context whose calls are name's (a client).
func asIdentity(t testing.TB, name string) context.Context {
	return metadata.AppendToOutgoingContext(ctxT(t), testIdentityHeader, name)
}

func testIdentity(ctx context.Context) context.Context {
	vs := metadata.ValueFromIncomingContext(ctx, testIdentityHeader)
	if len(vs) == 0 {
		return ctx
	}
	name, role, _ := strings.Cut(vs[0], ":")
	id := auth.Identity{Name: name, Role: auth.RoleClient}
	if role == "admin" {
		id.Role = auth.RoleAdmin
	}
	return auth.NewContext(ctx, id)
}

// newEnv starts a server on lis (a bufconn listener when nil).
func newEnv(t testing.TB, lis net.Listener) *env {
	return newEnvWith(t, envOptions{lis: lis})
}

func newEnvWith(t testing.TB, o envOptions) *env {
	lis := o.lis
	if o.logger == nil {
		o.logger = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	limits := testLimits
	if o.limits != nil {
		limits = *o.limits
	}
	codec, err := handle.NewCodec(handle.Config{Key: []byte("0123456789abcdef0123456789abcdef"), Foreign: ClusterAnswers(o.peers)})
	if err != nil {
		t.Fatal(err)
	}
	obs, err := observe.New(o.telemetry)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(registry.Config{
		Codec:                     codec,
		MaxObjectBytes:            limits.MaxObjectBytes,
		MaxPinnedBytes:            limits.MaxPinnedBytes,
		MaxPinnedBytesPerIdentity: limits.MaxPinnedBytesPerIdentity,
		WatchBuffer:               o.watchBuffer,
		MaxWatchers:               limits.MaxWatchers,
		LeakGCCycles:              o.leakCycles,
		Observe:                   obs.Registry(),
	})
	leases := lease.New(lease.Config{
		Codec:                codec,
		Registry:             reg,
		MaxGrace:             limits.MaxGrace,
		MaxLeases:            limits.MaxLeases,
		MaxPinsPerLease:      limits.MaxPinsPerLease,
		MaxLeasesPerIdentity: limits.MaxLeasesPerIdentity,
		Observe:              obs.Lease(),
	})
	srv := New(Config{
		Registry:           reg,
		Leases:             leases,
		Limits:             limits,
		Logger:             o.logger,
		LogSlow:            o.logSlow,
		Telemetry:          o.telemetry,
		Observer:           obs,
		StreamStallTimeout: o.stall,
		Auth:               o.auth,
		AuthzPolicy:        o.authz,
		testAuth:           testAuthOf(o.auth == nil),
	})
	dial := func(target string, opts ...grpc.DialOption) (*grpc.ClientConn, error) { //nolint:gocritic // not grpc.NewClient: it adds insecure credentials
		return grpc.NewClient(target, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	}
	var conn *grpc.ClientConn
	if lis == nil {
		bl := bufconn.Listen(1 << 20)
		lis = bl
		conn, err = dial("passthrough:///bufnet", grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return bl.DialContext(ctx)
		}))
	} else {
		conn, err = dial(lis.Addr().String())
	}
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	e := &env{codec: codec, reg: reg, leases: leases, srv: srv, conn: conn,
		rs: registryv1.NewRegistryServiceClient(conn), admin: registryv1.NewAdminServiceClient(conn)}
	if tt, ok := t.(*testing.T); ok {
		e.t = tt
	}
	return e
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// put stores data and returns its handle.
func (e *env) put(t testing.TB, data string, leaseID string) string {
	t.Helper()
	resp, err := e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte(data), LeaseId: leaseID})
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	return resp.GetHandle()
}

// leaseClient is the client side of one lease stream.
type leaseClient struct {
	t      testing.TB
	stream grpc.BidiStreamingClient[registryv1.LeaseRequest, registryv1.LeaseResponse]
	cancel context.CancelFunc
	id     string
	next   uint64
}

// openLease opens a lease stream and its lease.
func (e *env) openLease(t testing.TB, client string, grace time.Duration) *leaseClient {
	t.Helper()
	return e.openLeaseCtx(t, ctxT(t), client, grace)
}

// openLeaseCtx is openLease with the calls' context, such as asIdentity's.
func (e *env) openLeaseCtx(t testing.TB, ctx context.Context, client string, grace time.Duration) *leaseClient {
	t.Helper()
	lc := e.leaseStreamCtx(t, ctx)
	resp := lc.send(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Open{Open: &registryv1.OpenLease{
		ClientName: client, Grace: durationpb.New(grace),
	}}})
	lc.id = resp.GetOpened().GetLeaseId()
	if lc.id == "" {
		t.Fatalf("open: got %v, want opened", resp)
	}
	return lc
}

// leaseStream opens a lease stream without sending anything.
func (e *env) leaseStream(t testing.TB) *leaseClient {
	t.Helper()
	return e.leaseStreamCtx(t, ctxT(t))
}

// leaseStreamCtx is leaseStream with the calls' context, such as
// asIdentity's.
func (e *env) leaseStreamCtx(t testing.TB, parent context.Context) *leaseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(parent)
	stream, err := e.rs.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return &leaseClient{t: t, stream: stream, cancel: cancel}
}

// send sends req with the next request id and returns the answer.
func (lc *leaseClient) send(req *registryv1.LeaseRequest) *registryv1.LeaseResponse {
	lc.t.Helper()
	resp, err := lc.try(req)
	if err != nil {
		lc.t.Fatalf("lease %s: %v", req.GetKind(), err)
	}
	return resp
}

func (lc *leaseClient) try(req *registryv1.LeaseRequest) (*registryv1.LeaseResponse, error) {
	lc.next++
	req.RequestId = lc.next
	if err := lc.stream.Send(req); err != nil {
		if errors.Is(err, io.EOF) {
			// The server ended the stream first (a limit refuses it at
			// once): gRPC keeps its status for Recv.
			_, err = lc.stream.Recv()
		}
		return nil, err
	}
	resp, err := lc.stream.Recv()
	if err != nil {
		return nil, err
	}
	if resp.GetRevoked() == nil && resp.GetRequestId() != lc.next {
		lc.t.Fatalf("answer to request %d carries request id %d", lc.next, resp.GetRequestId())
	}
	return resp, nil
}

func (lc *leaseClient) pin(handles ...string) []*registryv1.PinResult {
	lc.t.Helper()
	return lc.send(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Pin{Pin: &registryv1.PinHandles{Handles: handles}}}).GetPinned().GetResults()
}

func (lc *leaseClient) unpin(handles ...string) []*registryv1.PinResult {
	lc.t.Helper()
	return lc.send(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Unpin{Unpin: &registryv1.UnpinHandles{Handles: handles}}}).GetUnpinned().GetResults()
}

func (lc *leaseClient) close() {
	lc.t.Helper()
	resp := lc.send(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Close{Close: &registryv1.CloseLease{}}})
	if resp.GetClosed() == nil {
		lc.t.Fatalf("close: got %v", resp)
	}
	if _, err := lc.stream.Recv(); !errors.Is(err, io.EOF) {
		lc.t.Fatalf("after close: %v, want the stream to end", err)
	}
}

// wantStatus fails unless err is a status with code and an ErrorInfo of
// domain "registry" and reason.
func wantStatus(t testing.TB, err error, code codes.Code, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v %s", code, reason)
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("got %v, want a status", err)
	}
	if st.Code() != code || reasonOf(st) != reason {
		t.Fatalf("got %v %q (%s), want %v %s", st.Code(), reasonOf(st), st.Message(), code, reason)
	}
}

func reasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info.GetReason()
		}
	}
	return ""
}
