// Package client is the Go client of registry: it stores objects in a
// registryd, resolves their handles, and keeps them alive with leases.
//
// An object lives while a lease pins it. Unpinned, registryd holds it
// only weakly and the Go garbage collector takes it at its next cycle;
// its handle then resolves to an error matching ErrCollected. So: put
// what you share under a lease, and close the lease when you are done.
//
//	c, err := client.Dial("127.0.0.1:7600")
//	lease, err := c.Lease(ctx, client.Grace(30*time.Second))
//	info, err := c.Put(ctx, data, client.PinnedBy(lease))
//	// ... hand info.Handle to another process; it pins it under its own lease ...
//	lease.Close(ctx)
//
// A lease is one gRPC stream. If the connection drops, the lease
// reconnects and resumes within its grace, keeping every pin; when it
// cannot, Done is closed and Err says why (ErrLeaseLost, ErrLeaseRevoked,
// ErrRestarted).
//
// # Against a cluster
//
// Dial also takes a cluster target, "etcd:///registry/NAME", with
// WithEtcd (or WithEtcdClient) saying where etcd is:
//
//	c, err := client.Dial("etcd:///registry/prod", client.WithEtcd(clientv3.Config{Endpoints: []string{"etcd-1:2379"}}))
//
// The client reads the cluster's live nodes from etcd (the endpoints
// registryd registers under registry/NAME/nodes) and follows their
// changes, keeping one connection per live node; a node that leaves has
// its connection closed. While etcd is away the client keeps the nodes it
// knew. Dial returns at once; calls wait within their context until the
// first list of nodes has been read (WaitForNodes waits for it alone).
//
// Every handle carries the tag of the node that issued it, so Resolve,
// Stat, Download and Watch go to that node, and ResolveMany and StatMany
// split their handles by node and merge the answers in order. A handle of
// a node that is not a live member answers ErrNodeUnavailable (reason
// NODE_UNAVAILABLE, the tag in Metadata["node"]) without a call; objects
// are not replicated, so they answer again only if the node comes back in
// the same run, and ErrRestarted if it restarted. Put and Upload place
// each object on the next live node in turn, by tag, unless PreferNode
// names a live one.
//
// A cluster's Lease is a set of per-node leases, each opened the first
// time the Lease pins on its node and each resuming on its own: a dropped
// connection to one node touches only that node's pins. When a node's
// part ends other than by Close (it left the cluster, its grace ran out,
// it restarted), OnLostPins is told the node and the handles it had
// pinned, and the Lease goes on with the other nodes. A cluster's Watcher
// merges one watch per node; each node's events come in that node's
// order, with that node's sequences.
//
// A single-address Client that resolves another node's handle gets
// ErrForeignNode, whose Metadata["owner_addr"] a cluster's registryd
// fills with the owner's address; the client does not follow it: dial
// the cluster target to have calls routed.
//
// Errors from registryd are *Error values; branch on them with errors.Is
// against the sentinels (ErrCollected, ErrUnknownHandle, ...), or read
// their Reason, the server's ErrorInfo reason.
//
// The client traces its calls with OpenTelemetry's global tracer
// provider and propagator (see WithTracerProvider), so an application that
// sets up OpenTelemetry sees each call continue in registryd's spans.
package client
