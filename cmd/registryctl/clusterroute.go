package main

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
)

// The commands about many handles, with --cluster: stat asks each node
// for its own handles and puts the answers back in the order given; hold
// pins handles of one node (a lease is one node's; the Go client's lease
// spans nodes); watch merges the nodes' event streams.

// notInCluster are the commands that need one registryd: with --cluster,
// they say which to use instead.
var notInCluster = map[string]string{
	"health":  "'registryctl cluster ls' shows every node's health",
	"version": "'registryctl cluster ls' shows every node's version; 'version --client' shows registryctl's",
}

// refuseInCluster is setup's check of cmd against notInCluster.
func (a *app) refuseInCluster(cmd *cobra.Command) error {
	if !a.clusterMode() || cmd.Parent() != cmd.Root() {
		return nil
	}
	hint, ok := notInCluster[cmd.Name()]
	if !ok {
		return nil
	}
	if fl := cmd.Flags().Lookup("client"); fl != nil && fl.Changed {
		return nil
	}
	return usagef("%s with --cluster: %s", cmd.Name(), hint)
}

// routeAll points the calls at the one node that issued every handle in
// handles, for op.
func (a *app) routeAll(ctx context.Context, op string, handles []string) error {
	if !a.clusterMode() {
		return nil
	}
	groups, missing, err := a.byNode(ctx, handle.Object, handles)
	if err != nil {
		return err
	}
	for tag, idx := range missing {
		return opErr(handles[idx[0]], a.nodeUnavailable(tag))
	}
	if len(groups) > 1 {
		addrs := make([]string, 0, len(groups))
		for addr := range groups {
			addrs = append(addrs, addr)
		}
		slices.Sort(addrs)
		return usagef("%s with --cluster takes handles of one node; these are on %d (%s): run one %s per node",
			op, len(groups), strings.Join(addrs, ", "), op)
	}
	for addr := range groups {
		a.addr = addr
	}
	return nil
}

// statMany is client.StatMany over the nodes that issued the handles: a
// handle of a node that is not live gets NODE_UNAVAILABLE as its result.
func (a *app) statMany(ctx context.Context, handles []string) ([]client.Statted, error) {
	if !a.clusterMode() {
		cl, err := a.client()
		if err != nil {
			return nil, err
		}
		return cl.StatMany(ctx, handles)
	}
	groups, missing, err := a.byNode(ctx, handle.Object, handles)
	if err != nil {
		return nil, err
	}
	out := make([]client.Statted, len(handles))
	for tag, idx := range missing {
		for _, i := range idx {
			out[i].Err = a.nodeUnavailableResult(tag)
		}
	}
	for addr, idx := range groups {
		cl, err := a.clientAt(addr)
		if err != nil {
			return nil, err
		}
		part := make([]string, len(idx))
		for k, i := range idx {
			part[k] = handles[i]
		}
		res, err := cl.StatMany(ctx, part)
		if err != nil {
			a.addr = addr // for the message: which node failed
			return nil, err
		}
		for k, i := range idx {
			out[i] = res[k]
		}
	}
	return out, nil
}

// clusterWatch starts the watch on every node concerned, the nodes that
// issued handles, or all nodes when there are none, and merges their
// events as they come. It ends when every node's stream has ended (named
// objects all gone), or at the first node's failure.
func (a *app) clusterWatch(ctx context.Context, handles, kinds []string, from, epoch uint64) (func() (*registryv1.Event, error), error) {
	var (
		addrs []string
		parts [][]string
	)
	if len(handles) == 0 {
		nodes, err := a.members(ctx)
		if err != nil {
			return nil, err
		}
		if len(nodes) == 0 {
			return nil, a.noNodes()
		}
		for _, n := range nodes {
			addrs, parts = append(addrs, n.addr), append(parts, nil)
		}
	} else {
		groups, missing, err := a.byNode(ctx, handle.Object, handles)
		if err != nil {
			return nil, err
		}
		for tag, idx := range missing {
			return nil, opErr(handles[idx[0]], a.nodeUnavailable(tag))
		}
		for addr, idx := range groups {
			part := make([]string, len(idx))
			for k, i := range idx {
				part[k] = handles[i]
			}
			addrs, parts = append(addrs, addr), append(parts, part)
		}
	}
	if from != 0 && len(addrs) > 1 {
		return nil, usagef("--from resumes one node's watch (sequences are per node), and this one spans %d nodes: name handles of one node", len(addrs))
	}
	recvs := make([]func() (*registryv1.Event, error), len(addrs))
	for i, addr := range addrs {
		a.addr = addr
		recv, err := a.startWatch(ctx, parts[i], kinds, from, epoch)
		if err != nil {
			return nil, err
		}
		recvs[i] = recv
	}
	if len(recvs) == 1 {
		return recvs[0], nil
	}
	type item struct {
		ev   *registryv1.Event
		err  error
		addr string
	}
	ch := make(chan item)
	for i, recv := range recvs {
		go func() {
			for {
				ev, err := recv()
				select {
				case ch <- item{ev, err, addrs[i]}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	live := len(recvs)
	return func() (*registryv1.Event, error) {
		for {
			select {
			case it := <-ch:
				switch {
				case it.err == nil:
					return it.ev, nil
				case errors.Is(it.err, io.EOF):
					if live--; live == 0 {
						return nil, io.EOF
					}
				default:
					a.addr = it.addr // for the message: which node failed
					return nil, it.err
				}
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}, nil
}
