package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.uber.org/zap"

	"github.com/weakref/registry/client"
	"github.com/weakref/registry/internal/cluster"
	"github.com/weakref/registry/internal/etcdtest"
	"github.com/weakref/registry/internal/handle"
)

// testCluster is a real etcd and registry servers of distinct node tags
// and one key, each registered in etcd as registryd's membership does: an
// endpoint under cluster.NodeKey with cluster.Member metadata, attached
// to an etcd lease of the node's.
type testCluster struct {
	name  string
	etcd  *etcdtest.Server
	ec    *clientv3.Client
	em    endpoints.Manager
	nodes map[uint16]*testNode
	epoch atomic.Uint64 // the last epoch given to a node
}

type testNode struct {
	*testServer
	tag       uint16
	epoch     uint64
	lease     clientv3.LeaseID // the etcd lease its registration hangs on; 0: not registered
	advertise string           // the address registered, if not addr (a proxy's)
}

func newCluster(t testing.TB, tags ...uint16) *testCluster {
	t.Helper()
	e := etcdtest.Start(t)
	tc := &testCluster{name: "c" + strconv.Itoa(len(tags)), etcd: e, ec: e.Client(t), nodes: map[uint16]*testNode{}}
	tc.epoch.Store(uint64(time.Now().UnixMilli()))
	em, err := endpoints.NewManager(tc.ec, cluster.NodesTarget(tc.name))
	if err != nil {
		t.Fatal(err)
	}
	tc.em = em
	for _, tag := range tags {
		tc.start(t, tag)
	}
	return tc
}

// start starts a node with tag and a new epoch and registers it.
func (tc *testCluster) start(t testing.TB, tag uint16) {
	t.Helper()
	epoch := tc.epoch.Add(1)
	n := &testNode{
		testServer: startServerCodec(t, time.Minute, handle.Config{Key: []byte(testKey), Node: tag, Epoch: epoch}, 4<<20),
		tag:        tag, epoch: epoch,
	}
	tc.nodes[tag] = n
	tc.register(t, n)
}

// register writes n's endpoint under an etcd lease of its own.
func (tc *testCluster) register(t testing.TB, n *testNode) {
	t.Helper()
	ctx := ctxT(t)
	grant, err := tc.ec.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	m := cluster.Member{Node: n.tag, Epoch: n.epoch, Version: "test", Started: time.Now()}
	addr := n.addr
	if n.advertise != "" {
		addr = n.advertise
	}
	if err := tc.em.AddEndpoint(ctx, cluster.NodeKey(tc.name, n.tag), m.Endpoint(addr), clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	n.lease = grant.ID
}

// leave revokes n's etcd lease, as a node shutting down does: its
// endpoint goes at once.
func (tc *testCluster) leave(t *testing.T, n *testNode) {
	t.Helper()
	if _, err := tc.ec.Revoke(ctxT(t), n.lease); err != nil {
		t.Fatal(err)
	}
	n.lease = 0
}

// dial returns a client of the cluster target, closed when t ends.
// behindProxy registers n again at a proxy's address in front of it, so
// that a test can play the network to it failing.
func (tc *testCluster) behindProxy(t *testing.T, n *testNode) *proxy {
	t.Helper()
	px := newProxy(t, n.addr)
	tc.leave(t, n)
	n.advertise = px.Addr()
	tc.register(t, n)
	return px
}

// leaseReportingLoss opens a lease of c with a grace of 30s, closed when
// the test ends, whose lost pins come on the channel.
func leaseReportingLoss(t *testing.T, c *client.Client) (*client.Lease, <-chan client.LostPins) {
	t.Helper()
	lost := make(chan client.LostPins, 4)
	l, err := c.Lease(ctxT(t), client.Grace(30*time.Second), client.OnLostPins(func(lp client.LostPins) { lost <- lp }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		l.Close(ctx)
	})
	return l, lost
}

func (tc *testCluster) dial(t testing.TB, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.Dial(cluster.Target(tc.name), append([]client.Option{client.WithEtcd(clientv3.Config{
		Endpoints: tc.etcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func nodeOf(t *testing.T, h string) uint16 {
	t.Helper()
	tag, ok := handle.NodeOf(handle.Object, h)
	if !ok {
		t.Fatalf("%q carries no node tag", h)
	}
	return tag
}

// strangerHandle is a handle of node tag, whose server is not a member.
func strangerHandle(t *testing.T, tag uint16) string {
	t.Helper()
	s := startServerCodec(t, 0, handle.Config{Key: []byte(testKey), Node: tag}, 4<<20)
	c, err := client.Dial(s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info, err := c.Put(ctxT(t), []byte("stranger"), client.Linger(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return info.Handle
}

// wantNodeUnavailable fails t unless err is NODE_UNAVAILABLE for tag.
func wantNodeUnavailable(t *testing.T, what string, err error, tag uint16) {
	t.Helper()
	var e *client.Error
	if !errors.Is(err, client.ErrNodeUnavailable) || !errors.As(err, &e) ||
		e.Reason != "NODE_UNAVAILABLE" || e.Code.String() != "Unavailable" || e.Metadata["node"] != strconv.Itoa(int(tag)) {
		t.Fatalf("%s: %v (%+v), want NODE_UNAVAILABLE of node %d", what, err, e, tag)
	}
}

func TestClusterPutsLandOnEveryNodeAndResolveThroughTheCluster(t *testing.T) {
	tc := newCluster(t, 1, 2, 3)
	c := tc.dial(t)
	ctx := ctxT(t)
	lease, err := c.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Close(ctx)
	var handles []string
	perNode := map[uint16]int{}
	for i := range 30 {
		info, err := c.Put(ctx, []byte(fmt.Sprint("object ", i)), client.PinnedBy(lease))
		if err != nil {
			t.Fatal(err)
		}
		if info.State != client.StatePinned {
			t.Fatalf("put %d: %+v, want pinned", i, info)
		}
		handles = append(handles, info.Handle)
		perNode[nodeOf(t, info.Handle)]++
	}
	// Round robin over the live nodes, by tag.
	if want := map[uint16]int{1: 10, 2: 10, 3: 10}; !maps.Equal(perNode, want) {
		t.Fatalf("puts per node = %v, want %v", perNode, want)
	}
	if ids := lease.NodeLeases(); len(ids) != 3 || lease.ID() != "" {
		t.Fatalf("NodeLeases = %v, ID = %q; want a lease on each of 3 nodes, no single id", ids, lease.ID())
	}
	for _, n := range tc.nodes {
		n.collect(t)
	}
	for i, h := range handles {
		data, info, err := c.Resolve(ctx, h)
		if err != nil || string(data) != fmt.Sprint("object ", i) || info.PinCount != 1 {
			t.Fatalf("Resolve %d = %q, %+v, %v", i, data, info, err)
		}
	}

	stranger := strangerHandle(t, 9)
	batch := append(slices.Clone(handles), "obj_malformed", stranger)
	got, err := c.ResolveMany(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i := range handles {
		if got[i].Err != nil || string(got[i].Data) != fmt.Sprint("object ", i) {
			t.Fatalf("ResolveMany[%d] = %q, %v", i, got[i].Data, got[i].Err)
		}
	}
	if !errors.Is(got[30].Err, client.ErrMalformedHandle) {
		t.Fatalf("ResolveMany of a malformed handle: %v, want ErrMalformedHandle", got[30].Err)
	}
	wantNodeUnavailable(t, "ResolveMany of node 9's handle", got[31].Err, 9)
	stats, err := c.StatMany(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i := range handles {
		if stats[i].Err != nil || stats[i].Info.Handle != handles[i] {
			t.Fatalf("StatMany[%d] = %+v", i, stats[i])
		}
	}
	wantNodeUnavailable(t, "StatMany of node 9's handle", stats[31].Err, 9)
	wantNodeUnavailable(t, "Stat of node 9's handle", func() error { _, err := c.Stat(ctx, stranger); return err }(), 9)
	if _, _, err := c.Resolve(ctx, "obj_malformed"); !errors.Is(err, client.ErrMalformedHandle) {
		t.Fatalf("Resolve of a malformed handle: %v", err)
	}
	if _, err := c.Download(ctx, handles[4], io.Discard); err != nil {
		t.Fatalf("Download: %v", err)
	}
	if got := c.Nodes(); !slices.Equal(got, []uint16{1, 2, 3}) {
		t.Fatalf("Nodes = %v", got)
	}
	for _, m := range c.Members() {
		n := tc.nodes[m.Node]
		if m.Addr != n.addr || m.Epoch != n.epoch || m.Version != "test" || m.Conn == nil {
			t.Fatalf("member %+v, want node %d at %s, epoch %d", m, n.tag, n.addr, n.epoch)
		}
	}
}

func TestClusterLeaseOpensOnePartPerNodeUnderConcurrentPins(t *testing.T) {
	tc := newCluster(t, 1, 2, 3)
	c := tc.dial(t)
	ctx := ctxT(t)
	var handles []string
	for i := range 24 {
		info, err := c.Put(ctx, []byte{byte(i)}, client.Linger(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, info.Handle)
	}
	l, err := c.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			rs, err := l.Pin(ctx, handles[g*3:g*3+3]...)
			for _, r := range rs {
				if err == nil && r.Outcome != client.OutcomePinned {
					err = fmt.Errorf("%s: %v %w", r.Handle, r.Outcome, r.Err)
				}
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if ids := l.NodeLeases(); len(ids) != 3 {
		t.Fatalf("NodeLeases = %v, want one per node", ids)
	}
	if n, err := l.Close(ctx); err != nil || n != len(handles) {
		t.Fatalf("Close = %d, %v; want %d: every pin on a part Close knew", n, err, len(handles))
	}
}

func TestClusterPreferNodePlacesThePut(t *testing.T) {
	tc := newCluster(t, 1, 2)
	c := tc.dial(t)
	ctx := ctxT(t)
	for _, tc := range []struct {
		prefer, want uint16
	}{{2, 2}, {1, 1}, {2, 2}} {
		info, err := c.Put(ctx, []byte("x"), client.PreferNode(tc.prefer), client.Linger(time.Minute))
		if err != nil || nodeOf(t, info.Handle) != tc.want {
			t.Fatalf("Put PreferNode(%d) = %v, %v; want node %d", tc.prefer, info.Handle, err, tc.want)
		}
	}
	// A node that is not live is only a preference: the put goes elsewhere.
	info, err := c.Put(ctx, []byte("x"), client.PreferNode(9), client.Linger(time.Minute))
	if err != nil || nodeOf(t, info.Handle) == 9 {
		t.Fatalf("Put PreferNode(9) = %v, %v", info.Handle, err)
	}
}

func TestClusterLeasePinsOnEveryNodeAndClosingLetsEachCollect(t *testing.T) {
	tc := newCluster(t, 1, 2, 3)
	c := tc.dial(t)
	ctx := ctxT(t)
	producer, err := c.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var handles []string
	for i := range 9 {
		info, err := c.Put(ctx, []byte{byte(i)}, client.PinnedBy(producer))
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, info.Handle)
	}
	l, err := c.Lease(ctx, client.LeaseName("consumer"))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := l.Pin(ctx, append([]string{"obj_malformed"}, handles...)...)
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Outcome != client.OutcomeFailed || !errors.Is(rs[0].Err, client.ErrMalformedHandle) {
		t.Fatalf("Pin of a malformed handle = %+v", rs[0])
	}
	for i, r := range rs[1:] {
		if r.Handle != handles[i] || r.Outcome != client.OutcomePinned {
			t.Fatalf("Pin result %d = %+v, want %s pinned", i, r, handles[i])
		}
	}
	if n, err := producer.Close(ctx); err != nil || n != 9 {
		t.Fatalf("producer Close = %d, %v; want 9", n, err)
	}
	for _, n := range tc.nodes {
		n.collect(t)
	}
	for i, h := range handles {
		if data, _, err := c.Resolve(ctx, h); err != nil || data[0] != byte(i) {
			t.Fatalf("pinned object %d after collections: %v", i, err)
		}
	}
	// Unpin on one node, through the cluster's lease.
	if rs, err := l.Unpin(ctx, handles[0]); err != nil || rs[0].Outcome != client.OutcomeUnpinned {
		t.Fatalf("Unpin = %+v, %v", rs, err)
	}
	if rs, err := l.Pin(ctx, handles[0]); err != nil || rs[0].Outcome != client.OutcomePinned {
		t.Fatalf("Pin again = %+v, %v", rs, err)
	}
	if n, err := l.Close(ctx); err != nil || n != 9 {
		t.Fatalf("Close = %d, %v; want 9 released over three nodes", n, err)
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if _, err := l.Pin(ctx, handles[0]); err == nil {
		t.Fatal("Pin on a closed cluster lease succeeded")
	}
	for _, n := range tc.nodes {
		n.collect(t)
	}
	for i, h := range handles {
		if _, _, err := c.Resolve(ctx, h); !errors.Is(err, client.ErrCollected) {
			t.Fatalf("object %d after Close and collections: %v, want ErrCollected", i, err)
		}
	}
}

func TestClusterLeaseResolvePinsOnTheHandlesNode(t *testing.T) {
	tc := newCluster(t, 1, 2)
	c := tc.dial(t)
	ctx := ctxT(t)
	var handles []string
	for i := range 4 {
		info, err := c.Put(ctx, []byte{byte(i)}, client.Linger(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, info.Handle)
	}
	l, err := c.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	if _, info, err := l.Resolve(ctx, handles[0]); err != nil || info.PinCount != 1 {
		t.Fatalf("Lease.Resolve = %+v, %v", info, err)
	}
	got, err := l.ResolveMany(ctx, handles[1:], client.WithInfo())
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range got {
		if r.Err != nil || r.Info.PinCount != 1 || r.Data[0] != byte(i+1) {
			t.Fatalf("Lease.ResolveMany[%d] = %+v", i, r)
		}
	}
	if ids := l.NodeLeases(); len(ids) != 2 {
		t.Fatalf("NodeLeases = %v, want one on each node", ids)
	}
	if n, err := l.Close(ctx); err != nil || n != 4 {
		t.Fatalf("Close = %d, %v; want 4", n, err)
	}
}

func TestClusterNodeLeavingFailsOnlyItsHandlesAndReportsItsPins(t *testing.T) {
	tc := newCluster(t, 1, 2, 3)
	c := tc.dial(t)
	ctx := ctxT(t)
	l, lost := leaseReportingLoss(t, c)
	byNode := map[uint16][]string{}
	for i := range 9 {
		info, err := c.Put(ctx, []byte{byte(i)}, client.PinnedBy(l))
		if err != nil {
			t.Fatal(err)
		}
		tag := nodeOf(t, info.Handle)
		byNode[tag] = append(byNode[tag], info.Handle)
	}
	kept, err := c.Put(ctx, []byte("kept"), client.PreferNode(2), client.Linger(time.Minute))
	if err != nil || nodeOf(t, kept.Handle) != 2 {
		t.Fatalf("Put on node 2: %v, %v", kept.Handle, err)
	}

	w, err := c.Watch(ctx, slices.Concat(byNode[1], byNode[2], byNode[3])...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	tc.leave(t, tc.nodes[2])
	for {
		if _, err := w.Recv(); err != nil {
			wantNodeUnavailable(t, "the watch when node 2 left", err, 2)
			break
		}
	}
	var lp client.LostPins
	select {
	case lp = <-lost:
	case <-ctx.Done():
		t.Fatal("no pins reported lost after node 2 left")
	}
	slices.Sort(lp.Handles)
	want := slices.Sorted(slices.Values(byNode[2]))
	if lp.Node != 2 || !slices.Equal(lp.Handles, want) {
		t.Fatalf("lost = node %d %v, want node 2 %v", lp.Node, lp.Handles, want)
	}
	wantNodeUnavailable(t, "the lost pins' error", lp.Err, 2)
	if got := c.Nodes(); !slices.Equal(got, []uint16{1, 3}) {
		t.Fatalf("Nodes = %v, want [1 3]", got)
	}
	for _, h := range byNode[2] {
		_, _, err := c.Resolve(ctx, h)
		wantNodeUnavailable(t, "Resolve of node 2's handle", err, 2)
		rs, err := l.Pin(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		wantNodeUnavailable(t, "Pin of node 2's handle", rs[0].Err, 2)
	}
	// The other nodes' pins stay.
	tc.nodes[1].collect(t)
	tc.nodes[3].collect(t)
	for _, tag := range []uint16{1, 3} {
		for _, h := range byNode[tag] {
			if info, err := c.Stat(ctx, h); err != nil || info.PinCount != 1 {
				t.Fatalf("node %d's object after node 2 left: %+v, %v", tag, info, err)
			}
		}
	}
	if ids := l.NodeLeases(); len(ids) != 2 || ids[2] != "" {
		t.Fatalf("NodeLeases = %v, want nodes 1 and 3 only", ids)
	}
	for range 4 {
		info, err := c.Put(ctx, []byte("after"), client.Linger(time.Minute))
		if err != nil || nodeOf(t, info.Handle) == 2 {
			t.Fatalf("Put after node 2 left = %v, %v", info.Handle, err)
		}
	}

	// Registered again: routed again, and a pin there opens a new part.
	tc.register(t, tc.nodes[2])
	waitFor(t, "node 2 routed again", func() bool { return slices.Equal(c.Nodes(), []uint16{1, 2, 3}) })
	if data, _, err := c.Resolve(ctx, kept.Handle); err != nil || string(data) != "kept" {
		t.Fatalf("node 2's object after it rejoined: %q, %v", data, err)
	}
	if rs, err := l.Pin(ctx, kept.Handle); err != nil || rs[0].Outcome != client.OutcomePinned {
		t.Fatalf("Pin on node 2 after it rejoined = %+v, %v", rs, err)
	}
	if ids := l.NodeLeases(); len(ids) != 3 {
		t.Fatalf("NodeLeases = %v, want 3", ids)
	}
	select {
	case lp := <-lost:
		t.Fatalf("more lost pins reported: %+v", lp)
	default:
	}
}

func TestClusterDroppedConnectionResumesOnlyThatNodesPart(t *testing.T) {
	tc := newCluster(t, 1, 2, 3)
	// Node 2 is reached through a proxy that plays the network failing.
	n2 := tc.nodes[2]
	px := tc.behindProxy(t, n2)
	c := tc.dial(t)
	ctx := ctxT(t)
	l, lost := leaseReportingLoss(t, c)
	var handles []string
	for i := range 6 {
		info, err := c.Put(ctx, []byte{byte(i)}, client.PinnedBy(l))
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, info.Handle)
	}
	ids := l.NodeLeases()
	px.Drop()
	waitFor(t, "node 2's part resumed", func() bool { return l.Resumes() == 1 })
	rs, err := l.Pin(ctx, handles...)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if r.Outcome != client.OutcomeAlreadyPinned {
			t.Fatalf("Pin %d after the drop = %+v, want already pinned: the resumed part kept its pins", i, r)
		}
	}
	for _, n := range tc.nodes {
		n.collect(t)
	}
	for i, h := range handles {
		if data, _, err := c.Resolve(ctx, h); err != nil || data[0] != byte(i) {
			t.Fatalf("object %d after the drop and collections: %v", i, err)
		}
	}
	if got := l.NodeLeases(); !maps.Equal(got, ids) {
		t.Fatalf("NodeLeases after the drop = %v, want the same %v", got, ids)
	}
	select {
	case lp := <-lost:
		t.Fatalf("pins reported lost after a drop within the grace: %+v", lp)
	default:
	}
}

func TestClusterRestartedNodeAnswersRestarted(t *testing.T) {
	tc := newCluster(t, 1, 2)
	c := tc.dial(t)
	ctx := ctxT(t)
	old, err := c.Put(ctx, []byte("old"), client.PreferNode(2), client.Linger(time.Minute))
	if err != nil || nodeOf(t, old.Handle) != 2 {
		t.Fatalf("Put on node 2: %v, %v", old.Handle, err)
	}
	n := tc.nodes[2]
	n.stop()
	tc.leave(t, n)
	waitFor(t, "node 2 gone", func() bool { return slices.Equal(c.Nodes(), []uint16{1}) })
	_, _, err = c.Resolve(ctx, old.Handle)
	wantNodeUnavailable(t, "Resolve while node 2 is down", err, 2)

	tc.start(t, 2) // the same tag, a new epoch, another port
	waitFor(t, "node 2 back", func() bool { return slices.Equal(c.Nodes(), []uint16{1, 2}) })
	if _, _, err := c.Resolve(ctx, old.Handle); !errors.Is(err, client.ErrRestarted) {
		t.Fatalf("Resolve of the old run's handle: %v, want ErrRestarted", err)
	}
}

func TestClusterWatchMergesTheNodesEvents(t *testing.T) {
	tc := newCluster(t, 1, 2, 3)
	c := tc.dial(t)
	ctx := ctxT(t)
	l, err := c.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var handles []string
	for i := range 3 {
		info, err := c.Put(ctx, []byte{byte(i)}, client.PinnedBy(l))
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, info.Handle)
	}
	w, err := c.Watch(ctx, handles...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	seen := map[client.EventKind]map[string]bool{}
	note := func(ev client.Event) {
		if seen[ev.Kind] == nil {
			seen[ev.Kind] = map[string]bool{}
		}
		seen[ev.Kind][ev.Handle] = true
	}
	for len(seen[client.EventCurrent]) < 3 {
		ev, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		note(ev)
	}
	if _, err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for len(seen[client.EventUnpinned]) < 3 {
		ev, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		note(ev)
	}
	for _, h := range handles {
		if !seen[client.EventCurrent][h] || !seen[client.EventUnpinned][h] {
			t.Fatalf("events of %s: CURRENT %v, UNPINNED %v", h, seen[client.EventCurrent][h], seen[client.EventUnpinned][h])
		}
	}
	w.Close()
	if _, err := w.Recv(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv after Close: %v, want context.Canceled", err)
	}

	_, err = c.Watch(ctx, handles[0], strangerHandle(t, 9))
	wantNodeUnavailable(t, "Watch of node 9's handle", err, 9)
	if _, err := c.WatchWith(ctx, handles, client.FromSequence(1)); err == nil {
		t.Fatal("WatchWith FromSequence over three nodes: no error")
	}
}

func TestDialOfAClusterTarget(t *testing.T) {
	for _, tc := range []struct {
		name, target string
		opts         []client.Option
	}{
		{"without etcd", "etcd:///registry/x", nil},
		{"a target without the registry root", "etcd:///x", []client.Option{client.WithEtcd(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}})}},
		{"a name that is no path segment", "etcd:///registry/a/b", []client.Option{client.WithEtcd(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := client.Dial(tc.target, tc.opts...); err == nil {
				c.Close()
				t.Fatalf("Dial(%q) succeeded", tc.target)
			}
		})
	}
}

func TestClusterClientOfTheCallersEtcdLeavesItOpen(t *testing.T) {
	tc := newCluster(t, 1)
	c, err := client.Dial(cluster.Target(tc.name), client.WithEtcdClient(tc.ec))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	info, err := c.Put(ctx, []byte("x"), client.Linger(time.Minute))
	if err != nil || nodeOf(t, info.Handle) != 1 {
		t.Fatalf("Put = %v, %v", info.Handle, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.ec.Get(ctx, "anything"); err != nil {
		t.Fatalf("the caller's etcd client after Close: %v", err)
	}
}

func TestClusterWatchLostToCompactionIsMadeAgainFromTheList(t *testing.T) {
	tc := newCluster(t, 1, 2, 3)
	// The client reaches etcd through a proxy, to be cut off from it while
	// the membership changes and etcd compacts those changes away: its
	// watch cannot resume and must be made again from the list.
	px := newProxy(t, strings.TrimPrefix(tc.etcd.Endpoint(), "http://"))
	c, err := client.Dial(cluster.Target(tc.name), client.WithEtcd(clientv3.Config{
		Endpoints: []string{px.Addr()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	if err := c.WaitForNodes(ctx); err != nil {
		t.Fatal(err)
	}
	px.SetRefuse(true)
	px.Drop()
	tc.leave(t, tc.nodes[2])
	tc.start(t, 4)
	resp, err := tc.ec.Get(ctx, "any")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tc.ec.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	px.SetRefuse(false)
	waitFor(t, "the table made again", func() bool { return slices.Equal(c.Nodes(), []uint16{1, 3, 4}) })
	if _, err := c.Put(ctx, []byte("x"), client.PreferNode(4), client.Linger(time.Minute)); err != nil {
		t.Fatalf("Put on the node that joined meanwhile: %v", err)
	}
}

func TestClusterOfNoLiveNodeFailsEachCallAsUnavailable(t *testing.T) {
	tc := newCluster(t)
	c := tc.dial(t)
	ctx := ctxT(t)
	if err := c.WaitForNodes(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, []byte("x")); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("Put with no live node: %v, want ErrUnavailable", err)
	}
	stranger := strangerHandle(t, 4)
	_, _, err := c.Resolve(ctx, stranger)
	wantNodeUnavailable(t, "Resolve with no live node", err, 4)
	got, err := c.ResolveMany(ctx, []string{stranger, "obj_malformed"})
	if err != nil {
		t.Fatal(err)
	}
	wantNodeUnavailable(t, "ResolveMany with no live node", got[0].Err, 4)
	if !errors.Is(got[1].Err, client.ErrUnavailable) {
		t.Fatalf("ResolveMany of a malformed handle with no node to ask: %v, want ErrUnavailable", got[1].Err)
	}
	if _, err := c.Watch(ctx, stranger); !errors.Is(err, client.ErrNodeUnavailable) {
		t.Fatalf("Watch with no live node: %v", err)
	}
}

func TestClusterCallsWaitForTheFirstListWithinTheirContext(t *testing.T) {
	tc := newCluster(t, 1)
	tc.etcd.Stop()
	c := tc.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, _, err := c.Resolve(ctx, "obj_x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Resolve with etcd away: %v, want the context's deadline", err)
	}
	tc.etcd.Restart(t)
	if err := c.WaitForNodes(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if got := c.Nodes(); !slices.Equal(got, []uint16{1}) {
		t.Fatalf("Nodes = %v", got)
	}
}

func TestClusterClientKeepsRoutingWhileEtcdIsAway(t *testing.T) {
	tc := newCluster(t, 1, 2)
	c := tc.dial(t)
	ctx := ctxT(t)
	info, err := c.Put(ctx, []byte("x"), client.Linger(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	tc.etcd.Stop()
	for range 3 {
		if _, _, err := c.Resolve(ctx, info.Handle); err != nil {
			t.Fatalf("Resolve with etcd away: %v", err)
		}
		if _, err := c.Put(ctx, []byte("y"), client.Linger(time.Minute)); err != nil {
			t.Fatalf("Put with etcd away: %v", err)
		}
	}
	tc.etcd.Restart(t)
	// The watch is made again: a node that leaves is seen.
	tc.leave(t, tc.nodes[1])
	waitFor(t, "node 1 gone after etcd came back", func() bool { return slices.Equal(c.Nodes(), []uint16{2}) })
}

func TestClusterNodeRestartedInPlaceReportsItsPinsRestarted(t *testing.T) {
	tc := newCluster(t, 1, 2)
	// Node 2 is reached through a proxy, so that it can vanish as a
	// crashed process does: connections cut and refused, no goodbye.
	n2 := tc.nodes[2]
	px := tc.behindProxy(t, n2)
	c := tc.dial(t)
	ctx := ctxT(t)
	l, lost := leaseReportingLoss(t, c)
	var on2 []string
	for i := range 4 {
		info, err := c.Put(ctx, []byte{byte(i)}, client.PinnedBy(l))
		if err != nil {
			t.Fatal(err)
		}
		if nodeOf(t, info.Handle) == 2 {
			on2 = append(on2, info.Handle)
		}
	}
	w, err := c.Watch(ctx, on2...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	px.SetRefuse(true)
	px.Drop()
	// A new run of node 2 takes over its registration before the old
	// one's expired: the same key, another address and epoch.
	lease := n2.lease
	tc.start(t, 2)
	if _, err := tc.ec.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	var lp client.LostPins
	select {
	case lp = <-lost:
	case <-ctx.Done():
		t.Fatal("no pins reported lost after node 2 restarted")
	}
	slices.Sort(lp.Handles)
	if lp.Node != 2 || !slices.Equal(lp.Handles, slices.Sorted(slices.Values(on2))) || !errors.Is(lp.Err, client.ErrRestarted) {
		t.Fatalf("lost = %+v, want node 2's %v, ErrRestarted", lp, on2)
	}
	for {
		_, err := w.Recv()
		if err != nil {
			if !errors.Is(err, client.ErrRestarted) {
				t.Fatalf("watch of node 2's objects after its restart: %v, want ErrRestarted", err)
			}
			break
		}
	}
	if _, _, err := c.Resolve(ctx, on2[0]); !errors.Is(err, client.ErrRestarted) {
		t.Fatalf("Resolve of the old run's handle: %v, want ErrRestarted", err)
	}
}

func TestClusterBadRequestsOnALeaseChangeNothingElse(t *testing.T) {
	tc := newCluster(t, 1, 2, 3)
	c := tc.dial(t)
	ctx := ctxT(t)
	l, err := c.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	var handles []string
	for i := range 3 {
		info, err := c.Put(ctx, []byte{byte(i)}, client.PinnedBy(l))
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, info.Handle)
	}
	up, err := c.Upload(ctx, strings.NewReader("uploaded"), 8, client.PinnedBy(l))
	if err != nil {
		t.Fatal(err)
	}
	handles = append(handles, up.Handle)
	ids := l.NodeLeases()
	stranger := strangerHandle(t, 9)

	rs, err := l.Pin(ctx, "obj_malformed", stranger)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(rs[0].Err, client.ErrMalformedHandle) || rs[0].Outcome != client.OutcomeFailed {
		t.Fatalf("Pin of a malformed handle = %+v", rs[0])
	}
	wantNodeUnavailable(t, "Pin of node 9's handle", rs[1].Err, 9)
	_, _, err = l.Resolve(ctx, stranger)
	wantNodeUnavailable(t, "Lease.Resolve of node 9's handle", err, 9)
	got, err := l.ResolveMany(ctx, []string{stranger, handles[0]})
	if err != nil || got[1].Err != nil {
		t.Fatalf("Lease.ResolveMany = %+v, %v", got, err)
	}
	wantNodeUnavailable(t, "Lease.ResolveMany of node 9's handle", got[0].Err, 9)
	if rs, err := l.Unpin(ctx, stranger); err != nil || !errors.Is(rs[0].Err, client.ErrNodeUnavailable) {
		t.Fatalf("Unpin of node 9's handle = %+v, %v", rs, err)
	}

	// Nothing else changed: the same parts, every pin still there.
	if got := l.NodeLeases(); !maps.Equal(got, ids) {
		t.Fatalf("NodeLeases = %v, want %v", got, ids)
	}
	for _, n := range tc.nodes {
		n.collect(t)
	}
	for _, h := range handles {
		if info, err := c.Stat(ctx, h); err != nil || info.PinCount != 1 {
			t.Fatalf("%s after the bad requests: %+v, %v", h, info, err)
		}
	}

	// A cluster's lease names no lease to a client of one address.
	single, err := client.Dial(tc.nodes[1].addr)
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	if _, err := single.Put(ctx, []byte("x"), client.PinnedBy(l)); err == nil {
		t.Fatal("Put PinnedBy a cluster's lease through a single address: no error")
	}
	if n, err := l.Close(ctx); err != nil || n != len(handles) {
		t.Fatalf("Close = %d, %v; want %d", n, err, len(handles))
	}
}

// BenchmarkClusterResolve is BenchmarkResolve through a cluster target of
// one node: the difference is what routing costs a call.
func BenchmarkClusterResolve(b *testing.B) {
	c := newCluster(b, 1).dial(b, client.WithoutTracing())
	benchResolve(b, c)
}
