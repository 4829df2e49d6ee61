package e2e

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/cluster"
	"github.com/weakref/registry/internal/etcdtest"
)

// The cluster tests run registryd nodes of cluster clusterName against a
// real etcd in the test process, with a short TTL so that a killed node
// leaves within seconds.
const (
	clusterName = "e2e"
	clusterTTL  = 2 * time.Second
	// ttlBound is how long after its TTL a killed node's keys may linger:
	// etcd checks expiry every 500ms, and a loaded machine is slow.
	ttlBound = 5 * time.Second
)

// clusterNode starts registryd node tag of the cluster in etcd e, with
// key; it logs "registryd serving" only once it has joined.
func clusterNode(t *testing.T, e *etcdtest.Server, key string, tag int, args ...string) *daemon {
	t.Helper()
	return startDaemon(t, append([]string{"--key-file", key, "--node", strconv.Itoa(tag), "--cluster", clusterName,
		"--etcd-endpoints", e.Endpoint(), "--etcd-ttl", clusterTTL.String()}, args...)...)
}

// nodeEndpoint returns the address node tag registered in etcd, "" if none.
func nodeEndpoint(t *testing.T, c *clientv3.Client, tag uint16) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := c.Get(ctx, cluster.NodeKey(clusterName, tag))
	if err != nil || len(resp.Kvs) == 0 {
		return ""
	}
	v := string(resp.Kvs[0].Value)
	_, rest, ok := strings.Cut(v, `"Addr":"`)
	if !ok {
		t.Fatalf("endpoint of node %d: %s", tag, v)
	}
	addr, _, _ := strings.Cut(rest, `"`)
	return addr
}

// TestClusterNodeAnswersWithTheOwnersAddress: three nodes with one key;
// a raw Resolve of each node's handle sent to the two others answers
// HANDLE_FOREIGN_NODE with the owner's advertised address, as a client
// that knows nothing of etcd can follow.
func TestClusterNodeAnswersWithTheOwnersAddress(t *testing.T) {
	e := etcdtest.Start(t)
	key := writeKeyFile(t)
	nodes := []*daemon{clusterNode(t, e, key, 1), clusterNode(t, e, key, 2), clusterNode(t, e, key, 3)}
	etcd := e.Client(t)
	clients := make([]*client, len(nodes))
	handles := make([]string, len(nodes))
	for i, d := range nodes {
		if got := nodeEndpoint(t, etcd, uint16(i+1)); got != d.Addr {
			t.Fatalf("node %d registered %q, serves on %s", i+1, got, d.Addr)
		}
		if !strings.Contains(d.Stderr(), `msg="joined the cluster"`) {
			t.Errorf("node %d logged no join line:\n%s", i+1, d.Stderr())
		}
		clients[i] = dial(t, d.Addr)
		handles[i] = put(t, clients[i], []byte("held by node "+strconv.Itoa(i+1)), "")
	}
	for i := range nodes {
		for j := range nodes {
			if i == j {
				continue
			}
			// Node i learns of a later node j through its watch.
			var info map[string]string
			poll(t, waitTimeout, "node "+strconv.Itoa(i+1)+" knows node "+strconv.Itoa(j+1), func() bool {
				_, err := clients[i].reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: handles[j]})
				if _, ei := errorInfo(err); ei != nil && ei.GetReason() == "HANDLE_FOREIGN_NODE" {
					info = ei.GetMetadata()
				}
				return info["owner_addr"] != ""
			})
			_, err := clients[i].reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: handles[j]})
			md := wantStatus(t, err, codes.NotFound, "HANDLE_FOREIGN_NODE").GetMetadata()
			if md["owner_addr"] != nodes[j].Addr || md["node"] != strconv.Itoa(j+1) {
				t.Errorf("node %d on node %d's handle: metadata %v, want node %d at %s", i+1, j+1, md, j+1, nodes[j].Addr)
			}
		}
	}
	// Following owner_addr reaches the bytes.
	_, err := clients[0].reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: handles[2]})
	owner := dial(t, wantStatus(t, err, codes.NotFound, "HANDLE_FOREIGN_NODE").GetMetadata()["owner_addr"])
	wantResolves(t, owner, handles[2], []byte("held by node 3"))

	// A node stopped with SIGTERM leaves before it drains: its endpoint is
	// gone at once, not a TTL later, and the others say so.
	stopped := time.Now()
	if code := nodes[2].stop(t); code != 0 {
		t.Fatalf("node 3 exited %d on SIGTERM", code)
	}
	if got := nodeEndpoint(t, etcd, 3); got != "" {
		t.Fatalf("node 3 stopped, its endpoint %q is still in etcd", got)
	}
	poll(t, clusterTTL, "node 1 answers NODE_UNAVAILABLE for the stopped node 3", func() bool {
		_, err := clients[0].reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: handles[2]})
		_, info := errorInfo(err)
		return info.GetReason() == "NODE_UNAVAILABLE"
	})
	t.Logf("node 1 counted node 3 gone %s after its SIGTERM", time.Since(stopped).Round(time.Millisecond))
	if !strings.Contains(nodes[2].Stderr(), `msg="left the cluster"`) {
		t.Errorf("node 3 logged no line on leaving:\n%s", nodes[2].Stderr())
	}
}

// TestSecondNodeWithATakenTagRefusesToStart: one line, exit status 1, and
// the first node stays registered.
func TestSecondNodeWithATakenTagRefusesToStart(t *testing.T) {
	e := etcdtest.Start(t)
	key := writeKeyFile(t)
	first := clusterNode(t, e, key, 1)
	second := launch(t, []string{"--addr", "127.0.0.1:0", "--key-file", key, "--node", "1", "--cluster", clusterName,
		"--etcd-endpoints", e.Endpoint(), "--etcd-ttl", clusterTTL.String()}, nil)
	second.watchStderr(nil)
	if code := second.waitExit(t, startTimeout); code == 0 {
		t.Fatalf("the second node with tag 1 exited 0\nstderr:\n%s", second.Stderr())
	}
	lines := strings.Split(strings.TrimSpace(second.Stderr()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "node tag 1") || !strings.Contains(lines[0], first.Addr) {
		t.Fatalf("stderr:\n%s\nwant one line naming tag 1 and its holder at %s", second.Stderr(), first.Addr)
	}
	t.Logf("the refused node said: %s", lines[0])
	if got := nodeEndpoint(t, e.Client(t), 1); got != first.Addr {
		t.Errorf("tag 1's endpoint is %q, want the first node's %s", got, first.Addr)
	}
}

// TestKilledNodeIsUnavailableThenRestarted: a node killed with SIGKILL
// leaves etcd within its TTL and a bound; meanwhile another node answers
// NODE_UNAVAILABLE for its handles, and serves its own. Restarted with
// the same tag it rejoins, and its old handles answer REGISTRY_RESTARTED,
// from it and from the others.
func TestKilledNodeIsUnavailableThenRestarted(t *testing.T) {
	e := etcdtest.Start(t)
	key := writeKeyFile(t)
	a, b := clusterNode(t, e, key, 1), clusterNode(t, e, key, 2)
	ca, cb := dial(t, a.Addr), dial(t, b.Addr)
	la := openLease(t, ca, &registryv1.OpenLease{ClientName: "e2e-cluster"})
	mine := put(t, ca, []byte("node 1's"), la.ID())
	theirs := put(t, cb, []byte("node 2's"), "")
	poll(t, waitTimeout, "node 1 knows node 2", func() bool {
		_, err := ca.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: theirs})
		_, info := errorInfo(err)
		return info.GetMetadata()["owner_addr"] == b.Addr
	})

	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	b.waitExit(t, stopTimeout)
	killed := time.Now()
	etcd := e.Client(t)
	poll(t, clusterTTL+ttlBound, "node 2's endpoint gone from etcd", func() bool { return nodeEndpoint(t, etcd, 2) == "" })
	t.Logf("node 2 left etcd %s after SIGKILL (TTL %s)", time.Since(killed).Round(time.Millisecond), clusterTTL)
	poll(t, waitTimeout, "node 1 answers NODE_UNAVAILABLE", func() bool {
		_, err := ca.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: theirs})
		_, info := errorInfo(err)
		return info.GetReason() == "NODE_UNAVAILABLE"
	})
	_, err := ca.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: theirs})
	if md := wantStatus(t, err, codes.Unavailable, "NODE_UNAVAILABLE").GetMetadata(); md["node"] != "2" {
		t.Errorf("metadata %v, want node 2", md)
	}
	wantResolves(t, ca, mine, []byte("node 1's"))

	again := clusterNode(t, e, key, 2)
	if got := nodeEndpoint(t, etcd, 2); got != again.Addr {
		t.Fatalf("the restarted node 2 registered %q, serves on %s", got, again.Addr)
	}
	_, err = dial(t, again.Addr).reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: theirs})
	wantStatus(t, err, codes.NotFound, "REGISTRY_RESTARTED")
	poll(t, waitTimeout, "node 1 answers REGISTRY_RESTARTED for the old run's handle", func() bool {
		_, err := ca.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: theirs})
		_, info := errorInfo(err)
		return info.GetReason() == "REGISTRY_RESTARTED"
	})
	wantResolves(t, ca, mine, []byte("node 1's"))
}

// TestEtcdOutageKeepsNodesServing: etcd stopped for 10 s, five TTLs: the
// nodes serve what they hold throughout (Resolve works, the lease holds
// its pin, a foreign handle still names its owner), say they lost the
// cluster, and register again once etcd is back.
func TestEtcdOutageKeepsNodesServing(t *testing.T) {
	e := etcdtest.Start(t)
	key := writeKeyFile(t)
	a, b := clusterNode(t, e, key, 1), clusterNode(t, e, key, 2)
	ca, cb := dial(t, a.Addr), dial(t, b.Addr)
	la := openLease(t, ca, &registryv1.OpenLease{ClientName: "e2e-outage"})
	h := put(t, ca, []byte("kept through the outage"), la.ID())
	poll(t, waitTimeout, "node 2 knows node 1", func() bool {
		_, err := cb.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: h})
		_, info := errorInfo(err)
		return info.GetMetadata()["owner_addr"] == a.Addr
	})

	e.Stop()
	// The outage is the test's own condition: 10 s, checked as it runs.
	end := time.Now().Add(10 * time.Second)
	for time.Now().Before(end) {
		wantResolves(t, ca, h, []byte("kept through the outage"))
		_, err := cb.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: h})
		if md := wantStatus(t, err, codes.NotFound, "HANDLE_FOREIGN_NODE").GetMetadata(); md["owner_addr"] != a.Addr {
			t.Fatalf("node 2, cut off from etcd, answers %v for node 1's handle", md)
		}
		time.Sleep(time.Second)
	}
	for _, d := range []*daemon{a, b} {
		if !strings.Contains(d.Stderr(), "lost the cluster") {
			t.Errorf("node at %s logged no line on losing etcd:\n%s", d.Addr, d.Stderr())
		}
	}
	wantStat(t, ca, h, registryv1.ObjectState_OBJECT_STATE_PINNED, 1)

	e.Restart(t)
	back := time.Now()
	for _, d := range []*daemon{a, b} {
		poll(t, 2*clusterTTL+ttlBound, "a line on registering again", func() bool { return strings.Contains(d.Stderr(), "registered again") })
	}
	t.Logf("both nodes registered again within %s of etcd's return (TTL %s)", time.Since(back).Round(time.Millisecond), clusterTTL)
	etcd := e.Client(t)
	if nodeEndpoint(t, etcd, 1) != a.Addr || nodeEndpoint(t, etcd, 2) != b.Addr {
		t.Fatal("registered again, and not both in etcd")
	}
	wantResolves(t, ca, h, []byte("kept through the outage"))
}

// TestNodeRestartedAtOnceWaitsOutItsOldClaim: a node killed and started
// again at once at the same address, as a supervisor does, finds its tag
// still claimed by its killed run; it waits that claim out (at most a
// TTL) and joins, where a node at another address would be refused.
func TestNodeRestartedAtOnceWaitsOutItsOldClaim(t *testing.T) {
	e := etcdtest.Start(t)
	key := writeKeyFile(t)
	first := clusterNode(t, e, key, 1)
	addr := first.Addr
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.waitExit(t, stopTimeout)
	killed := time.Now()
	again := clusterNode(t, e, key, 1, "--addr", addr) // the later --addr wins
	if again.Addr != addr {
		t.Fatalf("restarted on %s, want %s", again.Addr, addr)
	}
	if !strings.Contains(again.Stderr(), "waiting for an earlier run's claim") {
		t.Errorf("no line on waiting for the old claim:\n%s", again.Stderr())
	}
	t.Logf("joined %s after the kill (TTL %s)", time.Since(killed).Round(time.Millisecond), clusterTTL)
	if got := nodeEndpoint(t, e.Client(t), 1); got != addr {
		t.Fatalf("tag 1's endpoint is %q, want %s", got, addr)
	}
}
