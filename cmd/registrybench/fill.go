package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// fill puts n objects of payload from conc callers, every one pinned by
// one lease held for the whole run (registryd needs
// --max-pins-per-lease=0 and a --max-pinned-bytes above n objects), and
// returns their handles. It says on stderr how long it took: the figure
// of memory per object is read from the server once it is done.
func fill(ctx context.Context, rs registryv1.RegistryServiceClient, payload []byte, n, conc int) ([]string, error) {
	keeper, err := openLease(ctx, rs, "registrybench fill")
	if err != nil {
		return nil, err
	}
	handles := make([]string, n)
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for failed.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				put, err := rs.Put(ctx, &registryv1.PutRequest{Data: payload, LeaseId: keeper.id})
				if err != nil {
					failed.Store(&err)
					return
				}
				handles[i] = put.GetHandle()
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return nil, fmt.Errorf("fill: %w", *err)
	}
	fmt.Fprintf(os.Stderr, "filled %d objects of %d bytes in %v\n", n, len(payload), time.Since(start).Round(time.Millisecond))
	return handles, nil
}

// resolveAny returns a call that resolves one of handles at random.
func resolveAny(rs registryv1.RegistryServiceClient, handles []string, conc int) caller {
	rngs := make([]*rand.Rand, conc)
	for w := range rngs {
		rngs[w] = rand.New(rand.NewPCG(uint64(w), 1)) //nolint:gosec // which object to resolve next needs no unpredictability
	}
	return func(ctx context.Context, w int) error {
		h := handles[rngs[w].IntN(len(handles))]
		_, err := rs.Resolve(ctx, &registryv1.ResolveRequest{Handle: h})
		return err
	}
}
