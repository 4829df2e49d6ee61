package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/bufpool"
)

// The batched modes count objects, not calls: batch-resolve resolves
// -batch objects per BatchResolve call, the figure to compare with
// redis-benchmark -P (pipelined GETs); batch-pin pins -batch objects on a
// lease stream with the Go client's Lease.Pin, then unpins them, and
// counts both. Their line adds batch=N; n= counts calls.
//
//	registrybench -mode batch-resolve -addr 127.0.0.1:7600 -c 64 -size 100 -batch 100
//	registrybench -mode batch-pin -addr 127.0.0.1:7600 -c 16 -batch 1000

// batchModes are the modes batch.go runs.
var batchModes = map[string]bool{"batch-resolve": true, "batch-pin": true}

// runBatch drives mode with conc callers of batch objects a call for dur,
// and prints its line.
func runBatch(mode, addr string, payload []byte, conc, batch int, dur time.Duration) error {
	if batch < 1 || batch > 1000 {
		return errors.New("-batch must be within 1-1000, the handles one request may carry")
	}
	// As the Go client dials: buffers not cleared before they are filled
	// (see internal/bufpool), or each side clears 1 MiB per call.
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(bufpool.Codec{})), experimental.WithBufferPool(bufpool.Default))
	if err != nil {
		return err
	}
	defer cc.Close()
	call, perCall, cleanup, err := setupBatch(mode, addr, cc, payload, conc, batch)
	if err != nil {
		return err
	}
	defer cleanup()
	lat, elapsed, err := drive(call, conc, dur)
	if err != nil {
		return err
	}
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	fmt.Printf("%s c=%d size=%d ops/s=%.0f p50=%v p99=%v n=%d batch=%d\n", mode, conc, len(payload),
		float64(len(lat)*perCall)/elapsed.Seconds(), pct(0.5), pct(0.99), len(lat), batch)
	return nil
}

// setupBatch puts batch objects pinned for the run and returns the call
// to repeat, and how many objects one call counts.
func setupBatch(mode, addr string, cc *grpc.ClientConn, payload []byte, conc, batch int) (caller, int, func(), error) {
	ctx := context.Background()
	rs := registryv1.NewRegistryServiceClient(cc)
	keeper, err := openLease(ctx, rs, "registrybench keeper")
	if err != nil {
		return nil, 0, nil, err
	}
	hs := make([]string, batch)
	for i := range hs {
		put, err := rs.Put(ctx, &registryv1.PutRequest{Data: payload, LeaseId: keeper.id})
		if err != nil {
			return nil, 0, nil, err
		}
		hs[i] = put.GetHandle()
	}
	if mode == "batch-resolve" {
		req := &registryv1.BatchResolveRequest{Handles: hs}
		return func(ctx context.Context, _ int) error {
			resp, err := rs.BatchResolve(ctx, req)
			if err != nil {
				return err
			}
			for _, r := range resp.GetResults() {
				if r.GetError() != nil {
					return fmt.Errorf("BatchResolve: %s", r.GetError().GetReason())
				}
			}
			return nil
		}, batch, func() {}, nil
	}
	// batch-pin: through the Go client, whose Lease.Pin is what
	// applications call; one lease per worker.
	c, err := client.Dial(addr, client.WithoutTracing())
	if err != nil {
		return nil, 0, nil, err
	}
	leases := make([]*client.Lease, conc)
	for i := range leases {
		if leases[i], err = c.Lease(ctx, client.LeaseName(fmt.Sprint("registrybench ", i))); err != nil {
			c.Close()
			return nil, 0, nil, err
		}
	}
	return func(ctx context.Context, w int) error {
		if _, err := leases[w].Pin(ctx, hs...); err != nil {
			return err
		}
		_, err := leases[w].Unpin(ctx, hs...)
		return err
	}, 2 * batch, func() { c.Close() }, nil
}
