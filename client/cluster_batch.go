package client

import (
	"context"
	"sync"

	"github.com/weakref/registry/internal/handle"
)

// byNode splits handles by the node each names and calls each, for every
// node's indexes, all at once. A handle of a node that is not live is
// given to fail with ErrNodeUnavailable instead; handles with no node tag
// (malformed) go to one live node, whose answer says what is wrong with
// them. It returns the first error an each returned, or ctx's.
func (r *router) byNode(ctx context.Context, handles []string, fail func(i int, err error),
	each func(ctx context.Context, n *node, idx []int) error) error {
	t, err := r.current(ctx)
	if err != nil {
		return err
	}
	groups := make(map[*node][]int, len(t.tags))
	var anyNode *node
	for i, h := range handles {
		tag, ok := handle.NodeOf(handle.Object, h)
		n := t.nodes[tag]
		switch {
		case !ok && len(t.tags) == 0:
			_, err := t.place(r, nil)
			fail(i, err)
			continue
		case !ok:
			if anyNode == nil {
				anyNode = t.nodes[t.tags[0]]
			}
			n = anyNode
		case n == nil:
			fail(i, nodeUnavailable(tag))
			continue
		}
		groups[n] = append(groups[n], i)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for n, idx := range groups {
		wg.Go(func() {
			if err := each(ctx, n, idx); err != nil {
				mu.Lock()
				if first == nil {
					first = err
					cancel()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// resolveMany is ResolveMany on a cluster: each node's handles go to it,
// with cl's part there when cl is not nil. A node whose calls fail as a
// whole (unreachable, say) fails its handles, each with that error; the
// others' answers stand.
func (r *router) resolveMany(ctx context.Context, handles []string, p resolveParams, cl *clusterLease) ([]Resolved, error) {
	out := make([]Resolved, len(handles))
	err := r.byNode(ctx, handles, func(i int, err error) { out[i].Err = err },
		func(ctx context.Context, n *node, idx []int) error {
			np := p
			var part *leasePart
			var err error
			if cl != nil {
				if part, err = cl.on(ctx, n); err == nil {
					np.leaseID = part.l.ID()
				}
			}
			var rs []Resolved
			if err == nil {
				rs, err = n.c.resolveMany(ctx, pick(handles, idx), np)
			}
			if err != nil && ctx.Err() != nil {
				return ctx.Err()
			}
			for k, i := range idx {
				if err != nil {
					out[i].Err = err
					continue
				}
				out[i] = rs[k]
				if part != nil && rs[k].Err == nil {
					cl.track(part, handles[i], true)
				}
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// statMany is StatMany on a cluster, split as resolveMany.
func (r *router) statMany(ctx context.Context, handles []string) ([]Statted, error) {
	out := make([]Statted, len(handles))
	err := r.byNode(ctx, handles, func(i int, err error) { out[i].Err = err },
		func(ctx context.Context, n *node, idx []int) error {
			rs, err := n.c.StatMany(ctx, pick(handles, idx))
			if err != nil && ctx.Err() != nil {
				return ctx.Err()
			}
			for k, i := range idx {
				if err != nil {
					out[i].Err = err
					continue
				}
				out[i] = rs[k]
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}
