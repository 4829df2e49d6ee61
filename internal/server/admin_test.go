package server

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// TestListObjectsPagesAndFilters pages through objects over gRPC: each
// object once, filters by state, label and lease.
func TestListObjectsPagesAndFilters(t *testing.T) {
	e := newEnv(t, nil)
	lc := e.openLease(t, "lister", 0)
	want := map[string]bool{}
	pinned := map[string]bool{}
	for i := range 25 {
		req := &registryv1.PutRequest{Data: []byte(fmt.Sprint("object ", i)), Labels: map[string]string{"parity": fmt.Sprint(i % 2)}}
		if i%5 == 0 {
			req.LeaseId = lc.id
		}
		resp, err := e.rs.Put(ctxT(t), req)
		if err != nil {
			t.Fatal(err)
		}
		want[resp.GetHandle()] = true
		if i%5 == 0 {
			pinned[resp.GetHandle()] = true
		}
	}
	list := func(req *registryv1.ListObjectsRequest) map[string]bool {
		t.Helper()
		got := map[string]bool{}
		for pages := 0; ; pages++ {
			if pages > 100 {
				t.Fatal("paging did not end")
			}
			resp, err := e.admin.ListObjects(ctxT(t), req)
			if err != nil {
				t.Fatal(err)
			}
			if int32(len(resp.GetObjects())) > req.GetPageSize() {
				t.Fatalf("page of %d objects, asked for %d", len(resp.GetObjects()), req.GetPageSize())
			}
			for _, o := range resp.GetObjects() {
				if got[o.GetHandle()] {
					t.Fatalf("%s listed twice", o.GetHandle())
				}
				got[o.GetHandle()] = true
			}
			if resp.GetNextPageToken() == "" {
				return got
			}
			req.PageToken = resp.GetNextPageToken()
		}
	}
	// Objects put without a lease may be collected by any GC cycle, so
	// only the pinned ones are certain; the rest must be a subset.
	all := list(&registryv1.ListObjectsRequest{PageSize: 4})
	for h := range pinned {
		if !all[h] {
			t.Errorf("pinned object %s missing from the listing", h)
		}
	}
	for h := range all {
		if !want[h] {
			t.Errorf("listed %s, which was never put", h)
		}
	}
	if got := list(&registryv1.ListObjectsRequest{PageSize: 3, State: registryv1.ObjectState_OBJECT_STATE_PINNED}); len(got) != len(pinned) {
		t.Errorf("PINNED filter listed %d objects, want %d", len(got), len(pinned))
	}
	if got := list(&registryv1.ListObjectsRequest{PageSize: 3, LeaseId: lc.id}); len(got) != len(pinned) {
		t.Errorf("lease filter listed %d objects, want %d", len(got), len(pinned))
	}
	// Pinned objects are those with i%5 == 0: i = 0, 10, 20 have parity 0.
	if got := list(&registryv1.ListObjectsRequest{PageSize: 2, State: registryv1.ObjectState_OBJECT_STATE_PINNED,
		Labels: map[string]string{"parity": "0"}}); len(got) != 3 {
		t.Errorf("PINNED with parity=0 listed %d objects, want 3", len(got))
	}
}

// TestInspectNamesWhoPins: inspect lists each lease that pins, with its
// client name.
func TestInspectNamesWhoPins(t *testing.T) {
	e := newEnv(t, nil)
	a := e.openLease(t, "alice", 0)
	b := e.openLease(t, "bob", 0)
	h := e.put(t, "shared", a.id)
	b.pin(h)
	resp, err := e.admin.InspectObject(ctxT(t), &registryv1.InspectObjectRequest{Handle: h})
	if err != nil {
		t.Fatal(err)
	}
	pins := resp.GetPins()
	if len(pins) != 2 || pins[0].GetLeaseId() != a.id || pins[0].GetClientName() != "alice" ||
		pins[1].GetLeaseId() != b.id || pins[1].GetClientName() != "bob" {
		t.Fatalf("pins = %v, want alice's then bob's", pins)
	}
	if resp.GetInfo().GetPinCount() != 2 || resp.GetInfo().GetState() != registryv1.ObjectState_OBJECT_STATE_PINNED {
		t.Fatalf("info = %v", resp.GetInfo())
	}
}

// TestListLeasesAndStats: leases are listed with client, pins and grace;
// stats count objects, bytes, leases and pins exactly.
func TestListLeasesAndStats(t *testing.T) {
	e := newEnv(t, nil)
	lc := e.openLease(t, "stats", 30*time.Second)
	e.put(t, "12345", lc.id)
	e.put(t, "123", lc.id)
	leases, err := e.admin.ListLeases(ctxT(t), &registryv1.ListLeasesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.GetLeases()) != 1 {
		t.Fatalf("leases = %v", leases)
	}
	l := leases.GetLeases()[0]
	if l.GetLeaseId() != lc.id || l.GetClientName() != "stats" || l.GetPinCount() != 2 || !l.GetAttached() ||
		l.GetGrace().AsDuration() != 30*time.Second || l.GetPeer() == "" || l.GetOpenTime() == nil {
		t.Fatalf("lease = %v", l)
	}
	st, err := e.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetObjects().GetPinned() != 2 || st.GetBytes().GetPinned() != 8 || st.GetPins() != 2 ||
		st.GetLeasesAttached() != 1 || st.GetPuts() != 2 || st.GetEpoch() != e.codec.Epoch() {
		t.Fatalf("stats = %v", st)
	}
	limits := map[string]*registryv1.Limit{}
	for _, l := range st.GetLimits() {
		limits[l.GetName()] = l
	}
	if l := limits["PINNED_BYTES_LIMIT"]; l.GetMax() != testLimits.MaxPinnedBytes || l.GetUsed() != 8 {
		t.Fatalf("PINNED_BYTES_LIMIT = %v", l)
	}
	if l := limits["LEASE_LIMIT"]; l.GetMax() != int64(testLimits.MaxLeases) || l.GetUsed() != 1 {
		t.Fatalf("LEASE_LIMIT = %v", l)
	}
}

// TestWatchEventsFiltersKinds: the admin stream sends only the kinds asked
// for, in sequence order.
func TestWatchEventsFiltersKinds(t *testing.T) {
	e := newEnv(t, nil)
	stream, err := e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{
		Kinds: []registryv1.EventKind{registryv1.EventKind_EVENT_KIND_PINNED, registryv1.EventKind_EVENT_KIND_UNPINNED},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The subscription exists once the stream's headers arrive.
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	lc := e.openLease(t, "watched", 0)
	h := e.put(t, "watch me", lc.id)
	lc.unpin(h)
	var last uint64
	for _, want := range []registryv1.EventKind{registryv1.EventKind_EVENT_KIND_PINNED, registryv1.EventKind_EVENT_KIND_UNPINNED} {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		ev := resp.GetEvent()
		if ev.GetKind() != want || ev.GetHandle() != h || ev.GetLeaseId() != lc.id || ev.GetSequence() <= last {
			t.Fatalf("event = %v, want %v of %s after sequence %d", ev, want, h, last)
		}
		last = ev.GetSequence()
	}
}

// TestDeleteForceTellsWhichLeasesLostTheirPin: a forced delete lists the
// leases that pinned the object, and their pin counts drop.
func TestDeleteForceTellsWhichLeasesLostTheirPin(t *testing.T) {
	e := newEnv(t, nil)
	lc := e.openLease(t, "holder", 0)
	h := e.put(t, "doomed", lc.id)
	resp, err := e.admin.DeleteObject(ctxT(t), &registryv1.DeleteObjectRequest{Handle: h, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if ids := resp.GetReleasedLeaseIds(); len(ids) != 1 || ids[0] != lc.id {
		t.Fatalf("released lease ids = %v, want [%s]", ids, lc.id)
	}
	_, err = e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: h})
	wantStatus(t, err, codes.NotFound, ReasonDeleted)
	leases, err := e.admin.ListLeases(ctxT(t), &registryv1.ListLeasesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := leases.GetLeases()[0].GetPinCount(); n != 0 {
		t.Fatalf("lease still counts %d pins", n)
	}
}
