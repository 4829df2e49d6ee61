package server

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

func TestResolveWithALeasePinsAsOneStep(t *testing.T) {
	e := newEnvWith(t, envOptions{limits: transferLimits()})
	keeper := e.openLease(t, "keeper", 0)
	h := e.put(t, "shared bytes", keeper.id)
	lc := e.openLease(t, "consumer", 0)

	resp, err := e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: h, LeaseId: lc.id})
	if err != nil || !bytes.Equal(resp.GetData(), []byte("shared bytes")) || resp.GetInfo().GetPinCount() != 2 {
		t.Fatalf("Resolve with a lease = %v, %v", resp, err)
	}
	in, err := e.admin.InspectObject(ctxT(t), &registryv1.InspectObjectRequest{Handle: h})
	if err != nil || len(in.GetPins()) != 2 {
		t.Fatalf("pins after resolve-and-pin: %v, %v", in.GetPins(), err)
	}
	// The keeper goes; the consumer's pin holds it.
	keeper.close()
	if _, err := e.admin.Collect(ctxT(t), &registryv1.CollectRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: h}); err != nil {
		t.Fatalf("object pinned by resolve-and-pin was collected: %v", err)
	}
	// Download pins too.
	lc2 := e.openLease(t, "downloader", 0)
	stream, err := e.rs.Download(ctxT(t), &registryv1.DownloadRequest{Handle: h, LeaseId: lc2.id})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := stream.Recv(); err != nil || first.GetInfo().GetPinCount() != 2 {
		t.Fatalf("download with a lease: %v, %v", first, err)
	}
}

func TestResolveWithABadLeaseChangesNothing(t *testing.T) {
	e := newEnvWith(t, envOptions{limits: transferLimits()})
	keeper := e.openLease(t, "keeper", 0)
	h := e.put(t, "x", keeper.id)
	gone := e.openLease(t, "gone", 0)
	goneID := gone.id
	gone.close()
	tests := []struct {
		name, lease string
		code        codes.Code
		reason      string
	}{
		{"malformed lease id", "lse_nope", codes.InvalidArgument, ReasonLeaseMalformed},
		{"an object handle as lease id", h, codes.InvalidArgument, ReasonLeaseMalformed},
		{"closed lease", goneID, codes.FailedPrecondition, ReasonLeaseNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: h, LeaseId: tt.lease})
			wantStatus(t, err, tt.code, tt.reason)
			st, err := e.rs.Stat(ctxT(t), &registryv1.StatRequest{Handle: h})
			if err != nil || st.GetInfo().GetPinCount() != 1 {
				t.Fatalf("after a refused resolve-and-pin: %v, %v; want 1 pin", st, err)
			}
		})
	}
}

// TestHandoffIsCappedAndLingers: unpin and close with a hand-off leave the
// object LINGERING for at most the server's MaxLinger.
func TestHandoffIsCappedAndLingers(t *testing.T) {
	e := newEnvWith(t, envOptions{limits: transferLimits()}) // MaxLinger: a minute
	lc := e.openLease(t, "producer", 0)
	a := e.put(t, "a", lc.id)
	b := e.put(t, "b", lc.id)
	resp := lc.send(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Unpin{Unpin: &registryv1.UnpinHandles{
		Handles: []string{a}, Handoff: durationpb.New(time.Hour),
	}}})
	info := resp.GetUnpinned().GetResults()[0].GetInfo()
	if info.GetState() != registryv1.ObjectState_OBJECT_STATE_LINGERING || info.GetLinger() != nil {
		t.Fatalf("after unpin with a hand-off: %v", info)
	}
	until := info.GetLingerUntil().AsTime()
	if d := time.Until(until); d > time.Minute || d < 50*time.Second {
		t.Fatalf("hand-off of an hour lingers %v; want capped at a minute", d)
	}
	closed := lc.send(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Close{Close: &registryv1.CloseLease{Handoff: durationpb.New(30 * time.Second)}}})
	if closed.GetClosed().GetReleased() != 1 {
		t.Fatalf("close released %d, want 1", closed.GetClosed().GetReleased())
	}
	if _, err := e.admin.Collect(ctxT(t), &registryv1.CollectRequest{}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{a, b} {
		st, err := e.rs.Stat(ctxT(t), &registryv1.StatRequest{Handle: h})
		if err != nil || st.GetInfo().GetState() != registryv1.ObjectState_OBJECT_STATE_LINGERING {
			t.Fatalf("%s after a forced collection during its hand-off: %v, %v", h, st, err)
		}
	}
}
