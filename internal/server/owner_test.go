package server

import (
	"context"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// callerCtx is asIdentity's, or for "" a context with no identity: the
// caller is then auth.Anonymous, as with authentication off.
func callerCtx(t testing.TB, who string) context.Context {
	if who == "" {
		return ctxT(t)
	}
	return asIdentity(t, who)
}

// ownerLimits leave room for everything but the limits per identity: two
// leases and 32 strongly held bytes each.
func ownerLimits() *Limits {
	l := testLimits
	l.MaxLeasesPerIdentity = 2
	l.MaxPinnedBytesPerIdentity = 32
	l.MaxLinger = time.Minute
	return &l
}

// errorInfoOf returns err's ErrorInfo metadata.
func errorInfoOf(err error) map[string]string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetMetadata()
		}
	}
	return nil
}

// TestAnotherIdentitysLeaseIsRefusedAndNothingChanges: bob may not
// resume, Put into, Resolve, Download or Upload with alice's lease, which
// holds pins: each is PERMISSION_DENIED LEASE_NOT_OWNED naming the lease,
// and nothing anyone can observe changed; alice's lease still works.
func TestAnotherIdentitysLeaseIsRefusedAndNothingChanges(t *testing.T) {
	w := newWorldWith(t, envOptions{limits: ownerLimits()})
	alice := w.e.openLeaseCtx(t, asIdentity(t, "alice"), "alice's", time.Minute)
	mine := w.e.put(t, "alice's first", "")
	if _, err := w.e.rs.Put(asIdentity(t, "alice"), &registryv1.PutRequest{Data: []byte("alice's"), LeaseId: alice.id}); err != nil {
		t.Fatal(err)
	}
	if r := alice.pin(mine); r[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_PINNED {
		t.Fatalf("alice's pin: %v", r[0])
	}
	ten := []byte("0123456789")
	calls := map[string]func() error{
		"Lease resume": func() error {
			_, err := w.e.leaseStreamCtx(t, asIdentity(t, "bob")).try(openReq(alice.id))
			return err
		},
		"Put": func() error {
			_, err := w.e.rs.Put(asIdentity(t, "bob"), &registryv1.PutRequest{Data: ten, LeaseId: alice.id})
			return err
		},
		"Resolve": func() error {
			_, err := w.e.rs.Resolve(asIdentity(t, "bob"), &registryv1.ResolveRequest{Handle: w.weak, LeaseId: alice.id})
			return err
		},
		"Resolve of a handle alice pins": func() error {
			_, err := w.e.rs.Resolve(asIdentity(t, "bob"), &registryv1.ResolveRequest{Handle: mine, LeaseId: alice.id})
			return err
		},
		"Download": func() error {
			return firstEventErr(w.e.rs.Download(asIdentity(t, "bob"), &registryv1.DownloadRequest{Handle: w.weak, LeaseId: alice.id}))
		},
		"Upload": func() error {
			_, err := w.e.uploadMsgs(asIdentity(t, "bob"), chunked(&registryv1.UploadHeader{LeaseId: alice.id}, ten, 4)...)
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			before := w.snapshot(t)
			err := call()
			wantStatus(t, err, codes.PermissionDenied, ReasonLeaseNotOwned)
			if md := errorInfoOf(err); md["lease_id"] != alice.id {
				t.Errorf("metadata %v, want lease_id %s", md, alice.id)
			}
			if after := w.snapshot(t); after != before {
				t.Errorf("a refused call changed the registry:\nbefore %s\nafter  %s", before, after)
			}
			if r := alice.pin(mine); r[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_ALREADY_PINNED {
				t.Errorf("alice's lease after bob's call: pin answered %v", r[0])
			}
			w.checkBystander(t)
		})
	}
}

// TestAdminMayUseAnotherIdentitysLease: an admin may resume and put into
// a client's lease; the object is the admin's, the lease stays alice's.
func TestAdminMayUseAnotherIdentitysLease(t *testing.T) {
	e := newEnvWith(t, envOptions{limits: ownerLimits()})
	alice := e.openLeaseCtx(t, asIdentity(t, "alice"), "alice's", time.Minute)
	root := asIdentity(t, "root:admin")
	resp, err := e.rs.Put(root, &registryv1.PutRequest{Data: []byte("the admin's"), LeaseId: alice.id})
	if err != nil {
		t.Fatalf("admin Put into alice's lease: %v", err)
	}
	in, err := e.admin.InspectObject(ctxT(t), &registryv1.InspectObjectRequest{Handle: resp.GetHandle()})
	if err != nil {
		t.Fatal(err)
	}
	if in.GetOwner() != "root" || len(in.GetPins()) != 1 || in.GetPins()[0].GetIdentity() != "alice" {
		t.Fatalf("inspect: owner %q, pins %v; want owner root, pinned by alice's lease", in.GetOwner(), in.GetPins())
	}
	if r := e.leaseStreamCtx(t, root).send(openReq(alice.id)); r.GetOpened().GetLeaseId() != alice.id {
		t.Fatalf("admin resume: %v", r)
	}
}

// TestOwnersAreShown: InspectObject names who put an object and which
// identity's lease pins it; ListLeases names each lease's owner; an
// object put with authentication off is anonymous's.
func TestOwnersAreShown(t *testing.T) {
	e := newEnvWith(t, envOptions{limits: ownerLimits()})
	alice := e.openLeaseCtx(t, asIdentity(t, "alice"), "alice's", 0)
	resp, err := e.rs.Put(asIdentity(t, "alice"), &registryv1.PutRequest{Data: []byte("alice's"), LeaseId: alice.id})
	if err != nil {
		t.Fatal(err)
	}
	bobs, err := e.rs.Put(asIdentity(t, "bob"), &registryv1.PutRequest{Data: []byte("bob's")})
	if err != nil {
		t.Fatal(err)
	}
	anon := e.put(t, "nobody's in particular", "")
	for h, want := range map[string]string{resp.GetHandle(): "alice", bobs.GetHandle(): "bob", anon: "anonymous"} {
		in, err := e.admin.InspectObject(ctxT(t), &registryv1.InspectObjectRequest{Handle: h})
		if err != nil {
			t.Fatal(err)
		}
		if in.GetOwner() != want {
			t.Errorf("owner %q, want %q", in.GetOwner(), want)
		}
	}
	in, _ := e.admin.InspectObject(ctxT(t), &registryv1.InspectObjectRequest{Handle: resp.GetHandle()})
	if len(in.GetPins()) != 1 || in.GetPins()[0].GetIdentity() != "alice" {
		t.Errorf("pins %v, want one of alice's lease", in.GetPins())
	}
	ls, err := e.admin.ListLeases(ctxT(t), &registryv1.ListLeasesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.GetLeases()) != 1 || ls.GetLeases()[0].GetIdentity() != "alice" {
		t.Errorf("leases %v, want alice's", ls.GetLeases())
	}
}

// TestLingeringBytesAreRefusedByTheGlobalLimit: a Put with a linger and no
// lease holds its bytes strongly, so PINNED_BYTES_LIMIT refuses it past
// the limit, and the stats count it as used.
func TestLingeringBytesAreRefusedByTheGlobalLimit(t *testing.T) {
	l := ownerLimits()
	l.MaxPinnedBytes = 100
	l.MaxPinnedBytesPerIdentity = 0
	w := newWorldWith(t, envOptions{limits: l}) // the bystander pins 21
	if _, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: make([]byte, 79), Linger: durationpb.New(time.Minute)}); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	before := w.snapshot(t)
	_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("x"), Linger: durationpb.New(time.Minute)})
	wantStatus(t, err, codes.ResourceExhausted, ReasonPinnedBytesLimit)
	if after := w.snapshot(t); after != before {
		t.Errorf("the refusal changed the registry:\nbefore %s\nafter  %s", before, after)
	}
	st, err := w.e.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, lim := range st.GetLimits() {
		if lim.GetName() == ReasonPinnedBytesLimit && lim.GetUsed() != 100 {
			t.Errorf("PINNED_BYTES_LIMIT used %d, want 100 (21 pinned, 79 lingering)", lim.GetUsed())
		}
	}
	// A Put with no linger and no lease is WEAK: not counted, never refused.
	if _, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("x")}); err != nil {
		t.Errorf("a weak Put: %v", err)
	}
}
