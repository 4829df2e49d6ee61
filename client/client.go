package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"math"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/bufpool"
	"github.com/weakref/registry/internal/netaddr"
)

// Client is a connection to one registryd, or to every node of a cluster
// (see Dial). It is safe for concurrent use; make one per process and
// share it.
type Client struct {
	conn *grpc.ClientConn // nil for a cluster
	rpc  registryv1.RegistryServiceClient
	opts options
	// cl routes the calls of a cluster's client to its nodes' Clients;
	// nil for a single address, whose calls take the path they always did.
	cl *router
}

// Option configures Dial.
type Option func(*options)

type options struct {
	tls        *tls.Config
	token      string
	tracer     trace.TracerProvider
	propagator propagation.TextMapPropagator
	noTrace    bool
	dial       []grpc.DialOption
	backoff    backoffConfig
	etcd       *clientv3.Client // a cluster's etcd, the caller's
	etcdConfig *clientv3.Config // a cluster's etcd, Dial's to make
}

// WithTLS connects over TLS with cfg (nil: the system's roots).
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) {
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls = cfg
	}
}

// WithToken sends "authorization: Bearer token" with every call. gRPC
// refuses to send it without TLS, except to a loopback address (as
// registryd --auth-allow-plaintext accepts it), where no one on a network
// path can read it.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithTracerProvider traces calls with tp instead of OpenTelemetry's
// global provider, and WithPropagator injects trace context with p
// instead of the global propagator. By default the client uses the
// globals, so an application that configures OpenTelemetry gets client
// spans whose trace continues in registryd's spans.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tracer = tp } }

// WithPropagator injects trace context with p instead of the global
// propagator; see WithTracerProvider.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(o *options) { o.propagator = p }
}

// WithoutTracing leaves out the OpenTelemetry stats handler altogether.
func WithoutTracing() Option { return func(o *options) { o.noTrace = true } }

// WithDialOptions adds gRPC dial options, after the client's own.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

// Dial returns a Client for the registryd at addr ("host:port"). Like
// grpc.NewClient it does not wait for the connection: the first call
// makes it, and fails with ErrUnavailable if nothing answers.
//
// addr may instead be a cluster target, "etcd:///registry/NAME", with
// WithEtcd or WithEtcdClient saying where etcd is. The client then
// follows the cluster's members in etcd and keeps a connection to each
// live node (the other options apply to each); it routes every call on a
// handle to the node that issued it, and places each Put on a node in
// turn (see PreferNode). Dial does not wait for etcd either: a call waits
// within its context until the client has read the members once (see
// WaitForNodes). A handle of a node that is not a live member answers
// ErrNodeUnavailable, without a call; a lease is a set of per-node leases
// (see Lease).
func Dial(addr string, opts ...Option) (*Client, error) {
	o := options{backoff: defaultBackoff}
	for _, opt := range opts {
		opt(&o)
	}
	if isClusterTarget(addr) {
		return dialCluster(addr, o)
	}
	return dialOne(addr, o)
}

// dialOne dials one registryd.
func dialOne(addr string, o options) (*Client, error) {
	creds := insecure.NewCredentials()
	if o.tls != nil {
		creds = credentials.NewTLS(o.tls)
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("registry-go-client"),
		// registryd bounds what it sends with --max-message-bytes; gRPC's
		// default of 4 MiB would refuse a large object.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.ForceCodecV2(bufpool.Codec{})),
		// gRPC's default pool clears a 1 MiB buffer for every message
		// over 32 KiB; a ResolveMany answer is one (see package bufpool).
		experimental.WithBufferPool(bufpool.Default),
		// A lease learns of a dead server as fast as the server learns of
		// a dead client. registryd allows a ping every 10s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 20 * time.Second, Timeout: 20 * time.Second, PermitWithoutStream: true}),
	}
	if o.token != "" {
		dial = append(dial, grpc.WithPerRPCCredentials(bearerToken{token: o.token, plaintext: o.tls == nil && netaddr.Loopback(addr)}))
	}
	if !o.noTrace {
		dial = append(dial, grpc.WithStatsHandler(tracingHandler(o)))
	}
	conn, err := grpc.NewClient(addr, append(dial, o.dial...)...)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, rpc: registryv1.NewRegistryServiceClient(conn), opts: o}, nil
}

func tracingHandler(o options) stats.Handler {
	var hopts []otelgrpc.Option
	if o.tracer != nil {
		hopts = append(hopts, otelgrpc.WithTracerProvider(o.tracer))
	}
	if o.propagator != nil {
		hopts = append(hopts, otelgrpc.WithPropagators(o.propagator))
	}
	hopts = append(hopts, otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
		return info.FullMethodName != healthpb.Health_Check_FullMethodName &&
			info.FullMethodName != healthpb.Health_Watch_FullMethodName
	}))
	return otelgrpc.NewClientHandler(hopts...)
}

// bearerToken sends the token with every call, and only over TLS unless
// plaintext: the server is on loopback.
type bearerToken struct {
	token     string
	plaintext bool
}

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + t.token}, nil
}

func (t bearerToken) RequireTransportSecurity() bool { return !t.plaintext }

// Conn returns the underlying connection, for AdminService calls or the
// health check; nil for a cluster, whose nodes each have their own.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close closes the connection (a cluster's: every node's, and etcd's if
// Dial made it). Leases still open end as if their holder vanished:
// released, or kept for their grace.
func (c *Client) Close() error {
	if c.cl != nil {
		return c.cl.close()
	}
	return c.conn.Close()
}

// PutOption sets a property of a new object, for Put and Upload.
type PutOption func(*putParams)

type putParams struct {
	contentType string
	labels      map[string]string
	leaseID     string
	lease       *Lease // PinnedBy's; for a cluster, leaseID is its part on the node placed
	linger      time.Duration
	prefer      *uint16 // PreferNode's tag
}

// ContentType sets the object's media type.
func ContentType(ct string) PutOption { return func(p *putParams) { p.contentType = ct } }

// Labels sets the object's labels (keys up to 63 characters, values up to
// 255; see the API for the rules).
func Labels(labels map[string]string) PutOption { return func(p *putParams) { p.labels = labels } }

// PinnedBy pins the new object under l as it is stored, in one step: it is
// never weak, not even for a moment.
func PinnedBy(l *Lease) PutOption { return func(p *putParams) { p.leaseID, p.lease = l.ID(), l } }

// PreferNode places the new object on the cluster's node tag if it is a
// live member, and where it would go without the option otherwise. A
// client of a single address ignores it.
func PreferNode(tag uint16) PutOption { return func(p *putParams) { p.prefer = &tag } }

// Linger keeps the object strongly held for d after its last pin goes
// (or, if never pinned, after it is stored) before it becomes weak; the
// server caps d. It lets a producer drop its lease at once and leave a
// consumer time to pin the object.
func Linger(d time.Duration) PutOption { return func(p *putParams) { p.linger = d } }

func putParamsOf(opts []PutOption) putParams {
	var p putParams
	for _, o := range opts {
		o(&p)
	}
	return p
}

func durationOrNil(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(d)
}

// maxUnaryPut is the largest payload Put sends in one message; larger
// ones go by Upload. It stays under gRPC's default 4 MiB message limit,
// which any registryd accepts.
const maxUnaryPut = 4<<20 - 64<<10

// Put stores data and returns the new object's metadata, its handle
// included. Unless PinnedBy names a lease (or Linger holds it), the object
// is weak at once and the next garbage collection may take it: pin what
// you still need. Payloads too large for one message are uploaded in
// chunks. data must not change until Put returns.
func (c *Client) Put(ctx context.Context, data []byte, opts ...PutOption) (Info, error) {
	p := putParamsOf(opts)
	if c.cl != nil {
		n, part, p, err := c.cl.placePut(ctx, p)
		if err != nil {
			return Info{}, err
		}
		info, err := n.c.put(ctx, data, p)
		if err == nil && part != nil {
			p.lease.cl.track(part, info.Handle, true)
		}
		return info, err
	}
	return c.put(ctx, data, p)
}

func (c *Client) put(ctx context.Context, data []byte, p putParams) (Info, error) {
	if p.lease != nil && p.leaseID == "" {
		return Info{}, errClusterLease
	}
	if len(data) > maxUnaryPut {
		return c.upload(ctx, bytes.NewReader(data), int64(len(data)), p)
	}
	resp, err := c.rpc.Put(ctx, &registryv1.PutRequest{
		Data: data, ContentType: p.contentType, Labels: p.labels, LeaseId: p.leaseID, Linger: durationOrNil(p.linger),
	})
	var e *Error
	if err = fromStatus(err); errors.As(err, &e) && e.Code == codes.ResourceExhausted && e.Reason == "" {
		// gRPC itself refused the message: the server's message limit is
		// below ours. Nothing was stored; upload it in chunks instead.
		return c.upload(ctx, bytes.NewReader(data), int64(len(data)), p)
	}
	if err != nil {
		return Info{}, err
	}
	return infoFrom(resp.GetInfo()), nil
}

// Resolve returns the object's bytes and metadata. A collected object
// gives an error matching ErrCollected; never the bytes of another. An
// object too large for one message is downloaded in chunks.
func (c *Client) Resolve(ctx context.Context, handle string) ([]byte, Info, error) {
	if c.cl != nil {
		n, err := c.cl.route(ctx, handle)
		if err != nil {
			return nil, Info{}, err
		}
		return n.c.resolve(ctx, handle, "")
	}
	return c.resolve(ctx, handle, "")
}

// resolve is Resolve, pinning with the lease leaseID when it is not "".
func (c *Client) resolve(ctx context.Context, handle, leaseID string) ([]byte, Info, error) {
	resp, err := c.rpc.Resolve(ctx, &registryv1.ResolveRequest{Handle: handle, LeaseId: leaseID})
	var e *Error
	if err = fromStatus(err); errors.As(err, &e) && e.Reason == reasonMessageTooLarge {
		// Too large for one message; as a download, then. The refused
		// Resolve pinned nothing: the download pins, if leaseID asked.
		var buf bytes.Buffer
		info, err := c.download(ctx, handle, leaseID, &buf)
		return buf.Bytes(), info, err
	}
	if err != nil {
		return nil, Info{}, err
	}
	return resp.GetData(), infoFrom(resp.GetInfo()), nil
}

// Stat returns the object's metadata without its bytes, and without
// counting as an access.
func (c *Client) Stat(ctx context.Context, handle string) (Info, error) {
	if c.cl != nil {
		n, err := c.cl.route(ctx, handle)
		if err != nil {
			return Info{}, err
		}
		return n.c.Stat(ctx, handle)
	}
	resp, err := c.rpc.Stat(ctx, &registryv1.StatRequest{Handle: handle})
	if err != nil {
		return Info{}, fromStatus(err)
	}
	return infoFrom(resp.GetInfo()), nil
}

// State is where an object is in its lifecycle.
type State int

// The states an object goes through; StateUnknown is the zero value, for
// a state this client does not know.
const (
	StateUnknown   State = iota
	StatePinned          // a lease pins it: never collected
	StateLingering       // unpinned, held strongly for a while yet
	StateWeak            // held only weakly: the next GC may take it
	StateCollected       // the garbage collector took it
	StateDeleted         // an operator deleted it
)

func (s State) String() string {
	switch s {
	case StatePinned:
		return "pinned"
	case StateLingering:
		return "lingering"
	case StateWeak:
		return "weak"
	case StateCollected:
		return "collected"
	case StateDeleted:
		return "deleted"
	}
	return "unknown"
}

// Info is an object's metadata.
type Info struct {
	Handle      string
	Size        int64
	ContentType string
	Labels      map[string]string
	State       State
	PinCount    int
	Created     time.Time
	Accessed    time.Time // last Put or Resolve
	StateSince  time.Time // when it entered State
	Linger      time.Duration
	LingerUntil time.Time // while StateLingering: when it becomes weak
	SoftCached  bool      // the server's soft cache holds it (its State stays weak)
	// WeakGCCycles: how many garbage collections a weak object survived;
	// SuspectedLeak: too many, for an object nothing should hold.
	WeakGCCycles  int64
	SuspectedLeak bool
}

func infoFrom(in *registryv1.ObjectInfo) Info {
	if in == nil {
		return Info{}
	}
	return Info{
		Handle:      in.GetHandle(),
		Size:        in.GetSize(),
		ContentType: in.GetContentType(),
		Labels:      in.GetLabels(),
		State:       State(in.GetState()),
		PinCount:    int(in.GetPinCount()),
		Created:     timeOf(in.GetCreateTime().AsTime(), in.GetCreateTime() != nil),
		Accessed:    timeOf(in.GetAccessTime().AsTime(), in.GetAccessTime() != nil),
		StateSince:  timeOf(in.GetStateTime().AsTime(), in.GetStateTime() != nil),
		Linger:      in.GetLinger().AsDuration(),
		LingerUntil: timeOf(in.GetLingerUntil().AsTime(), in.GetLingerUntil() != nil),
		SoftCached:  in.GetSoftCached(),

		WeakGCCycles:  in.GetWeakGcCycles(),
		SuspectedLeak: in.GetSuspectedLeak(),
	}
}

func timeOf(t time.Time, ok bool) time.Time {
	if !ok {
		return time.Time{}
	}
	return t
}

var errClosed = errors.New("registry: lease is closed")

// errClusterLease: PinnedBy named a cluster's lease in a call of a client
// of one address; it names no lease there.
var errClusterLease = errors.New("registry: PinnedBy names a lease of a cluster's client, not of this one")
