package client

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"sync"

	"google.golang.org/grpc/codes"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// Resolved is one handle's answer in ResolveMany: its bytes, or why not.
type Resolved struct {
	Data []byte // exactly the bytes put under the handle; nil with Err
	Info Info   // with WithInfo only; the zero Info otherwise
	Err  error  // an *Error, as Resolve of the handle alone would return
}

// Statted is one handle's answer in StatMany.
type Statted struct {
	Info Info
	Err  error // an *Error, as Stat of the handle alone would return
}

// ResolveOption changes what ResolveMany asks for.
type ResolveOption func(*resolveParams)

type resolveParams struct {
	withInfo bool
	leaseID  string
}

// WithInfo asks ResolveMany for each object's metadata beside its bytes.
// Without it the answer carries the bytes alone: at small payloads the
// metadata is larger than the bytes.
func WithInfo() ResolveOption { return func(p *resolveParams) { p.withInfo = true } }

// ResolveMany returns the bytes of every handle, in order, each answered
// on its own: a handle that fails (collected, unknown, malformed) has its
// error in its Resolved and the others their bytes. It is Resolve for
// many handles in few round trips: up to a thousand handles go in one
// BatchResolve call, more in several at once.
//
// The error is for the call as a whole (registryd unreachable, the
// context done); then no Resolved is returned. Objects too large for one
// answer beside the others are resolved again in smaller calls, and
// those too large for any message are downloaded, as Resolve does, so
// that no handle fails for its size.
func (c *Client) ResolveMany(ctx context.Context, handles []string, opts ...ResolveOption) ([]Resolved, error) {
	var p resolveParams
	for _, o := range opts {
		o(&p)
	}
	if c.cl != nil {
		return c.cl.resolveMany(ctx, handles, p, nil)
	}
	return c.resolveMany(ctx, handles, p)
}

// ResolveMany resolves every handle and pins it with l, each as one step
// (see Lease.Resolve): a handle answered with bytes is pinned, one
// answered with an error is not. Otherwise as Client.ResolveMany; if the
// error is not nil, the handles of calls that went through are pinned.
func (l *Lease) ResolveMany(ctx context.Context, handles []string, opts ...ResolveOption) ([]Resolved, error) {
	p := resolveParams{leaseID: l.ID()}
	for _, o := range opts {
		o(&p)
	}
	if l.cl != nil {
		return l.cl.r.resolveMany(ctx, handles, p, l.cl)
	}
	return l.c.resolveMany(ctx, handles, p)
}

// StatMany returns the metadata of every handle, in order, each answered
// on its own as Stat would, in as few round trips as ResolveMany.
func (c *Client) StatMany(ctx context.Context, handles []string) ([]Statted, error) {
	if c.cl != nil {
		return c.cl.statMany(ctx, handles)
	}
	out := make([]Statted, len(handles))
	err := c.eachGroup(ctx, handles, func(ctx context.Context, idx []int) ([]int, error) {
		resp, err := c.rpc.BatchStat(ctx, &registryv1.BatchStatRequest{Handles: pick(handles, idx)})
		if err != nil {
			return nil, fromStatus(err)
		}
		var again []int
		for k, r := range resp.GetResults() {
			i := idx[k]
			if e := r.GetError(); e != nil {
				if e.GetReason() == reasonResponseTooLarge && len(idx) > 1 {
					again = append(again, i)
					continue
				}
				out[i].Err = fromHandleError(e)
				continue
			}
			out[i].Info = infoFrom(r.GetInfo())
		}
		return again, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

var reasonResponseTooLarge = registryv1.ErrorReason_RESPONSE_TOO_LARGE.String()

func (c *Client) resolveMany(ctx context.Context, handles []string, p resolveParams) ([]Resolved, error) {
	out := make([]Resolved, len(handles))
	var mu sync.Mutex
	var alone []int // too large for any answer: resolved on their own
	err := c.eachGroup(ctx, handles, func(ctx context.Context, idx []int) ([]int, error) {
		resp, err := c.rpc.BatchResolve(ctx, &registryv1.BatchResolveRequest{Handles: pick(handles, idx), LeaseId: p.leaseID, WithInfo: p.withInfo})
		if err != nil {
			return nil, fromStatus(err)
		}
		var again []int
		for k, r := range resp.GetResults() {
			i := idx[k]
			e := r.GetError()
			switch {
			case e == nil:
				out[i] = Resolved{Data: r.GetData(), Info: infoFrom(r.GetInfo())}
			case e.GetReason() == reasonResponseTooLarge && len(idx) > 1:
				again = append(again, i)
			case e.GetReason() == reasonMessageTooLarge, e.GetReason() == reasonResponseTooLarge:
				mu.Lock()
				alone = append(alone, i)
				mu.Unlock()
			default:
				out[i].Err = fromHandleError(e)
			}
		}
		return again, nil
	})
	if err != nil {
		return nil, err
	}
	for _, i := range alone {
		var buf bytes.Buffer
		info, err := c.download(ctx, handles[i], p.leaseID, &buf)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		out[i] = Resolved{Data: buf.Bytes(), Err: err}
		if err == nil && p.withInfo {
			out[i].Info = info
		}
	}
	return out, nil
}

// batchesInFlight bounds the calls one ResolveMany or StatMany makes at
// once.
const batchesInFlight = 4

// eachGroup calls call for groups of indexes into handles, at most
// batchesInFlight at once, until every index is answered. call answers
// the indexes it is given and returns those to ask again, in a smaller
// group (RESPONSE_TOO_LARGE: they did not fit beside the others). A call
// refused for TOO_MANY_HANDLES below maxHandlesPerRequest (a server with
// a small message limit) is split as its metadata `max` says.
//
// The handles are grouped by index and the answers merged by index, so
// that a batch spanning the nodes of a cluster needs only another
// grouping before it: by the node tag each handle carries (router.byNode),
// each node's handles then going through its own Client's eachGroup.
func (c *Client) eachGroup(ctx context.Context, handles []string, call func(context.Context, []int) ([]int, error)) error {
	if len(handles) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	all := make([]int, len(handles))
	for i := range all {
		all[i] = i
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, batchesInFlight)
	var run func(idx []int, size int)
	run = func(idx []int, size int) {
		for _, g := range chunks(idx, size) {
			sem <- struct{}{}
			wg.Go(func() {
				again, err := call(ctx, g)
				<-sem // before run below takes one again
				if most, ok := smallerBatches(err, len(g)); ok {
					run(g, most)
					return
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
						cancel()
					}
					mu.Unlock()
					return
				}
				if len(again) > 0 {
					run(again, max(len(again)/2, 1))
				}
			})
		}
	}
	run(all, maxHandlesPerRequest)
	wg.Wait()
	return first
}

// smallerBatches reports whether err refused a batch of n handles as too
// many for the server, and how many it takes.
func smallerBatches(err error, n int) (int, bool) {
	var e *Error
	if !errors.As(err, &e) || e.Reason != registryv1.ErrorReason_TOO_MANY_HANDLES.String() {
		return 0, false
	}
	most, perr := strconv.Atoi(e.Metadata["max"])
	if perr != nil || most < 1 || most >= n {
		return 0, false
	}
	return most, true
}

// chunks splits idx into slices of at most size.
func chunks(idx []int, size int) [][]int {
	var out [][]int
	for len(idx) > size {
		out = append(out, idx[:size])
		idx = idx[size:]
	}
	return append(out, idx)
}

// pick returns the handles at idx.
func pick(handles []string, idx []int) []string {
	hs := make([]string, len(idx))
	for k, i := range idx {
		hs[k] = handles[i]
	}
	return hs
}

// fromHandleError is one handle's error in a batch or a lease's results
// as an *Error, as a unary call's status would be.
func fromHandleError(e *registryv1.HandleError) *Error {
	kind := reasons[e.GetReason()]
	if kind == nil && codes.Code(e.GetCode()) == codes.ResourceExhausted {
		kind = ErrLimit
	}
	return &Error{Code: codes.Code(e.GetCode()), Reason: e.GetReason(), Message: e.GetMessage(), Metadata: e.GetMetadata(), kind: kind}
}
