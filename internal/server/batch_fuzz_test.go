package server

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// batchLeaseReasons are the only reasons a BatchResolve may fail with as
// a whole for its lease_id.
var batchLeaseReasons = map[string]bool{
	ReasonLeaseMalformed: true, ReasonLeaseNotFound: true, ReasonRestarted: true, ReasonHandleForeignNode: true,
}

// FuzzBatchRequestValidation feeds arbitrary batches to BatchResolve and
// BatchStat: list is split at newlines into handles, repeated to count;
// lease picks no lease_id (0), the live lease (1) or leaseID as given.
// Properties: no panic; the call fails as a whole exactly when the batch
// is empty, over MaxHandlesPerRequest, or names a lease_id that is not a
// live lease, and then pins nothing; otherwise every handle is answered,
// in order, as Resolve and Stat answer it alone, the answer marshals
// (its strings are UTF-8 whatever the request's were) and the lease pins
// exactly the handles answered with bytes.
func FuzzBatchRequestValidation(f *testing.F) {
	codec, err := handle.NewCodec(handle.Config{Key: bytes.Repeat([]byte{3}, 32)})
	if err != nil {
		f.Fatal(err)
	}
	reg := registry.New(registry.Config{Codec: codec, MaxObjectBytes: 64, MaxPinnedBytes: 1 << 20})
	leases := lease.New(lease.Config{Codec: codec, Registry: reg, MaxPinsPerLease: 1000})
	sess, err := leases.Open(lease.OpenParams{Client: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	keeper, err := leases.Open(lease.OpenParams{Client: "keeper"})
	if err != nil {
		f.Fatal(err)
	}
	// An object alone may take 64 bytes; an answer of 48 KiB holds some
	// 150 errors.
	svc := &registryService{reg: reg, leases: leases, limits: Limits{MaxMessageBytes: messageOverhead + 64}}
	ctx := context.Background()
	var live []string
	for _, data := range []string{"one", "two", strings.Repeat("x", 64)} {
		info, err := leases.Put(auth.Anonymous, keeper.ID(), []byte(data), registry.Meta{})
		if err != nil {
			f.Fatal(err)
		}
		live = append(live, info.Handle)
	}
	_, unknown := codec.New(handle.Object)
	all := strings.Join(live, "\n")
	f.Add(all, uint16(1), uint8(0), "", false)
	f.Add(all+"\n"+unknown+"\nobj_\xff", uint16(3), uint8(1), "", true)
	f.Add("", uint16(0), uint8(1), "", false)
	f.Add(live[0], uint16(1001), uint8(1), "", false)
	f.Add(live[2], uint16(40), uint8(1), "", true)   // past the message limit
	f.Add(live[2], uint16(200), uint8(0), "", false) // past what an answer can hold errors for
	f.Add(live[1], uint16(1), uint8(2), "lse_x", false)
	f.Add(live[1], uint16(1), uint8(2), live[0], false)
	f.Fuzz(func(t *testing.T, list string, count uint16, leaseChoice uint8, leaseID string, withInfo bool) {
		var hs []string
		if list != "" || count > 0 {
			parts := strings.Split(list, "\n")
			for len(hs) < int(min(count, MaxHandlesPerRequest+2)) || len(hs) < len(parts) {
				hs = append(hs, parts[len(hs)%len(parts)])
			}
		}
		switch leaseChoice % 3 {
		case 0:
			leaseID = ""
		case 1:
			leaseID = sess.ID()
		}
		pins := sess.Info().Pins
		resp, err := svc.BatchResolve(ctx, &registryv1.BatchResolveRequest{Handles: hs, LeaseId: leaseID, WithInfo: withInfo})
		stats, statErr := svc.BatchStat(ctx, &registryv1.BatchStatRequest{Handles: hs})
		wantWhole := ""
		room, limit := svc.batchRoom()
		switch {
		case len(hs) == 0:
			wantWhole = ReasonRequestEmpty
		case len(hs) > MaxHandlesPerRequest, int64(len(hs)) > room/errorRoom(limit):
			wantWhole = ReasonTooManyHandles
		}
		if wantWhole != "" {
			if r := reasonOf(status.Convert(err)); r != wantWhole || reasonOf(status.Convert(statErr)) != wantWhole {
				t.Fatalf("a batch of %d: %v / %v, want %s", len(hs), err, statErr, wantWhole)
			}
			if sess.Info().Pins != pins {
				t.Fatalf("a batch refused as a whole pinned %d", sess.Info().Pins-pins)
			}
			return
		}
		if statErr != nil {
			t.Fatalf("BatchStat of %d handles: %v", len(hs), statErr)
		}
		if err != nil {
			if r := reasonOf(status.Convert(err)); !batchLeaseReasons[r] || leaseID == sess.ID() || leaseID == "" {
				t.Fatalf("BatchResolve with lease_id %q failed with %q: %v", leaseID, r, err)
			}
			if sess.Info().Pins != pins {
				t.Fatalf("a batch refused as a whole pinned %d", sess.Info().Pins-pins)
			}
			return
		}
		if _, err := proto.Marshal(resp); err != nil {
			t.Fatalf("the answer does not marshal: %v", err)
		}
		if _, err := proto.Marshal(stats); err != nil {
			t.Fatalf("BatchStat's answer does not marshal: %v", err)
		}
		if n := int64(proto.Size(resp)); n > room {
			t.Fatalf("the answer is %d bytes, over the %d it may take", n, room)
		}
		if len(resp.GetResults()) != len(hs) || len(stats.GetResults()) != len(hs) {
			t.Fatalf("%d and %d results for %d handles", len(resp.GetResults()), len(stats.GetResults()), len(hs))
		}
		fresh := map[string]bool{}
		for i, h := range hs {
			r := resp.GetResults()[i]
			single, serr := svc.Resolve(ctx, &registryv1.ResolveRequest{Handle: h})
			switch {
			case r.GetError() == nil && (serr != nil || !bytes.Equal(r.GetData(), single.GetData())):
				t.Fatalf("handle %d %q: the batch answered %q, Resolve %q, %v", i, h, r.GetData(), single.GetData(), serr)
			case r.GetError() != nil && serr == nil:
				if reason := r.GetError().GetReason(); reason != ReasonResponseTooLarge {
					t.Fatalf("handle %d %q: the batch answered %v, Resolve its bytes", i, h, r.GetError())
				}
			case r.GetError() != nil && (r.GetError().GetReason() != reasonOf(status.Convert(serr)) || codes.Code(r.GetError().GetCode()) != status.Code(serr)):
				t.Fatalf("handle %d %q: the batch answered %v, Resolve %v", i, h, r.GetError(), serr)
			}
			if r.GetError() == nil && leaseID == sess.ID() {
				fresh[h] = true
			}
			if s, serr := svc.Stat(ctx, &registryv1.StatRequest{Handle: h}); (serr == nil) != (stats.GetResults()[i].GetError() == nil) ||
				(serr == nil && s.GetInfo().GetHandle() != stats.GetResults()[i].GetInfo().GetHandle()) {
				t.Fatalf("handle %d %q: BatchStat answered %v, Stat %v %v", i, h, stats.GetResults()[i], s, serr)
			}
		}
		if got := sess.Info().Pins; got != pins+len(fresh) {
			t.Fatalf("the lease pins %d after the batch, was %d, and %d handles answered with bytes", got, pins, len(fresh))
		}
		var release []string
		for h := range fresh {
			release = append(release, h)
		}
		sess.Unpin(release, 0) // start each input from no pins
	})
}
