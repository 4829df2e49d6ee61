package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/weakref/registry/client"
)

func TestLeaseResolvePinsOrPinsNothing(t *testing.T) {
	s := newServer(t, 0)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	keep := keeper(t, c)
	info, err := c.Put(ctx, []byte("shared"), client.PinnedBy(keep))
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	data, got, err := l.Resolve(ctx, info.Handle)
	if err != nil || string(data) != "shared" || got.PinCount != 2 {
		t.Fatalf("Lease.Resolve = %q, %+v, %v", data, got, err)
	}
	gone, err := c.Put(ctx, []byte("gone"))
	if err != nil {
		t.Fatal(err)
	}
	s.collect(t)
	if _, _, err := l.Resolve(ctx, gone.Handle); !errors.Is(err, client.ErrCollected) {
		t.Fatalf("Lease.Resolve of a collected object: %v", err)
	}
	if n, err := l.Close(ctx); err != nil || n != 1 {
		t.Fatalf("Close released %d, %v; want only the resolved object's pin", n, err)
	}
}

func TestHandoffKeepsObjectsForTheNextHolder(t *testing.T) {
	s := newServer(t, 0) // MaxLinger: a minute
	c := dial(t, s.addr)
	ctx := ctxT(t)
	producer, err := c.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := c.Put(ctx, []byte("a"), client.PinnedBy(producer))
	b, _ := c.Put(ctx, []byte("b"), client.PinnedBy(producer))
	rs, err := producer.UnpinWithHandoff(ctx, 30*time.Second, a.Handle)
	if err != nil || rs[0].Info.State != client.StateLingering || rs[0].Info.LingerUntil.IsZero() {
		t.Fatalf("UnpinWithHandoff = %+v, %v", rs, err)
	}
	if n, err := producer.CloseWithHandoff(ctx, 30*time.Second); err != nil || n != 1 {
		t.Fatalf("CloseWithHandoff = %d, %v", n, err)
	}
	s.collect(t)
	consumer, err := c.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close(ctx)
	for _, h := range []string{a.Handle, b.Handle} {
		if _, info, err := consumer.Resolve(ctx, h); err != nil || info.State != client.StatePinned {
			t.Fatalf("after the hand-off and a collection, %s: %+v, %v", h, info, err)
		}
	}
}
