package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"

	regclient "github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/cluster"
	"github.com/weakref/registry/internal/etcdtest"
	"github.com/weakref/registry/internal/handle"
)

// dialCluster dials the cluster target through etcd e and waits until the
// client knows want nodes.
func dialCluster(t *testing.T, e *etcdtest.Server, want int, opts ...regclient.Option) *regclient.Client {
	t.Helper()
	c, err := regclient.Dial(cluster.Target(clusterName), append([]regclient.Option{
		regclient.WithEtcd(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}),
	}, opts...)...)
	if err != nil {
		t.Fatalf("Dial of the cluster: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	poll(t, waitTimeout, fmt.Sprintf("the client knows %d nodes", want), func() bool { return len(c.Nodes()) == want })
	return c
}

// byNode groups handles by the tag they carry.
func byNode(t *testing.T, handles []string) map[uint16][]string {
	t.Helper()
	out := map[uint16][]string{}
	for _, h := range handles {
		tag, ok := handle.NodeOf(handle.Object, h)
		if !ok {
			t.Fatalf("not a handle: %q", h)
		}
		out[tag] = append(out[tag], h)
	}
	return out
}

// TestGoClientAcrossThreeNodes: the Go client, dialled at the cluster
// target, puts 300 objects over three real registryd nodes, every node
// getting some; resolves each through the cluster and each through a
// wrong node by a raw call (HANDLE_FOREIGN_NODE with the owner's
// address); one lease pins objects on all three, so forced collections on
// every node free nothing, and once it is closed every node collects its
// share.
func TestGoClientAcrossThreeNodes(t *testing.T) {
	e := etcdtest.Start(t)
	key := writeKeyFile(t)
	nodes := map[uint16]*daemon{}
	raw := map[uint16]*client{}
	for tag := uint16(1); tag <= 3; tag++ {
		nodes[tag] = clusterNode(t, e, key, int(tag))
		raw[tag] = dial(t, nodes[tag].Addr)
	}
	c := dialCluster(t, e, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lease, err := c.Lease(ctx, regclient.LeaseName("e2e-cluster"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	handles := make([]string, n)
	data := func(i int) []byte { return []byte("object " + strconv.Itoa(i)) }
	for i := range handles {
		info, err := c.Put(ctx, data(i), regclient.PinnedBy(lease))
		if err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
		handles[i] = info.Handle
	}
	groups := byNode(t, handles)
	for tag := uint16(1); tag <= 3; tag++ {
		if len(groups[tag]) == 0 {
			t.Fatalf("node %d got none of the %d objects: %v", tag, n, len(groups))
		}
	}
	t.Logf("objects per node: 1: %d, 2: %d, 3: %d", len(groups[1]), len(groups[2]), len(groups[3]))
	if got := lease.NodeLeases(); len(got) != 3 {
		t.Fatalf("the lease has parts on %v, want all three nodes", got)
	}

	resolved, err := c.ResolveMany(ctx, handles)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resolved {
		if r.Err != nil || string(r.Data) != string(data(i)) {
			t.Fatalf("ResolveMany[%d] = %q, %v", i, r.Data, r.Err)
		}
	}
	for i, h := range handles {
		got, _, err := c.Resolve(ctx, h)
		if err != nil || string(got) != string(data(i)) {
			t.Fatalf("Resolve %d through the cluster = %q, %v", i, got, err)
		}
		owner, _ := handle.NodeOf(handle.Object, h)
		wrong := owner%3 + 1
		_, err = raw[wrong].reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: h})
		md := wantStatus(t, err, codes.NotFound, "HANDLE_FOREIGN_NODE").GetMetadata()
		if md["owner_addr"] != nodes[owner].Addr || md["node"] != strconv.Itoa(int(owner)) {
			t.Fatalf("node %d on node %d's handle: %v, want owner_addr %s", wrong, owner, md, nodes[owner].Addr)
		}
	}

	for tag, rc := range raw {
		if got := collect(t, rc).GetCollectedObjects(); got != 0 {
			t.Errorf("a forced collection on node %d freed %d objects, all pinned", tag, got)
		}
	}
	resolved, err = c.ResolveMany(ctx, handles)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range resolved {
		if r.Err != nil {
			t.Fatalf("after the collections, handle %d: %v", i, r.Err)
		}
	}

	if _, err := lease.Close(ctx); err != nil {
		t.Fatalf("closing the lease: %v", err)
	}
	for tag, rc := range raw {
		if got := collect(t, rc).GetCollectedObjects(); got != int64(len(groups[tag])) {
			t.Errorf("once the lease closed, node %d collected %d objects, want its %d", tag, got, len(groups[tag]))
		}
	}
	for i, h := range handles {
		if _, _, err := c.Resolve(ctx, h); !errors.Is(err, regclient.ErrCollected) {
			t.Fatalf("handle %d after the lease and the collections: %v, want ErrCollected", i, err)
		}
	}
}

// TestGoClientLosesOnlyTheKilledNodesPins: SIGKILL of one node of three;
// within its TTL and a bound the client stops routing to it, says which
// pins the lease lost there, and answers ErrNodeUnavailable for its
// handles; the other nodes' objects stay pinned by the same lease.
// Restarted with the same tag, the node's old handles answer
// ErrRestarted.
func TestGoClientLosesOnlyTheKilledNodesPins(t *testing.T) {
	// Without a grace the lease's part on the node ends with its stream,
	// before etcd says the node left; with one, it waits to resume until
	// the node leaves the cluster.
	for _, tc := range []struct {
		grace time.Duration
		why   error
	}{{0, regclient.ErrLeaseLost}, {time.Minute, regclient.ErrNodeUnavailable}} {
		t.Run("grace "+tc.grace.String(), func(t *testing.T) { killedNodesPins(t, tc.grace, tc.why) })
	}
}

func killedNodesPins(t *testing.T, grace time.Duration, why error) {
	e := etcdtest.Start(t)
	key := writeKeyFile(t)
	nodes := map[uint16]*daemon{}
	for tag := uint16(1); tag <= 3; tag++ {
		nodes[tag] = clusterNode(t, e, key, int(tag))
	}
	c := dialCluster(t, e, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lost := make(chan regclient.LostPins, 3)
	lease, err := c.Lease(ctx, regclient.Grace(grace), regclient.OnLostPins(func(lp regclient.LostPins) { lost <- lp }))
	if err != nil {
		t.Fatal(err)
	}
	var handles []string
	for tag := uint16(1); tag <= 3; tag++ {
		for i := range 5 {
			info, err := c.Put(ctx, []byte(fmt.Sprintf("node %d object %d", tag, i)), regclient.PinnedBy(lease), regclient.PreferNode(tag))
			if err != nil {
				t.Fatal(err)
			}
			handles = append(handles, info.Handle)
		}
	}
	groups := byNode(t, handles)

	if err := nodes[3].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	nodes[3].waitExit(t, stopTimeout)
	killed := time.Now()
	poll(t, clusterTTL+ttlBound, "the client stops routing to node 3", func() bool { return !slices.Contains(c.Nodes(), 3) })
	t.Logf("the client dropped node 3 %s after SIGKILL (TTL %s)", time.Since(killed).Round(time.Millisecond), clusterTTL)
	select {
	case lp := <-lost:
		slices.Sort(lp.Handles)
		want := slices.Sorted(slices.Values(groups[3]))
		if lp.Node != 3 || !slices.Equal(lp.Handles, want) || !errors.Is(lp.Err, why) {
			t.Errorf("lost pins = node %d, %d handles, %v; want node 3's %d, %v", lp.Node, len(lp.Handles), lp.Err, len(want), why)
		}
		t.Logf("the lease reported node 3's %d pins lost: %v", len(lp.Handles), lp.Err)
	case <-time.After(waitTimeout):
		t.Fatal("the lease did not report the pins lost on node 3")
	}
	for _, h := range groups[3] {
		if _, _, err := c.Resolve(ctx, h); !errors.Is(err, regclient.ErrNodeUnavailable) {
			t.Fatalf("node 3's handle: %v, want ErrNodeUnavailable", err)
		}
	}
	for tag := uint16(1); tag <= 2; tag++ {
		for _, h := range groups[tag] {
			info, err := c.Stat(ctx, h)
			if err != nil || info.State != regclient.StatePinned || info.PinCount != 1 {
				t.Fatalf("node %d's object after node 3 died: %+v, %v; want pinned once", tag, info, err)
			}
		}
	}

	nodes[3] = clusterNode(t, e, key, 3)
	poll(t, waitTimeout, "the client routes to node 3 again", func() bool { return slices.Contains(c.Nodes(), 3) })
	for _, h := range groups[3] {
		if _, _, err := c.Resolve(ctx, h); !errors.Is(err, regclient.ErrRestarted) {
			t.Fatalf("node 3's old handle after its restart: %v, want ErrRestarted", err)
		}
	}
	if _, err := lease.Close(ctx); err != nil {
		t.Fatalf("closing the lease: %v", err)
	}
}
