package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/cluster"
	"github.com/weakref/registry/internal/handle"
)

// With --cluster, registryctl reads the cluster's live nodes from etcd
// once per run (registry/NAME/nodes/, the endpoints every registryd
// registers) and talks to each node at the address it advertises, with
// the same TLS and token as a single --addr. A command about one handle
// or lease goes to the node its tag names; a command about the whole
// registry asks every node and adds up or concatenates their answers.

// defaultEtcd is where etcd's own tools look when told nothing.
const defaultEtcd = "http://127.0.0.1:2379"

// member is one node of the cluster as etcd lists it.
type member struct {
	tag  uint16
	addr string
	info cluster.Member
}

// clusterMode says whether --cluster was given.
func (a *app) clusterMode() bool { return a.clusterName != "" }

// setupCluster checks --cluster and --etcd-endpoints; name says how the
// user gave a flag, for the message.
func (a *app) setupCluster(name func(string) string, addrGiven bool) error {
	if a.cluster == "" {
		return nil
	}
	if addrGiven {
		return usagef("%s and %s name the registry twice: give one", name("addr"), name("cluster"))
	}
	if strings.Contains(a.cluster, "://") {
		n, err := cluster.NameOfTarget(a.cluster)
		if err != nil {
			return usagef("%s: %v", name("cluster"), err)
		}
		a.clusterName = n
	} else {
		if err := cluster.CheckName(a.cluster); err != nil {
			return usagef("%s: %v; or give the target etcd:///registry/NAME", name("cluster"), err)
		}
		a.clusterName = a.cluster
	}
	for _, u := range strings.Split(a.etcdEndpoints, ",") {
		if u = strings.TrimSpace(u); u != "" {
			a.etcdURLs = append(a.etcdURLs, u)
		}
	}
	if len(a.etcdURLs) == 0 {
		return usagef("%s is empty: give etcd's client URLs, comma-separated", name("etcd-endpoints"))
	}
	return nil
}

// members returns the cluster's live nodes, ordered by tag, read from
// etcd on first use.
func (a *app) members(ctx context.Context) ([]member, error) {
	if a.nodes != nil {
		return a.nodes, nil
	}
	ec, err := clientv3.New(clientv3.Config{Endpoints: a.etcdURLs, DialTimeout: a.timeout, Logger: zap.NewNop()})
	if err != nil {
		return nil, usagef("--etcd-endpoints %q: %v", a.etcdEndpoints, err)
	}
	defer ec.Close()
	m, err := endpoints.NewManager(ec, cluster.NodesTarget(a.clusterName))
	if err != nil {
		return nil, err
	}
	ctx, cancel := a.callCtx(ctx)
	defer cancel()
	eps, err := m.List(ctx)
	if err != nil {
		return nil, &cmdError{
			msg: fmt.Sprintf("cannot read cluster %s's nodes from etcd at %s: %v; check that etcd runs and that --etcd-endpoints (or REGISTRYCTL_ETCD_ENDPOINTS) names it",
				a.clusterName, strings.Join(a.etcdURLs, ","), etcdCause(err)),
			code: exitUnavailable,
		}
	}
	nodes := make([]member, 0, len(eps))
	for key, ep := range eps {
		tag, err := cluster.TagOfKey(key)
		if err != nil {
			fmt.Fprintf(a.stderr, "registryctl: skipping etcd key %s: %v\n", key, err)
			continue
		}
		info, err := cluster.MemberOf(ep)
		if err != nil {
			fmt.Fprintf(a.stderr, "registryctl: skipping node %d: %v\n", tag, err)
			continue
		}
		nodes = append(nodes, member{tag: tag, addr: ep.Addr, info: info})
	}
	slices.SortFunc(nodes, func(x, y member) int { return int(x.tag) - int(y.tag) })
	a.nodes = nodes
	return nodes, nil
}

// etcdCause shortens an etcd client error to what the user can act on.
func etcdCause(err error) string {
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.DeadlineExceeded:
			return "no answer in time"
		case codes.Unavailable:
			return transportCause(st.Message())
		}
		return st.Message()
	}
	return err.Error()
}

// nodeFor returns the node that issued id, an object handle or a lease id
// of kind k. An id whose tag cannot be read goes to any node, which then
// answers as a single registryd would (HANDLE_MALFORMED...); a tag no live
// node has answers NODE_UNAVAILABLE, as a node of the cluster would.
func (a *app) nodeFor(ctx context.Context, k handle.Kind, id string) (member, error) {
	nodes, err := a.members(ctx)
	if err != nil {
		return member{}, err
	}
	tag, ok := handle.NodeOf(k, id)
	if !ok {
		if len(nodes) == 0 {
			return member{}, a.noNodes()
		}
		return nodes[0], nil
	}
	for _, n := range nodes {
		if n.tag == tag {
			return n, nil
		}
	}
	return member{}, a.nodeUnavailable(tag)
}

// route points the next calls at the node that issued id; without
// --cluster it leaves --addr alone.
func (a *app) route(ctx context.Context, k handle.Kind, id string) error {
	if !a.clusterMode() {
		return nil
	}
	n, err := a.nodeFor(ctx, k, id)
	if err != nil {
		return opErr(id, err)
	}
	a.addr = n.addr
	return nil
}

// nodeUnavailable is the error of a handle of node tag, which etcd does
// not list: the status a registryd of the cluster answers for it, so that
// it reads and exits the same whoever noticed.
func (a *app) nodeUnavailable(tag uint16) error {
	msg := fmt.Sprintf("node %d is not a live member of cluster %s: retry when it rejoins (its objects are not replicated)",
		tag, a.clusterName)
	st, err := status.New(codes.Unavailable, msg).WithDetails(&errdetails.ErrorInfo{
		Reason:   registryv1.ErrorReason_NODE_UNAVAILABLE.String(),
		Domain:   "registry",
		Metadata: map[string]string{"node": strconv.Itoa(int(tag))},
	})
	if err != nil {
		return status.Error(codes.Unavailable, msg)
	}
	return st.Err()
}

// nodeUnavailableResult is nodeUnavailable as one result of a batch.
func (a *app) nodeUnavailableResult(tag uint16) *client.Error {
	st := status.Convert(a.nodeUnavailable(tag))
	return &client.Error{Code: st.Code(), Reason: registryv1.ErrorReason_NODE_UNAVAILABLE.String(), Message: st.Message(),
		Metadata: map[string]string{"node": strconv.Itoa(int(tag))}}
}

func (a *app) noNodes() error {
	return &cmdError{msg: fmt.Sprintf("cluster %s has no live node in etcd at %s", a.clusterName, strings.Join(a.etcdURLs, ",")), code: exitUnavailable}
}

// byNode groups ids of kind k by the node that issued them, keeping each
// id's index; ids of no live node go under missing, by tag. An id whose
// tag cannot be read goes to the first node, which answers for it.
func (a *app) byNode(ctx context.Context, k handle.Kind, ids []string) (groups map[string][]int, missing map[uint16][]int, err error) {
	nodes, err := a.members(ctx)
	if err != nil {
		return nil, nil, err
	}
	if len(nodes) == 0 {
		return nil, nil, a.noNodes()
	}
	addrOf := make(map[uint16]string, len(nodes))
	for _, n := range nodes {
		addrOf[n.tag] = n.addr
	}
	groups, missing = map[string][]int{}, map[uint16][]int{}
	for i, id := range ids {
		tag, ok := handle.NodeOf(k, id)
		if !ok {
			groups[nodes[0].addr] = append(groups[nodes[0].addr], i)
			continue
		}
		if addr, ok := addrOf[tag]; ok {
			groups[addr] = append(groups[addr], i)
		} else {
			missing[tag] = append(missing[tag], i)
		}
	}
	return groups, missing, nil
}

// describeAt is describe for an error of the node at addr, so that a
// per-node failure says which address it was and why.
func (a *app) describeAt(addr string, err error) string {
	saved := a.addr
	a.addr = addr
	defer func() { a.addr = saved }()
	msg, _ := a.describe(err)
	return msg
}

// fanOut calls f once per node, all at once, and returns the answers and
// errors in the nodes' order. Every node's client is made before the
// first call, so that f may use it from its goroutine.
func fanOut[T any](ctx context.Context, a *app, nodes []member, f func(ctx context.Context, cl *client.Client, n member) (T, error)) ([]T, []error, error) {
	clients := make([]*client.Client, len(nodes))
	for i, n := range nodes {
		cl, err := a.clientAt(n.addr)
		if err != nil {
			return nil, nil, err
		}
		clients[i] = cl
	}
	out := make([]T, len(nodes))
	errs := make([]error, len(nodes))
	done := make(chan struct{}, len(nodes))
	for i, n := range nodes {
		go func() {
			defer func() { done <- struct{}{} }()
			out[i], errs[i] = f(ctx, clients[i], n)
		}()
	}
	for range nodes {
		<-done
	}
	return out, errs, nil
}

// partial is the error of a command that answered for the nodes that
// answered: it lists them, and exits as unreachable.
func (a *app) partial(nodes []member, errs []error, what string) error {
	failed := 0
	for i, err := range errs {
		if err == nil {
			continue
		}
		failed++
		msg := a.describeAt(nodes[i].addr, err)
		fmt.Fprintf(a.stderr, "registryctl: node %d at %s: %s\n", nodes[i].tag, nodes[i].addr, msg)
	}
	if failed == 0 {
		return nil
	}
	return &cmdError{
		msg:  fmt.Sprintf("%d of %d node%s did not answer; %s lacks theirs", failed, len(nodes), plural(len(nodes)), what),
		code: exitUnavailable,
	}
}
