package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/cluster"
	"github.com/weakref/registry/internal/handle"
)

// WithEtcd gives a cluster target's etcd: Dial makes a client of cfg and
// closes it with the Client. Without a Logger it logs nothing.
func WithEtcd(cfg clientv3.Config) Option {
	return func(o *options) { c := cfg; o.etcdConfig = &c }
}

// WithEtcdClient gives a cluster target's etcd as a client of the
// caller's, which the Client uses and does not close.
func WithEtcdClient(c *clientv3.Client) Option { return func(o *options) { o.etcd = c } }

// isClusterTarget reports whether target names a cluster in etcd rather
// than one registryd.
func isClusterTarget(target string) bool { return strings.HasPrefix(target, cluster.Scheme+"://") }

// router keeps a cluster's routing table: one Client per live node, as
// etcd lists them, and routes handles to them by the node tag every
// handle carries. Reads go through an atomic pointer to an immutable
// table, so that routing takes no lock.
type router struct {
	name    string
	etcd    *clientv3.Client
	ownEtcd bool    // Dial made etcd: Close closes it
	opts    options // how each node is dialled

	table  atomic.Pointer[table]
	ready  chan struct{} // closed when the first list of nodes has arrived
	cancel context.CancelFunc
	done   chan struct{} // closed when follow has returned

	// mu serialises changes to the table (by follow, and Close).
	mu     sync.Mutex
	closed bool

	next atomic.Uint64 // round robin of placement
}

// table is one version of the routing table; never changed once stored.
type table struct {
	nodes map[uint16]*node
	tags  []uint16 // the live tags in order, for placement
}

// node is one live member and this client's connection to it.
type node struct {
	tag    uint16
	member cluster.Member
	addr   string
	c      *Client
}

func dialCluster(target string, o options) (*Client, error) {
	name, err := cluster.NameOfTarget(target)
	if err != nil {
		return nil, err
	}
	r := &router{name: name, etcd: o.etcd, opts: o, ready: make(chan struct{}), done: make(chan struct{})}
	r.opts.etcd, r.opts.etcdConfig = nil, nil
	switch {
	case o.etcd != nil:
	case o.etcdConfig != nil:
		cfg := *o.etcdConfig
		if cfg.Logger == nil {
			cfg.Logger = zap.NewNop()
		}
		if r.etcd, err = clientv3.New(cfg); err != nil {
			return nil, fmt.Errorf("registry: cluster %s: etcd: %w", name, err)
		}
		r.ownEtcd = true
	default:
		return nil, fmt.Errorf("registry: cluster target %s needs WithEtcd or WithEtcdClient", target)
	}
	em, err := endpoints.NewManager(r.etcd, cluster.NodesTarget(name))
	if err != nil {
		if r.ownEtcd {
			_ = r.etcd.Close()
		}
		return nil, err
	}
	r.table.Store(&table{nodes: map[uint16]*node{}})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.follow(ctx, em)
	return &Client{opts: o, cl: r}, nil
}

// follow follows the cluster's endpoints in etcd until ctx ends. A watch
// channel that closes (etcd unreachable, the watch compacted) is made
// again, with backoff; meanwhile the table stays as it was, so that the
// nodes keep being used while only etcd is away.
func (r *router) follow(ctx context.Context, em endpoints.Manager) {
	defer close(r.done)
	retry := newBackoff(defaultBackoff)
	for {
		if !wait(retry.next(), ctx.Done()) || ctx.Err() != nil {
			return
		}
		wctx, cancel := context.WithCancel(ctx)
		ch, err := em.NewWatchChannel(wctx)
		if err != nil {
			cancel()
			continue
		}
		retry.up()
		// NewWatchChannel puts the list it read in the channel before it
		// returns, unless the list is empty: what is there now is the
		// list, and a change that came after an empty one is a list too.
		var first []*endpoints.Update
		open := true
		select {
		case first, open = <-ch:
		default:
		}
		if open { // a channel closed at once read nothing: keep the table
			r.apply(first, true)
		}
		for ups := range ch {
			r.apply(ups, false)
		}
		cancel()
		retry.down()
	}
}

// apply changes the table by ups; with list, ups is the whole membership
// and every node not in it leaves. Nodes that leave, or whose address or
// epoch changed, have their connection closed.
func (r *router) apply(ups []*endpoints.Update, list bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	old := r.table.Load()
	nodes := make(map[uint16]*node, len(old.nodes)+len(ups))
	if !list {
		for tag, n := range old.nodes {
			nodes[tag] = n
		}
	}
	for _, up := range ups {
		tag, err := cluster.TagOfKey(up.Key)
		if err != nil {
			continue
		}
		if up.Op == endpoints.Delete {
			delete(nodes, tag)
			continue
		}
		m, err := cluster.MemberOf(up.Endpoint)
		if err != nil || m.Node != tag {
			continue // not a registryd's endpoint: ignore it rather than route to it
		}
		if n := old.nodes[tag]; n != nil && n.addr == up.Endpoint.Addr && n.member.Epoch == m.Epoch {
			nodes[tag] = n
			continue
		}
		c, err := dialOne(up.Endpoint.Addr, r.opts)
		if err != nil {
			continue
		}
		nodes[tag] = &node{tag: tag, member: m, addr: up.Endpoint.Addr, c: c}
	}
	t := &table{nodes: nodes, tags: make([]uint16, 0, len(nodes))}
	for tag := range nodes {
		t.tags = append(t.tags, tag)
	}
	slices.Sort(t.tags)
	r.table.Store(t)
	for tag, n := range old.nodes {
		if nodes[tag] != n {
			_ = n.c.Close()
		}
	}
	select {
	case <-r.ready:
	default:
		close(r.ready)
	}
}

// current returns the routing table once the first list of nodes has
// arrived, waiting for it within ctx.
func (r *router) current(ctx context.Context) (*table, error) {
	select {
	case <-r.ready:
		return r.table.Load(), nil
	default:
	}
	select {
	case <-r.ready:
		return r.table.Load(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// route returns the node of object handle h. A handle whose node is not live is
// NODE_UNAVAILABLE without a call; one that carries no node tag at all
// goes to any node, whose answer (HANDLE_MALFORMED, ...) is the truth.
func (r *router) route(ctx context.Context, h string) (*node, error) {
	t, err := r.current(ctx)
	if err != nil {
		return nil, err
	}
	tag, ok := handle.NodeOf(handle.Object, h)
	if !ok {
		return t.place(r, nil)
	}
	if n := t.nodes[tag]; n != nil {
		return n, nil
	}
	return nil, nodeUnavailable(tag)
}

// leftBy says how n left the table, if it did: gone (no live node of its
// tag), or restarted (its tag is live again with another epoch). A
// stream on n's connection that ended because it was closed ended for
// that reason, which is the truth to report.
func (r *router) leftBy(n *node) (gone, restarted bool) {
	switch cur := r.table.Load().nodes[n.tag]; cur {
	case n:
		return false, false
	case nil:
		return true, false
	default:
		return false, cur.member.Epoch != n.member.Epoch
	}
}

// nodeRestarted is the error of a stream of node tag's earlier run.
func nodeRestarted(tag uint16) *Error {
	return &Error{
		Code: codes.NotFound, Reason: reasonRestarted, kind: ErrRestarted,
		Message:  "node " + strconv.Itoa(int(tag)) + " restarted: what it held went with that run",
		Metadata: map[string]string{"node": strconv.Itoa(int(tag))},
	}
}

// place picks the node a new object goes to: the preferred node if it is
// live, else the next live node in round robin, by tag.
func (t *table) place(r *router, prefer *uint16) (*node, error) {
	if prefer != nil {
		if n := t.nodes[*prefer]; n != nil {
			return n, nil
		}
	}
	if len(t.tags) == 0 {
		return nil, &Error{Code: codes.Unavailable, Message: "cluster " + r.name + " has no live node", kind: ErrUnavailable}
	}
	return t.nodes[t.tags[(r.next.Add(1)-1)%uint64(len(t.tags))]], nil
}

// nodeUnavailable is the error of a handle of node tag, which is not a
// live member: what registryd itself answers with reason NODE_UNAVAILABLE.
func nodeUnavailable(tag uint16) *Error {
	return &Error{
		Code: codes.Unavailable, Reason: reasonNodeUnavailable, kind: ErrNodeUnavailable,
		Message:  "node " + strconv.Itoa(int(tag)) + " is not a live member of the cluster; retry when it rejoins (its objects are not replicated)",
		Metadata: map[string]string{"node": strconv.Itoa(int(tag))},
	}
}

// Nodes returns the tags of the cluster's live nodes, in order, as this
// client sees them now; nil for a client of a single address.
func (c *Client) Nodes() []uint16 {
	if c.cl == nil {
		return nil
	}
	return slices.Clone(c.cl.table.Load().tags)
}

// Member is a live node of a cluster, as the client sees it now.
type Member struct {
	Node    uint16 // its tag, the one its handles carry
	Addr    string // its advertised address
	Epoch   uint64 // its run
	Version string // its build of registryd
	Started time.Time
	// Conn is the client's connection to it, for its AdminService or its
	// health; closed when the node leaves.
	Conn *grpc.ClientConn
}

// Members returns the cluster's live nodes, by tag, as this client sees
// them now; nil for a client of a single address.
func (c *Client) Members() []Member {
	if c.cl == nil {
		return nil
	}
	t := c.cl.table.Load()
	out := make([]Member, 0, len(t.tags))
	for _, tag := range t.tags {
		n := t.nodes[tag]
		out = append(out, Member{Node: tag, Addr: n.addr, Epoch: n.member.Epoch, Version: n.member.Version,
			Started: n.member.Started, Conn: n.c.conn})
	}
	return out
}

// WaitForNodes waits within ctx until the client has read the cluster's
// nodes from etcd once; it returns at once for a single address. Calls
// wait for it by themselves: it is for a program that wants to know at
// start that etcd answers.
func (c *Client) WaitForNodes(ctx context.Context) error {
	if c.cl == nil {
		return nil
	}
	_, err := c.cl.current(ctx)
	return err
}

// close stops following etcd and closes every node's connection.
func (r *router) close() error {
	r.cancel()
	<-r.done
	r.mu.Lock()
	r.closed = true
	t := r.table.Load()
	r.table.Store(&table{nodes: map[uint16]*node{}})
	r.mu.Unlock()
	var errs []error
	for _, n := range t.nodes {
		errs = append(errs, n.c.Close())
	}
	if r.ownEtcd {
		errs = append(errs, r.etcd.Close())
	}
	return errors.Join(errs...)
}

var (
	reasonNodeUnavailable = registryv1.ErrorReason_NODE_UNAVAILABLE.String()
	reasonRestarted       = registryv1.ErrorReason_REGISTRY_RESTARTED.String()
)
