package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// fillWeak puts n objects of payload with conc callers and stops there (or
// at dur, whichever comes first), so that a forced collection of a known
// number of objects can be timed after it. Each caller pins its puts on
// a lease of its own and ends it once all are in, so that they become
// WEAK together at the end: the daemon's own collections during the fill
// take none of them, and it runs with its usual GOGC.
//
//	registrybench -mode fill-weak -n 1000000 -size 100 -c 32
//	registryctl stats; time registryctl gc; registryctl stats
//
// A lease pins at most --max-pins-per-lease objects (100 000 by
// default): -n/-c must stay below it.
func fillWeak(addr string, payload []byte, conc, n int, dur time.Duration) error {
	if n < 1 {
		return errors.New("-n must be positive")
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	rs := registryv1.NewRegistryServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var left atomic.Int64 // puts not yet claimed by a caller
	left.Store(int64(n))
	errs := make([]error, conc)
	leases := make([]*leaseConn, conc)
	for w := range conc {
		lc, err := openLease(ctx, rs, "registrybench fill")
		if err != nil {
			return err
		}
		leases[w] = lc
	}
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Go(func() {
			for ctx.Err() == nil && left.Add(-1) >= 0 {
				if _, err := rs.Put(ctx, &registryv1.PutRequest{Data: payload, LeaseId: leases[w].id}); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, lc := range leases {
		errs = append(errs, lc.end())
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	done := n - int(max(left.Load(), 0))
	fmt.Printf("fill-weak c=%d size=%d objects=%d took=%v puts/s=%.0f\n", conc, len(payload), done, elapsed.Round(time.Millisecond), float64(done)/elapsed.Seconds())
	if done < n {
		return fmt.Errorf("put %d of %d objects within -d %v", done, n, dur)
	}
	return nil
}

// end closes the lease's stream and waits for the server to end it: its
// pins are released by then.
func (lc *leaseConn) end() error {
	if err := lc.stream.CloseSend(); err != nil {
		return err
	}
	for {
		if _, err := lc.stream.Recv(); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
	}
}
