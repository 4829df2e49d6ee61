package client

import (
	"context"
	"slices"
	"testing"

	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"google.golang.org/grpc/connectivity"

	"github.com/weakref/registry/internal/cluster"
	"github.com/weakref/registry/internal/handle"
)

// routerOf is a router whose table holds nodes tags, without etcd or
// connections: what route reads.
func routerOf(tags ...uint16) *router {
	r := &router{name: "bench", ready: make(chan struct{})}
	close(r.ready)
	t := &table{nodes: map[uint16]*node{}, tags: tags}
	for _, tag := range tags {
		t.nodes[tag] = &node{tag: tag}
	}
	r.table.Store(t)
	return r
}

func handleOf(tb testing.TB, node uint16) string {
	tb.Helper()
	codec, err := handle.NewCodec(handle.Config{Key: []byte("client-tests-key-0123456789abcdef"), Node: node})
	if err != nil {
		tb.Fatal(err)
	}
	_, h := codec.New(handle.Object)
	return h
}

func TestRouteAllocatesNothing(t *testing.T) {
	r := routerOf(1, 2, 3)
	h := handleOf(t, 2)
	ctx := context.Background()
	if n := testing.AllocsPerRun(1000, func() {
		if n, err := r.route(ctx, h); err != nil || n.tag != 2 {
			t.Fatalf("route = %v, %v", n, err)
		}
	}); n != 0 {
		t.Fatalf("route allocates %v times, want 0", n)
	}
}

// BenchmarkRoute is what routing adds to a call of a cluster's client:
// reading the handle's node tag and finding its node in the table.
func BenchmarkRoute(b *testing.B) {
	r := routerOf(1, 2, 3)
	h := handleOf(b, 2)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.route(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlace is what placing a Put adds to it.
func BenchmarkPlace(b *testing.B) {
	r := routerOf(1, 2, 3)
	t := r.table.Load()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := t.place(r, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAListReplacesTheTableAndKeepsUnchangedNodes(t *testing.T) {
	r := &router{name: "c", ready: make(chan struct{}), opts: options{noTrace: true}}
	r.table.Store(&table{nodes: map[uint16]*node{}})
	t.Cleanup(func() {
		for _, n := range r.table.Load().nodes {
			_ = n.c.Close()
		}
	})
	add := func(tag uint16, addr string, epoch uint64) *endpoints.Update {
		return &endpoints.Update{Op: endpoints.Add, Key: cluster.NodeKey("c", tag),
			Endpoint: cluster.Member{Node: tag, Epoch: epoch}.Endpoint(addr)}
	}
	r.apply([]*endpoints.Update{add(1, "127.0.0.1:1", 1), add(2, "127.0.0.1:2", 1), add(3, "127.0.0.1:3", 1)}, true)
	before := r.table.Load()
	if !slices.Equal(before.tags, []uint16{1, 2, 3}) {
		t.Fatalf("tags = %v", before.tags)
	}
	for _, tc := range []struct {
		name string
		ups  []*endpoints.Update
		list bool
		tags []uint16
		same []uint16 // nodes kept as they were, connection and all
	}{
		{"a delete removes one node", []*endpoints.Update{{Op: endpoints.Delete, Key: cluster.NodeKey("c", 2)}}, false, []uint16{1, 3}, []uint16{1, 3}},
		{"a list drops what it lacks", []*endpoints.Update{add(1, "127.0.0.1:1", 1)}, true, []uint16{1}, []uint16{1}},
		{"another epoch is another node", []*endpoints.Update{add(1, "127.0.0.1:1", 2)}, false, []uint16{1}, nil},
		{"metadata of another tag is ignored", []*endpoints.Update{{Op: endpoints.Add, Key: cluster.NodeKey("c", 5),
			Endpoint: cluster.Member{Node: 6}.Endpoint("127.0.0.1:6")}}, false, []uint16{1}, []uint16{1}},
		{"a key without a tag is ignored", []*endpoints.Update{{Op: endpoints.Add, Key: "registry/c/nodes/x",
			Endpoint: cluster.Member{Node: 7}.Endpoint("127.0.0.1:7")}}, false, []uint16{1}, []uint16{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := r.table.Load()
			r.apply(tc.ups, tc.list)
			now := r.table.Load()
			if !slices.Equal(now.tags, tc.tags) || len(now.nodes) != len(tc.tags) {
				t.Fatalf("tags = %v (%d nodes), want %v", now.tags, len(now.nodes), tc.tags)
			}
			for _, tag := range tc.same {
				if now.nodes[tag] != old.nodes[tag] {
					t.Errorf("node %d was replaced", tag)
				}
			}
			for tag, n := range old.nodes {
				if now.nodes[tag] != n && n.c.conn.GetState() != connectivity.Shutdown {
					t.Errorf("node %d left or was replaced with its connection open", tag)
				}
			}
		})
	}
}

// BenchmarkByNode is what splitting a batch of a thousand handles over
// three nodes adds to a ResolveMany or a Pin, per batch.
func BenchmarkByNode(b *testing.B) {
	r := routerOf(1, 2, 3)
	handles := make([]string, 1000)
	for i := range handles {
		handles[i] = handleOf(b, uint16(1+i%3))
	}
	ctx := context.Background()
	fail := func(int, error) { b.Fatal("a handle failed") }
	each := func(context.Context, *node, []int) error { return nil }
	b.ReportAllocs()
	for b.Loop() {
		if err := r.byNode(ctx, handles, fail, each); err != nil {
			b.Fatal(err)
		}
	}
}
