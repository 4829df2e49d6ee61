package membership

import (
	"fmt"
	"time"

	"github.com/weakref/registry/internal/cluster"
)

// TagTakenError is a node tag another live node of the cluster holds.
type TagTakenError struct {
	Cluster string
	Node    uint16
	// Holder is who holds it, as its claim says.
	Holder cluster.Claim
}

func (e *TagTakenError) Error() string {
	return fmt.Sprintf("node tag %d of cluster %s is held by the registryd at %s (started %s, epoch %d): give this node another --node, or stop that one",
		e.Node, e.Cluster, e.Holder.Addr, e.Holder.Started.UTC().Format(time.RFC3339), e.Holder.Epoch)
}

// KeyMismatchError is a cluster whose nodes have another handle MAC key:
// each would answer HANDLE_UNKNOWN for every handle of the other.
type KeyMismatchError struct {
	Cluster string
	// Node and Addr are a node with the other key.
	Node uint16
	Addr string
	// Theirs and Ours are the keys' fingerprints (cluster.KeyID).
	Theirs, Ours string
}

func (e *KeyMismatchError) Error() string {
	return fmt.Sprintf("node %d of cluster %s, at %s, has another handle key (fingerprint %s, this node's %s): every node of a cluster needs the same --key-file",
		e.Node, e.Cluster, e.Addr, e.Theirs, e.Ours)
}
