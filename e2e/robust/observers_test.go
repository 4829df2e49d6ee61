package robust

import (
	"context"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// observers are what watches registryd all the time in a run, as an
// operator's tools do: a Prometheus scrape, a GetStats loop, a ListObjects
// pager and InspectObject calls. Their Inspect results go into the
// history; the rest only load registryd and must not change what it keeps.
type observers struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	calls  atomic.Int64
}

func (c *cluster) startObservers() *observers {
	ctx, cancel := context.WithCancel(context.Background())
	o := &observers{cancel: cancel}
	loop := func(every time.Duration, f func(context.Context)) {
		o.wg.Add(1)
		go func() {
			defer o.wg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				f(ctx)
				o.calls.Add(1)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
		}()
	}
	loop(250*time.Millisecond, func(context.Context) {
		resp, err := httpClient.Get("http://" + c.daemon().MetricsAddr + "/metrics")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	loop(100*time.Millisecond, func(ctx context.Context) {
		cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		defer cancel()
		c.admin.GetStats(cctx, &registryv1.GetStatsRequest{})
	})
	loop(100*time.Millisecond, func(ctx context.Context) {
		token := ""
		for range 1000 { // bounded: 1000 pages of 100
			cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
			resp, err := c.admin.ListObjects(cctx, &registryv1.ListObjectsRequest{PageSize: 100, PageToken: token})
			cancel()
			if err != nil || resp.GetNextPageToken() == "" {
				return
			}
			token = resp.GetNextPageToken()
		}
	})
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	loop(20*time.Millisecond, func(ctx context.Context) {
		h := c.randomHandle(rnd)
		if h == "" {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		defer cancel()
		start := time.Now().UnixNano()
		resp, err := c.admin.InspectObject(cctx, &registryv1.InspectObjectRequest{Handle: h})
		r := Record{Op: OpStat, Handle: h, Start: start, End: time.Now().UnixNano(), Result: ResultOf(err), Detail: "inspect"}
		if err == nil {
			r.Detail = "inspect " + resp.GetInfo().GetState().String()
		}
		if ctx.Err() == nil {
			c.record(r)
		}
	})
	return o
}

// stop ends every observer and waits for them.
func (o *observers) stop() {
	o.cancel()
	o.wg.Wait()
}

// randomHandle returns a handle some put returned, or "".
func (c *cluster) randomHandle(rnd *rand.Rand) string {
	c.hist.mu.Lock()
	defer c.hist.mu.Unlock()
	n := len(c.hist.records)
	for range 8 {
		if n == 0 {
			return ""
		}
		r := c.hist.records[rnd.IntN(n)]
		if r.Handle != "" && (r.Op == OpPut || r.Op == OpPin) {
			return r.Handle
		}
	}
	return ""
}
