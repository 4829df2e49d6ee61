package client_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/weakref/registry/client"
)

// putMany puts n objects pinned by keep, of size bytes each, every one
// different, and returns their handles and bytes.
func putMany(t *testing.T, c *client.Client, keep *client.Lease, n, size int) ([]string, [][]byte) {
	t.Helper()
	hs, data := make([]string, n), make([][]byte, n)
	for i := range n {
		data[i] = bytes.Repeat([]byte(fmt.Sprintf("%07d", i)), size/7+1)[:size]
		info, err := c.Put(ctxT(t), data[i], client.PinnedBy(keep))
		if err != nil {
			t.Fatal(err)
		}
		hs[i] = info.Handle
	}
	return hs, data
}

func TestResolveManyAnswersEachHandleInOrder(t *testing.T) {
	s := newServer(t, time.Minute)
	c := dial(t, s.addr)
	keep := keeper(t, c)
	// 2500 handles: three calls of at most a thousand, merged in order.
	hs, data := putMany(t, c, keep, 2497, 100)
	collected, err := c.Put(ctxT(t), []byte("soon gone"))
	if err != nil {
		t.Fatal(err)
	}
	s.collect(t)
	hs = append(hs, collected.Handle, "obj_nope", hs[0])
	data = append(data, nil, nil, data[0])
	got, err := c.ResolveMany(ctxT(t), hs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(hs) {
		t.Fatalf("%d answers for %d handles", len(got), len(hs))
	}
	for i, r := range got {
		switch {
		case data[i] != nil && (r.Err != nil || !bytes.Equal(r.Data, data[i])):
			t.Fatalf("handle %d: %q, %v", i, r.Data, r.Err)
		case data[i] != nil && r.Info.Handle != "":
			t.Fatalf("handle %d: info %+v, not asked for", i, r.Info)
		}
	}
	if !errors.Is(got[2497].Err, client.ErrCollected) || !errors.Is(got[2498].Err, client.ErrMalformedHandle) {
		t.Fatalf("collected: %v; malformed: %v", got[2497].Err, got[2498].Err)
	}
	withInfo, err := c.ResolveMany(ctxT(t), hs[:3], client.WithInfo())
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range withInfo {
		if r.Info.Handle != hs[i] || r.Info.Size != 100 || r.Info.State != client.StatePinned {
			t.Fatalf("with info, handle %d: %+v", i, r.Info)
		}
	}
	stats, err := c.StatMany(ctxT(t), hs)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range stats {
		if data[i] != nil && (st.Err != nil || st.Info.Handle != hs[i]) {
			t.Fatalf("stat %d: %+v", i, st)
		}
	}
	if !errors.Is(stats[2497].Err, client.ErrCollected) {
		t.Fatalf("stat of the collected: %v", stats[2497].Err)
	}
	if none, err := c.ResolveMany(ctxT(t), nil); err != nil || len(none) != 0 {
		t.Fatalf("no handles: %v, %v", none, err)
	}
}

// TestResolveManyFetchesWhatOneAnswerCannotCarry resolves objects that
// do not fit one answer together, and one that fits no message: each is
// answered with its bytes all the same.
func TestResolveManyFetchesWhatOneAnswerCannotCarry(t *testing.T) {
	s := newServerWithLimits(t, 256<<10)
	c := dial(t, s.addr)
	keep := keeper(t, c)
	hs, data := putMany(t, c, keep, 12, 100<<10) // 1.2 MB: several answers
	big, bigData := putMany(t, c, keep, 1, 300<<10)
	hs, data = append(hs, big...), append(data, bigData...)
	l, err := c.Lease(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctxT(t))
	got, err := l.ResolveMany(ctxT(t), hs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range got {
		if r.Err != nil || !bytes.Equal(r.Data, data[i]) {
			t.Fatalf("handle %d: %d bytes, %v", i, len(r.Data), r.Err)
		}
	}
	stats, err := c.StatMany(ctxT(t), hs)
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range stats {
		if st.Err != nil || st.Info.PinCount != 2 {
			t.Fatalf("handle %d: %+v; want it pinned by the keeper and the lease", i, st)
		}
	}
}

// TestLeasePinManyHandles pins more handles than one request carries.
func TestLeasePinManyHandles(t *testing.T) {
	s := newServer(t, time.Minute)
	c := dial(t, s.addr)
	keep := keeper(t, c)
	hs, _ := putMany(t, c, keep, 1500, 10)
	l, err := c.Lease(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctxT(t))
	rs, err := l.Pin(ctxT(t), append(hs, "obj_nope")...)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs[:len(hs)] {
		if r.Outcome != client.OutcomePinned || r.Handle != hs[i] {
			t.Fatalf("pin %d: %+v", i, r)
		}
	}
	if last := rs[len(hs)]; last.Outcome != client.OutcomeFailed || !errors.Is(last.Err, client.ErrMalformedHandle) {
		t.Fatalf("the malformed one: %+v", last)
	}
}
