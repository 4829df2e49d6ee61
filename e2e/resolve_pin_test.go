package e2e

import (
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	regclient "github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// TestClientLeaseResolvePins: Lease.Resolve on a WEAK object returns its
// bytes and leaves it pinned by the lease (inspect lists the lease), for
// an object small enough for one Resolve and for one that comes by
// Download; on a collected object it returns ErrCollected and the lease
// pins nothing.
func TestClientLeaseResolvePins(t *testing.T) {
	t.Parallel()
	// The soft cache keeps the WEAK objects alive until the lease pins
	// them; a small message limit (256 KiB, less registryd's 64 KiB for
	// the other fields) sends the large one by Download.
	d := startDaemon(t, "--soft-cache-bytes", "1MiB", "--max-message-bytes", "256KiB")
	admin := dial(t, d.Addr)
	c := dialClient(t, d.Addr)
	ctx := testCtx(t)

	// Two objects, WEAK and held by the soft cache only.
	producer := openClientLease(t, ctx, c, regclient.LeaseName("e2e-resolve-producer"))
	objects := map[string][]byte{}
	var handles []string
	for _, n := range []int{1024, 200 << 10} {
		data := randomBytes(n)
		info, err := c.Put(ctx, data, regclient.PinnedBy(producer))
		if err != nil {
			t.Fatalf("Put of %d bytes: %v", n, err)
		}
		if got := wantClientResolves(t, ctx, c, info.Handle, data); !got.SoftCached {
			t.Fatalf("Resolve info = %+v, want soft-cached", got)
		}
		objects[info.Handle] = data
		handles = append(handles, info.Handle)
	}
	slices.Sort(handles)
	if n, err := producer.Close(ctx); err != nil || n != len(objects) {
		t.Fatalf("Close = %d, %v; want %d released", n, err, len(objects))
	}
	for h := range objects {
		wantStat(t, admin, h, registryv1.ObjectState_OBJECT_STATE_WEAK, 0)
	}

	l := openClientLease(t, ctx, c, regclient.LeaseName("e2e-resolve-pin"))
	// Asked of Resolve, with the lease, the large one is an error, and
	// an error pins nothing: the client falls back to Download, which
	// pins it.
	for h, data := range objects {
		if len(data) < 200<<10 {
			continue
		}
		_, err := admin.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: h, LeaseId: l.ID()})
		wantStatus(t, err, codes.ResourceExhausted, "MESSAGE_TOO_LARGE")
		if got := pinnedBy(t, admin, l.ID()); len(got) != 0 {
			t.Errorf("Resolve with lease_id answered MESSAGE_TOO_LARGE, yet the lease pins %v", got)
		}
		wantStat(t, admin, h, registryv1.ObjectState_OBJECT_STATE_WEAK, 0)
	}
	for h, data := range objects {
		got, info, err := l.Resolve(ctx, h)
		if err != nil {
			t.Fatalf("Lease.Resolve(%s): %v", h, err)
		}
		if string(got) != string(data) {
			t.Fatalf("Lease.Resolve(%s) returned %d bytes that differ from the %d put", h, len(got), len(data))
		}
		if info.Handle != h || info.State != regclient.StatePinned || info.PinCount != 1 {
			t.Errorf("Lease.Resolve(%s) info = %+v, want pinned once", h, info)
		}
		in, err := admin.admin.InspectObject(rpcCtx(t), &registryv1.InspectObjectRequest{Handle: h})
		if err != nil {
			t.Fatalf("InspectObject(%s): %v", h, err)
		}
		if o, ps := in.GetInfo(), in.GetPins(); o.GetState() != registryv1.ObjectState_OBJECT_STATE_PINNED || len(ps) != 1 ||
			ps[0].GetLeaseId() != l.ID() || ps[0].GetClientName() != "e2e-resolve-pin" {
			t.Errorf("inspect %s after Lease.Resolve = %v; want PINNED by lease %s (e2e-resolve-pin)", h, in, l.ID())
		}
	}
	if got := pinnedBy(t, admin, l.ID()); !slices.Equal(got, handles) {
		t.Fatalf("ListObjects(lease_id) = %v, want %v", got, handles)
	}
	if li := findLease(t, admin, l.ID()); li.GetPinCount() != int32(len(objects)) {
		t.Errorf("lease as listed = %v, want pin_count %d", li, len(objects))
	}
	collect(t, admin)
	for h, data := range objects {
		wantClientResolves(t, ctx, c, h, data)
	}
	// Resolving again pins nothing twice.
	if _, info, err := l.Resolve(ctx, handles[0]); err != nil || info.PinCount != 1 {
		t.Errorf("Lease.Resolve again = %+v, %v; want pinned once", info, err)
	}

	// A collected object: nothing to return, nothing pinned.
	gone, err := c.Put(ctx, randomBytes(1024))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	poll(t, waitTimeout, gone.Handle+" to be collected", func() bool {
		collect(t, admin)
		_, err := admin.reg.Stat(rpcCtx(t), &registryv1.StatRequest{Handle: gone.Handle})
		if err != nil {
			wantStatus(t, err, codes.NotFound, "OBJECT_COLLECTED")
		}
		return err != nil
	})
	empty := openClientLease(t, ctx, c, regclient.LeaseName("e2e-resolve-collected"))
	for _, ll := range []*regclient.Lease{empty, l} {
		got, _, err := ll.Resolve(ctx, gone.Handle)
		wantClientErr(t, err, regclient.ErrCollected, codes.NotFound, "OBJECT_COLLECTED")
		if got != nil {
			t.Errorf("Lease.Resolve of a collected object returned %d bytes", len(got))
		}
	}
	if got := pinnedBy(t, admin, empty.ID()); len(got) != 0 {
		t.Errorf("ListObjects(lease_id) of the lease that resolved a collected object = %v, want none", got)
	}
	if li := findLease(t, admin, empty.ID()); li == nil || li.GetPinCount() != 0 {
		t.Errorf("that lease as listed = %v, want live with pin_count 0", li)
	}
	if got := pinnedBy(t, admin, l.ID()); !slices.Equal(got, handles) {
		t.Errorf("ListObjects(lease_id) = %v after a failed Lease.Resolve, want still %v", got, handles)
	}
}
