package server

import (
	"fmt"

	"github.com/weakref/registry/internal/handle"
)

// Peers is what a node of a cluster knows of the other nodes: the
// membership's view of etcd (internal/membership). Outside a cluster
// there is none, and a handle of another node answers
// HANDLE_FOREIGN_NODE with its tag only, as it always has.
type Peers interface {
	// Lookup returns node's advertised address and the epoch of its
	// current run, and whether it is a live member of the cluster now.
	// It must be safe for concurrent use and must not block: it answers
	// from what the node has learnt, never by asking etcd.
	Lookup(node uint16) (addr string, epoch uint64, live bool)
}

// ClusterAnswers returns, for handle.Config.Foreign, what a node of a
// cluster answers for a genuine handle of another node, from what peers
// knows of it:
//
//   - the node is live: HANDLE_FOREIGN_NODE with metadata owner_addr, its
//     advertised address, so that any gRPC client can follow it (as a
//     Redis Cluster client follows MOVED);
//   - it is live in a later run than the handle's: REGISTRY_RESTARTED, what
//     the owner itself would answer;
//   - it is not live: UNAVAILABLE NODE_UNAVAILABLE, never "unknown" or
//     "collected": its objects may well be there when it returns.
//
// nil peers: nil, no hook.
func ClusterAnswers(peers Peers) func(*handle.ForeignNodeError) error {
	if peers == nil {
		return nil
	}
	return func(fe *handle.ForeignNodeError) error {
		addr, epoch, live := peers.Lookup(fe.Node)
		switch {
		case !live:
			return &NodeUnavailableError{Foreign: fe}
		case epoch != 0 && fe.Epoch < epoch:
			// Epochs are the runs' start times: a smaller one is an
			// earlier run. A larger one is a run this node has not
			// heard of yet: the owner will say.
			return &handle.RestartedError{Issued: fe.Epoch, Current: epoch}
		}
		return &OwnerError{Foreign: fe, Addr: addr}
	}
}

// OwnerError is a handle of another node that is live in the cluster, at
// Addr.
type OwnerError struct {
	Foreign *handle.ForeignNodeError
	Addr    string
}

func (e *OwnerError) Error() string {
	return fmt.Sprintf("%v, at %s", e.Foreign, e.Addr)
}

func (e *OwnerError) Unwrap() error { return e.Foreign }

func (e *OwnerError) hint() string {
	return "ask that node, at " + e.Addr + " (metadata owner_addr)"
}

// NodeUnavailableError is a handle of a node that is not a live member of
// the cluster now: crashed, stopped, or cut off from etcd for longer than
// its lease's TTL.
type NodeUnavailableError struct {
	Foreign *handle.ForeignNodeError
}

func (e *NodeUnavailableError) Error() string {
	return fmt.Sprintf("%v, which is not a live member of the cluster", e.Foreign)
}

// Unwrap lets the registry count the miss as a foreign node's.
func (e *NodeUnavailableError) Unwrap() error { return e.Foreign }
