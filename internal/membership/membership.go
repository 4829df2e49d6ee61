// Package membership is one registryd node's membership in a cluster kept
// in etcd, with internal/cluster's key layout: it joins (an etcd lease,
// the node tag claimed under it, the endpoint registered under it), keeps
// the lease alive, registers again after losing etcd, watches the other
// nodes' endpoints for the server's answers (Lookup), and leaves.
//
// What a node does when etcd goes away is decided here: it keeps serving
// what it holds, objects and leases alike, and never drops anything
// because of etcd. Its etcd lease runs out a TTL after the last keepalive
// etcd answered, and peers then see it as gone (NODE_UNAVAILABLE for its
// handles); once etcd answers again it registers again, on the same lease
// if that survived, else on a new one, claiming its tag again. If another
// process took the tag meanwhile, the node logs an error on every retry
// and serves on, unregistered, until the tag is free: two nodes are
// never registered with one tag, as only a create-if-absent transaction
// writes a claim.
package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/weakref/registry/internal/cluster"
)

// TTL bounds. etcd itself refuses a lease shorter than about 1.5 election
// timeouts (2s with its defaults); a longer one than 5m would leave a
// crashed node's handles answered HANDLE_FOREIGN_NODE, with an address
// that does not answer, for that long.
const (
	DefaultTTL = 10 * time.Second
	MinTTL     = 2 * time.Second
	MaxTTL     = 5 * time.Minute
)

// opTimeout bounds one etcd call of a registration, so that a call to an
// etcd that went away while it was asked gives up and is retried.
const opTimeout = 5 * time.Second

// Config configures a Membership.
type Config struct {
	// Endpoints are etcd's client URLs. Required.
	Endpoints []string
	// Cluster is the cluster's name (cluster.CheckName). Required.
	Cluster string
	// Member is what this node says of itself: its tag, run, version,
	// start and key fingerprint.
	Member cluster.Member
	// Addr is the node's advertised address, host:port, the one peers
	// and clients reach it at. Required.
	Addr string
	// TTL is the etcd lease's: how long the cluster goes on counting a
	// node that stopped keeping it alive. Whole seconds, MinTTL to
	// MaxTTL; 0: DefaultTTL.
	TTL time.Duration
	// Logger receives the lines on joining, losing etcd and registering
	// again. Default slog.Default().
	Logger *slog.Logger
}

// Peer is what a node knows of another: where it is and which run.
type Peer struct {
	Addr  string
	Epoch uint64
}

// Membership is this node's membership of a cluster. Lookup is safe for
// concurrent use with everything; Join and Close are called once each,
// in that order.
type Membership struct {
	cfg       Config
	ttl       int64 // seconds, as etcd takes it
	log       *slog.Logger
	etcd      *clientv3.Client
	endpoints endpoints.Manager
	tagKey    string
	nodeKey   string
	claim     string // the claim's value: who holds the tag
	stop      context.CancelFunc
	loops     sync.WaitGroup

	// mu guards lease, the etcd lease holding this node's keys (0 while
	// unregistered), written by Join and then by the keepalive loop.
	mu    sync.Mutex
	lease clientv3.LeaseID

	// peersMu guards peers, every registered node by tag, this one
	// included: written by the watch loop, read by every Lookup.
	peersMu sync.RWMutex
	peers   map[uint16]Peer
}

// New checks cfg and returns a Membership ready to Join. It does not reach
// etcd yet.
func New(cfg Config) (*Membership, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("no etcd endpoints")
	}
	if err := cluster.CheckName(cfg.Cluster); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		return nil, errors.New("no advertised address")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if err := CheckTTL(cfg.TTL); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	claim, err := json.Marshal(cluster.Claim{Addr: cfg.Addr, Epoch: cfg.Member.Epoch, Started: cfg.Member.Started})
	if err != nil {
		return nil, err
	}
	etcd, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: opTimeout,
		// gRPC waits up to 2 minutes between two attempts to reconnect
		// by default: a node cut off from etcd for a while would register
		// again that long after etcd came back. At most half a TTL.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.TTL / 2},
			MinConnectTimeout: opTimeout,
		})},
		// The membership says in its own lines what matters; the client's
		// would repeat every retry while etcd is away.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	em, err := endpoints.NewManager(etcd, cluster.NodesTarget(cfg.Cluster))
	if err != nil {
		_ = etcd.Close()
		return nil, err
	}
	return &Membership{
		cfg:       cfg,
		ttl:       int64(cfg.TTL / time.Second),
		log:       cfg.Logger.With("cluster", cfg.Cluster, "node", cfg.Member.Node),
		etcd:      etcd,
		endpoints: em,
		tagKey:    cluster.TagKey(cfg.Cluster, cfg.Member.Node),
		nodeKey:   cluster.NodeKey(cfg.Cluster, cfg.Member.Node),
		claim:     string(claim),
		peers:     map[uint16]Peer{},
	}, nil
}

// CheckTTL says whether ttl can be a membership's lease TTL.
func CheckTTL(ttl time.Duration) error {
	if ttl < MinTTL || ttl > MaxTTL || ttl%time.Second != 0 {
		return fmt.Errorf("%s: want whole seconds from %s to %s", ttl, MinTTL, MaxTTL)
	}
	return nil
}

// Join joins the cluster: it refuses a cluster whose nodes have another
// handle key (*KeyMismatchError), claims the node tag (*TagTakenError
// when another node holds it; a claim left by an earlier run at this
// node's own address is waited out, for at most its remaining TTL),
// registers the endpoint, and returns once it has read the cluster's
// nodes. From then on it keeps the lease alive and watches the nodes until
// Close. On error nothing is left in etcd and Close still releases the
// client.
func (m *Membership) Join(ctx context.Context) error {
	if err := m.checkKeys(ctx); err != nil {
		return err
	}
	id, err := m.claimAtStart(ctx)
	if err != nil {
		return err
	}
	m.setLease(id)
	loopCtx, stop := context.WithCancel(context.Background())
	m.stop = stop
	synced := make(chan struct{})
	m.loops.Add(2)
	go func() {
		defer m.loops.Done()
		m.watchPeers(loopCtx, synced)
	}()
	go func() {
		defer m.loops.Done()
		m.keepAlive(loopCtx, id)
	}()
	select {
	case <-synced:
	case <-ctx.Done():
		return fmt.Errorf("reading the cluster's nodes: %w", ctx.Err())
	}
	m.log.Info("joined the cluster", "addr", m.cfg.Addr, "lease", fmt.Sprintf("%x", int64(id)), "ttl", m.cfg.TTL, "nodes", len(m.Peers()))
	return nil
}

// Close leaves the cluster: it stops the loops and revokes the lease, so
// that peers see the node go at once, then closes the etcd client. If
// etcd cannot be reached within ctx the keys stay until the TTL runs out,
// and Close says so.
func (m *Membership) Close(ctx context.Context) error {
	if m.stop != nil {
		m.stop()
	}
	m.loops.Wait()
	var err error
	if id := m.Lease(); id != 0 {
		if _, rerr := m.etcd.Revoke(ctx, id); rerr != nil {
			err = fmt.Errorf("revoking the etcd lease: %w (the node's keys expire within %s)", rerr, m.cfg.TTL)
		} else {
			m.log.Info("left the cluster")
		}
		m.setLease(0)
	}
	if cerr := m.etcd.Close(); err == nil && cerr != nil && !errors.Is(cerr, context.Canceled) {
		err = cerr
	}
	return err
}

// Lookup returns node's advertised address and epoch, and whether it is
// registered now: server.Peers. It answers from the watch, never asks
// etcd: while etcd is away it answers what it knew last.
func (m *Membership) Lookup(node uint16) (addr string, epoch uint64, live bool) {
	m.peersMu.RLock()
	p, ok := m.peers[node]
	m.peersMu.RUnlock()
	return p.Addr, p.Epoch, ok
}

// Peers returns every registered node by tag, this one included.
func (m *Membership) Peers() map[uint16]Peer {
	m.peersMu.RLock()
	defer m.peersMu.RUnlock()
	out := make(map[uint16]Peer, len(m.peers))
	for k, v := range m.peers {
		out[k] = v
	}
	return out
}

// Lease returns the etcd lease holding the node's keys, 0 while it is not
// registered.
func (m *Membership) Lease() clientv3.LeaseID {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lease
}

func (m *Membership) setLease(id clientv3.LeaseID) {
	m.mu.Lock()
	m.lease = id
	m.mu.Unlock()
}
