package client

import (
	"context"
	"errors"
	"sync"
	"time"
)

// A lease of a cluster's client is a set of per-node leases, one per node
// it pins on, each opened the first time it is needed (by Pin, Resolve,
// ResolveMany or a Put PinnedBy it), each one stream to its node with its
// own grace and resume, exactly as a single-address lease. A node's stream
// dropping touches only that node's part: the other parts keep their
// pins. A part that ends other than by Close (its grace ran out, it was
// revoked, its node restarted or left the cluster) is reported to
// OnLostPins with the handles it had pinned; the Lease itself stays open,
// and the next pin on that node opens a new part there.

// LostPins is what a cluster's lease lost when its part on one node ended
// other than by Close.
type LostPins struct {
	// Node is the tag of the node whose part ended.
	Node uint16
	// Handles are those this lease had pinned on the node, in no order.
	// The node no longer holds them for this lease (or will not after the
	// grace it keeps a dropped lease for).
	Handles []string
	// Err is why: an *Error matching ErrNodeUnavailable if the node left
	// the cluster, else a *LeaseError: ErrRestarted if the node came back
	// as a new run before the part could resume, or the node lease's own
	// end (ErrLeaseLost, ErrLeaseRevoked, ErrRestarted).
	Err error
}

// OnLostPins calls f, on a goroutine of its own, each time a part of a
// cluster's lease ends other than by Close (see LostPins). A lease of a
// single address never calls it: its end is Done, Err and OnEnd.
func OnLostPins(f func(LostPins)) LeaseOption { return func(c *leaseConfig) { c.onLost = f } }

// clusterLease is the state of a cluster's Lease.
type clusterLease struct {
	r   *router
	cfg leaseConfig

	mu     sync.Mutex // guards the fields below and every part's pins
	parts  map[uint16]*leasePart
	closed bool
}

// leasePart is a cluster lease's lease on one node.
type leasePart struct {
	n *node
	// opening is held (a token in it) while l opens, so that concurrent
	// calls open one lease per node; a channel, so that a call waiting
	// for another's opening gives up when its own context ends. Lock
	// order: opening, then clusterLease.mu.
	opening chan struct{}
	l       *Lease              // nil until open; set under opening and clusterLease.mu
	pins    map[string]struct{} // the handles l pins; nil once ended
}

func (c *Client) clusterLease(cfg leaseConfig) *Lease {
	return &Lease{c: c, name: cfg.name, done: make(chan struct{}), grace: cfg.grace,
		cl: &clusterLease{r: c.cl, cfg: cfg, parts: map[uint16]*leasePart{}}}
}

// on returns the lease's part on n, opening it if it is not open.
func (cl *clusterLease) on(ctx context.Context, n *node) (*leasePart, error) {
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		return nil, errClosed
	}
	p := cl.parts[n.tag]
	if p == nil || p.n != n {
		// None yet, or one on a connection to the node that has gone: its
		// end is reported when its lease sees it.
		p = &leasePart{n: n, pins: map[string]struct{}{}, opening: make(chan struct{}, 1)}
		cl.parts[n.tag] = p
	}
	cl.mu.Unlock()

	select {
	case p.opening <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-p.opening }()
	if p.l != nil {
		return p, nil
	}
	l, err := n.c.Lease(ctx, LeaseName(cl.cfg.name), Grace(cl.cfg.grace), OnEnd(func(err error) { cl.ended(p, err) }))
	if err != nil {
		return nil, err // p stays, unopened: the next call tries again
	}
	cl.mu.Lock()
	p.l = l
	closed := cl.closed
	cl.mu.Unlock()
	if closed { // Close came while it opened, and found p not open yet
		_, _ = l.Close(ctx)
		return nil, errClosed
	}
	return p, nil
}

// ended reports the end of p's lease, other than by Close.
func (cl *clusterLease) ended(p *leasePart, err error) {
	cl.mu.Lock()
	if cl.parts[p.n.tag] == p {
		delete(cl.parts, p.n.tag)
	}
	lost := make([]string, 0, len(p.pins))
	for h := range p.pins {
		lost = append(lost, h)
	}
	p.pins = nil
	closed := cl.closed
	var id string
	if p.l != nil { // nil if it ended before on stored it
		id = p.l.ID()
	}
	cl.mu.Unlock()
	if closed || cl.cfg.onLost == nil {
		return
	}
	switch gone, restarted := cl.r.leftBy(p.n); {
	case gone:
		err = nodeUnavailable(p.n.tag)
	case restarted:
		err = &LeaseError{LeaseID: id, Kind: ErrRestarted, Err: nodeRestarted(p.n.tag)}
	}
	cl.cfg.onLost(LostPins{Node: p.n.tag, Handles: lost, Err: err})
}

// track records that p's lease pins h (pinned) or does not (!pinned).
func (cl *clusterLease) track(p *leasePart, h string, pinned bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	switch {
	case p.pins == nil:
	case pinned:
		p.pins[h] = struct{}{}
	default:
		delete(p.pins, h)
	}
}

// placePut picks the node of a Put and, when PinnedBy names a cluster's
// lease, sets the lease id to its part on that node.
func (r *router) placePut(ctx context.Context, p putParams) (*node, *leasePart, putParams, error) {
	t, err := r.current(ctx)
	if err != nil {
		return nil, nil, p, err
	}
	n, err := t.place(r, p.prefer)
	if err != nil {
		return nil, nil, p, err
	}
	if p.lease == nil || p.lease.cl == nil {
		return n, nil, p, nil
	}
	part, err := p.lease.cl.on(ctx, n)
	if err != nil {
		return nil, nil, p, err
	}
	p.leaseID = part.l.ID()
	return n, part, p, nil
}

// pins runs pin (Pin or Unpin) on each node's handles, on its part of the
// lease, at once, and merges the results in order. A handle of a node
// that is not live fails alone, with ErrNodeUnavailable; so do a node's
// handles if its part cannot open or its call fails, since the other
// nodes' answers are good. Only the lease's end or ctx's fails the call.
func (cl *clusterLease) pins(ctx context.Context, handles []string,
	pin func(ctx context.Context, l *Lease, hs []string) ([]PinResult, error)) ([]PinResult, error) {
	out := make([]PinResult, len(handles))
	err := cl.r.byNode(ctx, handles, func(i int, err error) {
		out[i] = PinResult{Handle: handles[i], Outcome: OutcomeFailed, Err: err}
	}, func(ctx context.Context, n *node, idx []int) error {
		part, err := cl.on(ctx, n)
		var rs []PinResult
		if err == nil {
			rs, err = pin(ctx, part.l, pick(handles, idx))
		}
		if errors.Is(err, errClosed) {
			return err
		}
		for k, i := range idx {
			if k >= len(rs) {
				out[i] = PinResult{Handle: handles[i], Outcome: OutcomeFailed, Err: err}
				continue
			}
			out[i] = rs[k]
			switch rs[k].Outcome {
			case OutcomePinned, OutcomeAlreadyPinned:
				cl.track(part, handles[i], true)
			case OutcomeUnpinned, OutcomeNotPinned:
				cl.track(part, handles[i], false)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// resolve is Lease.Resolve on a cluster.
func (cl *clusterLease) resolve(ctx context.Context, h string) ([]byte, Info, error) {
	n, err := cl.r.route(ctx, h)
	if err != nil {
		return nil, Info{}, err
	}
	part, err := cl.on(ctx, n)
	if err != nil {
		return nil, Info{}, err
	}
	data, info, err := n.c.resolve(ctx, h, part.l.ID())
	if err == nil {
		cl.track(part, h, true)
	}
	return data, info, err
}

// close closes every part, at once, and returns how many pins they
// released.
func (cl *clusterLease) close(ctx context.Context, handoff time.Duration, done chan struct{}) (int, error) {
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		return 0, nil
	}
	cl.closed = true
	parts := make([]*leasePart, 0, len(cl.parts))
	for _, p := range cl.parts {
		parts = append(parts, p)
	}
	clear(cl.parts)
	cl.mu.Unlock()
	defer close(done)

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		released int
		errs     []error
	)
	for _, p := range parts {
		wg.Go(func() {
			select { // wait for an opening under way
			case p.opening <- struct{}{}:
			case <-ctx.Done():
				mu.Lock()
				errs = append(errs, ctx.Err())
				mu.Unlock()
				return
			}
			l := p.l
			<-p.opening
			if l == nil {
				return
			}
			n, err := l.CloseWithHandoff(ctx, handoff)
			mu.Lock()
			defer mu.Unlock()
			released += n
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	return released, errors.Join(errs...)
}

// nodeLeases returns the ids of the open parts by node.
func (cl *clusterLease) nodeLeases() map[uint16]string {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	ids := make(map[uint16]string, len(cl.parts))
	for _, p := range cl.parts {
		if p.l != nil {
			ids[p.n.tag] = p.l.ID()
		}
	}
	return ids
}

// resumes sums the resumes of the open parts.
func (cl *clusterLease) resumes() int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	total := 0
	for _, p := range cl.parts {
		if l := p.l; l != nil {
			total += l.Resumes()
		}
	}
	return total
}
