// Package server adapts the registry and lease packages to gRPC: protobuf
// in and out, domain errors to statuses with ErrorInfo, and the
// middleware, health and reflection services every registryd serves.
package server

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/authz"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/bufpool"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/observe"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/telemetry"
)

// Config configures a Server.
type Config struct {
	// Registry and Leases are the domain the server adapts. Required.
	Registry *registry.Registry
	Leases   *lease.Manager
	// Limits are reported in stats; MaxMessageBytes and
	// MaxConcurrentStreams are enforced here, the others by the registry
	// and lease packages they were given to.
	Limits Limits
	// Logger receives the request lines (requestlog.go) and the panics.
	// Default slog.Default().
	Logger *slog.Logger
	// LogSlow is how long a call that ends OK may take and still be
	// logged at debug only; a slower one, like a failed one, is logged at
	// info or above. 0: every call is logged at info.
	LogSlow time.Duration
	// KeepaliveTime is how long a connection may be idle before the server
	// pings it, and KeepaliveTimeout how long it waits for the answer: a
	// vanished client's streams (and so its leases) end within their sum.
	// Defaults 20s and 20s.
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// Telemetry traces and measures the server: a server span per call
	// (when tracing) with the registry's own spans and events below it,
	// gRPC server metrics (when metrics), and trace ids on request log
	// lines. nil: none of it, at no cost.
	Telemetry *telemetry.Telemetry
	// Observer is the one the registry and the leases report to: the
	// span of a forced collection is its. nil: no such span.
	Observer *observe.Observer
	// StreamStallTimeout is how long a message on a lease or watch stream
	// may wait for a client that does not read it before the stream is
	// ended (RESOURCE_EXHAUSTED, STREAM_STALLED) and a lease stream's lease
	// detached. Default DefaultStreamStallTimeout.
	StreamStallTimeout time.Duration
	// Creds secure the transport (TLS, mutual TLS). nil: plaintext. A
	// verified client certificate reaches handlers as credentials.TLSInfo
	// in the peer's AuthInfo.
	Creds credentials.TransportCredentials

	// Auth authenticates every call but health's and checks its role.
	// nil: authentication is off, every caller is auth.Anonymous, and no
	// interceptor runs for it at all.
	Auth *auth.Authenticator
	// AuthzPolicy, with Auth, is a further gRPC authz policy
	// (--authz-policy) checked after the role. Its owner closes it.
	AuthzPolicy *authz.FileWatcherInterceptor
	// testAuth stands in for authentication in this package's tests:
	// interceptors that say who calls, where authentication runs.
	testAuth interceptorSet
}

// interceptorSet is a unary and a stream chain.
type interceptorSet struct {
	unary  []grpc.UnaryServerInterceptor
	stream []grpc.StreamServerInterceptor
}

// Limits are the configured limits; zero means none.
type Limits struct {
	MaxObjectBytes  int64
	MaxMessageBytes int
	MaxPinnedBytes  int64
	MaxPinsPerLease int
	MaxLeases       int
	MaxWatchers     int
	// MaxUploadBytes bounds the bytes all uploads in flight hold
	// together (UPLOAD_BYTES_LIMIT); zero, none.
	MaxUploadBytes       int64
	MaxConcurrentStreams uint32
	// IdentityMaxUploadBytes bounds the bytes one identity's uploads in
	// flight hold together (IDENTITY_UPLOAD_BYTES_LIMIT), and
	// IdentityMaxStreams its open Lease, Watch, WatchEvents, Upload and
	// Download streams (IDENTITY_STREAM_LIMIT); zero, none.
	IdentityMaxUploadBytes int64
	IdentityMaxStreams     int
	// IdentityRate is the requests per second one identity may send, in
	// bursts of IdentityBurst (RATE_LIMITED); zero, no limit.
	IdentityRate  float64
	IdentityBurst int
	MaxGrace      time.Duration
	// MaxLinger caps the linger an object may ask for; zero allows none.
	MaxLinger time.Duration
	// MaxLeasesPerIdentity and MaxPinnedBytesPerIdentity are the lease
	// and registry limits per identity, for stats; zero, none.
	MaxLeasesPerIdentity      int
	MaxPinnedBytesPerIdentity int64
}

// report lists the limits with their use, for stats.
func (l Limits) report(st registry.Stats, leases int, uploading int64) []*registryv1.Limit {
	const bytes, seconds = "bytes", "seconds"
	return []*registryv1.Limit{
		{Name: registry.LimitObjectSize, Max: l.MaxObjectBytes, Used: -1, Unit: bytes},
		{Name: ReasonMessageTooLarge, Max: int64(l.MaxMessageBytes), Used: -1, Unit: bytes},
		{Name: registry.LimitPinnedBytes, Max: l.MaxPinnedBytes, Used: st.HeldBytes, Unit: bytes},
		{Name: lease.LimitPinsPerLease, Max: int64(l.MaxPinsPerLease), Used: -1},
		{Name: lease.LimitLeases, Max: int64(l.MaxLeases), Used: int64(leases)},
		{Name: registry.LimitWatchers, Max: int64(l.MaxWatchers), Used: int64(st.Watchers)},
		{Name: LimitUploadBytes, Max: l.MaxUploadBytes, Used: uploading, Unit: bytes},
		{Name: LimitIdentityUploadBytes, Max: l.IdentityMaxUploadBytes, Used: -1, Unit: bytes},
		{Name: LimitIdentityStreams, Max: int64(l.IdentityMaxStreams), Used: -1},
		{Name: LimitRate, Max: int64(math.Ceil(l.IdentityRate)), Used: -1, Unit: "requests/s"},
		{Name: "CONCURRENT_STREAMS_PER_CONNECTION", Max: int64(l.MaxConcurrentStreams), Used: -1},
		{Name: "GRACE_MAX_SECONDS", Max: int64(l.MaxGrace / time.Second), Used: -1, Unit: seconds},
		{Name: "LINGER_MAX_SECONDS", Max: int64(l.MaxLinger / time.Second), Used: -1, Unit: seconds},
		// Per identity: use is not one figure.
		{Name: lease.LimitLeasesPerIdentity, Max: int64(l.MaxLeasesPerIdentity), Used: -1},
		{Name: registry.LimitIdentityPinnedBytes, Max: l.MaxPinnedBytesPerIdentity, Used: -1, Unit: bytes},
	}
}

// Server is registryd's gRPC server.
type Server struct {
	grpc     *grpc.Server
	health   *health.Server
	reg      *registry.Registry
	leases   *lease.Manager
	log      *slog.Logger
	stopping atomic.Bool // set when Shutdown begins
	calls    *inflight   // handlers running now
	work     *pool       // the lease streams' (see pool): stopped by Shutdown
}

// New returns a Server with every service registered, ready to Serve.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger
	calls := newInflight()
	ids := newIdentityLimits(cfg.Limits)
	gs := grpc.NewServer(serverOptions(cfg, ids, calls)...)
	uploads := &byteBudget{max: cfg.Limits.MaxUploadBytes}
	rs := &registryService{reg: cfg.Registry, leases: cfg.Leases, tel: cfg.Telemetry, limits: cfg.Limits, stall: cfg.StreamStallTimeout, uploads: uploads, identity: ids}
	registryv1.RegisterRegistryServiceServer(gs, rs)
	registryv1.RegisterAdminServiceServer(gs, &adminService{reg: cfg.Registry, leases: cfg.Leases, limits: cfg.Limits, obs: cfg.Observer, stall: cfg.StreamStallTimeout, uploads: uploads})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	for _, name := range []string{"", registryv1.RegistryService_ServiceDesc.ServiceName, registryv1.AdminService_ServiceDesc.ServiceName} {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	reflection.Register(gs)
	cfg.Telemetry.InitializeGRPCMetrics(gs)
	return &Server{grpc: gs, health: hs, reg: cfg.Registry, leases: cfg.Leases, log: log, calls: calls, work: &rs.work}
}

// serverOptions are the interceptors, keepalive and limits every
// registryd server runs with.
func serverOptions(cfg Config, ids *identityLimits, calls *inflight) []grpc.ServerOption {
	if cfg.KeepaliveTime == 0 {
		cfg.KeepaliveTime = 20 * time.Second
	}
	if cfg.KeepaliveTimeout == 0 {
		cfg.KeepaliveTimeout = 20 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tel := cfg.Telemetry
	decode := newDecodeCodec()
	core := &chain{
		log:    &requestLog{log: cfg.Logger, slow: cfg.LogSlow, tracing: tel.Tracing(), auth: cfg.Auth != nil},
		recov:  recoverer(cfg.Logger),
		ids:    ids,
		decode: decode,
		calls:  calls,
		auth:   cfg.Auth != nil,
	}
	var midUnary []grpc.UnaryServerInterceptor
	var midStream []grpc.StreamServerInterceptor
	if cfg.Auth != nil {
		midUnary, midStream = authInterceptors(cfg.Auth, cfg.AuthzPolicy)
	}
	midUnary = append(midUnary, cfg.testAuth.unary...)
	midStream = append(midStream, cfg.testAuth.stream...)
	core.midUnary, core.midStream = chainUnary(midUnary), chainStream(midStream)
	// Outermost first: the metrics see every call as the client does,
	// the reason is set on the span from the final status. Innermost,
	// the chain: a request that did not decode never reaches a handler,
	// but is answered, logged and measured like any other call.
	var unary []grpc.UnaryServerInterceptor
	var stream []grpc.StreamServerInterceptor
	if i := tel.UnaryServerInterceptor(); i != nil {
		unary = append(unary, i)
		stream = append(stream, tel.StreamServerInterceptor())
	}
	if tel.Tracing() {
		unary = append(unary, reasonUnaryInterceptor)
		stream = append(stream, reasonStreamInterceptor)
	}
	unary = append(unary, core.unary)
	stream = append(stream, core.stream)
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(decode),
		// Requests are read into buffers not cleared first (see bufpool).
		experimental.BufferPool(bufpool.Default),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.KeepaliveTime, Timeout: cfg.KeepaliveTimeout}),
		// Clients may ping every 10s, even with no stream open, so that a
		// lease holder can detect a dead server as fast as the server
		// detects a dead client.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	// Serve requests on a pool of long-lived goroutines, whose stacks have
	// already grown to what gRPC's receive path and the handlers need,
	// instead of a new goroutine per request that grows its stack each
	// time (copying it, frame by frame, twice: 13-15% of registryd's CPU
	// under load with GOMAXPROCS workers, where every request beyond two
	// in flight got a goroutine of its own). See streamWorkers.
	opts = append(opts, grpc.NumStreamWorkers(streamWorkers()))
	if n := cfg.Limits.MaxMessageBytes; n > 0 {
		opts = append(opts, grpc.MaxRecvMsgSize(n), grpc.MaxSendMsgSize(n))
	}
	if n := cfg.Limits.MaxConcurrentStreams; n > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(n))
	}
	if cfg.Creds != nil {
		opts = append(opts, grpc.Creds(cfg.Creds))
	}
	if h := tel.ServerHandler(); h != nil {
		opts = append(opts, grpc.StatsHandler(h))
	}
	return opts
}

// streamWorkers is how many goroutines serve requests (gRPC's stream
// workers): as many as the requests commonly in flight, 64, or 4 per
// core on a larger machine. A request that finds every worker busy gets
// a goroutine of its own, as without workers; more workers than
// requests in flight cost too, as gRPC hands requests to its workers in
// turn, so that the idle ones are shrunk at every GC and grow again:
// under 64 callers, copying stacks took 1-3% of the CPU with 64 workers,
// 4-5% with 128, 7% with 256 and 13-15% with 2. A lease, watch or
// transfer stream holds its worker while it lasts.
func streamWorkers() uint32 { return uint32(max(64, 4*runtime.GOMAXPROCS(0))) }

// Serve accepts connections on lis until Shutdown.
func (s *Server) Serve(lis net.Listener) error { return s.grpc.Serve(lis) }

// Shutdown stops the server gracefully: health answers NOT_SERVING, lease
// streams are told (revoked, cause SHUTDOWN) and watch streams end, then
// in-flight calls finish. If ctx ends first, the remaining calls are cut.
//
// Once every handler has returned, Shutdown waits at most shutdownFlush
// more for their last answers to reach the clients, then closes the
// connections: gRPC's GracefulStop would otherwise wait, for ever, for a
// client that stopped reading to take an answer its flow control holds.
func (s *Server) Shutdown(ctx context.Context) error {
	defer s.work.stop()
	s.stopping.Store(true)
	s.health.Shutdown()
	s.leases.Shutdown()
	s.reg.Close()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	idle := s.calls.idle()
	for {
		select {
		case <-stopped:
			return nil
		case <-idle:
			idle = nil
			t := time.NewTimer(shutdownFlush)
			select {
			case <-stopped:
				t.Stop()
				return nil
			case <-t.C:
				s.grpc.Stop() // only undelivered answers remain
				<-stopped
				return nil
			case <-ctx.Done():
				t.Stop()
			}
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			s.grpc.Stop()
			<-stopped
			return ctx.Err()
		}
	}
}

// shutdownFlush is how long Shutdown lets finished calls' answers drain.
const shutdownFlush = 500 * time.Millisecond

// Healthy reports whether the server is serving: false once Shutdown has
// begun.
func (s *Server) Healthy() bool { return !s.stopping.Load() }

// errPanic is what a call whose handler panicked answers: INTERNAL.
var errPanic = errors.New("internal error")

// logLevel is the level of a request's log line by its code: gRPC's
// middleware default, except that a call past its deadline is the
// caller's choice, as a cancelled one is, not a server's fault.
func logLevel(code codes.Code) logging.Level {
	if code == codes.DeadlineExceeded {
		return logging.LevelInfo
	}
	return logging.DefaultServerCodeToLevel(code)
}
