package client

import (
	"context"
	"testing"

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
