package server

import (
	"bytes"
	"context"
	"testing"

	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// putReasons are the only reasons a Put may fail with.
var putReasons = map[string]bool{
	ReasonPayloadEmpty: true, ReasonLabelsInvalid: true, ReasonLeaseMalformed: true,
	ReasonLeaseNotFound: true, ReasonRestarted: true, ReasonHandleForeignNode: true,
	"OBJECT_TOO_LARGE": true, "PINNED_BYTES_LIMIT": true, "LEASE_PIN_LIMIT": true,
}

// resolveReasons are the only reasons a Resolve of an arbitrary string
// may fail with.
var resolveReasons = map[string]bool{
	ReasonHandleMalformed: true, ReasonHandleUnknown: true, ReasonRestarted: true,
	ReasonHandleForeignNode: true, ReasonCollected: true, ReasonDeleted: true,
}

// FuzzRequestValidation feeds arbitrary Put and Resolve requests to the
// service. Properties: no panic; a failure is a status with one of the
// documented reasons and stores nothing; a success resolves to exactly the
// bytes put.
func FuzzRequestValidation(f *testing.F) {
	codec, err := handle.NewCodec(handle.Config{Key: bytes.Repeat([]byte{1}, 32)})
	if err != nil {
		f.Fatal(err)
	}
	reg := registry.New(registry.Config{Codec: codec, MaxObjectBytes: 64, MaxPinnedBytes: 256})
	leases := lease.New(lease.Config{Codec: codec, Registry: reg, MaxPinsPerLease: 4})
	sess, err := leases.Open(lease.OpenParams{Client: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	svc := &registryService{reg: reg, leases: leases}
	ctx := context.Background()

	_, validHandle := codec.New(handle.Object)
	f.Add([]byte("hello"), "text/plain", "team", "a", "", validHandle)
	f.Add([]byte{}, "", "", "", sess.ID(), "obj_")
	f.Add(bytes.Repeat([]byte{0}, 65), "x", "bad key", "v", "lse_x", "")
	f.Add([]byte("pinned"), "", "k", "\xff", sess.ID(), sess.ID())
	f.Fuzz(func(t *testing.T, data []byte, contentType, key, value, leaseID, h string) {
		req := &registryv1.PutRequest{Data: data, ContentType: contentType, LeaseId: leaseID}
		if key != "" || value != "" {
			req.Labels = map[string]string{key: value}
		}
		puts := reg.Stats().Puts
		resp, err := svc.Put(ctx, req)
		if err != nil {
			if r := reasonOf(status.Convert(err)); !putReasons[r] {
				t.Fatalf("Put(%v) failed with reason %q: %v", req, r, err)
			}
			if got := reg.Stats().Puts; got != puts {
				t.Fatalf("a failed Put stored something: %d puts, was %d", got, puts)
			}
		} else {
			got, err := svc.Resolve(ctx, &registryv1.ResolveRequest{Handle: resp.GetHandle()})
			if err != nil {
				// Unpinned and collected by a GC cycle in between: allowed.
				if r := reasonOf(status.Convert(err)); r != ReasonCollected || leaseID != "" {
					t.Fatalf("Resolve after Put: %v", err)
				}
			} else if !bytes.Equal(got.GetData(), data) {
				t.Fatalf("Resolve returned %q, want %q", got.GetData(), data)
			}
			if leaseID != "" {
				sess.Unpin([]string{resp.GetHandle()}) // stay under the pin limit
			}
		}
		if _, err := svc.Resolve(ctx, &registryv1.ResolveRequest{Handle: h}); err != nil {
			if r := reasonOf(status.Convert(err)); !resolveReasons[r] {
				t.Fatalf("Resolve(%q) failed with reason %q: %v", h, r, err)
			}
		}
	})
}
