package membership

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.uber.org/goleak"

	"github.com/weakref/registry/internal/cluster"
	"github.com/weakref/registry/internal/etcdtest"
	"github.com/weakref/registry/internal/netfault"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The embedded etcd server and gRPC keep a few goroutines of
		// their own for a moment after Close.
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
	)
}

const testTTL = 2 * time.Second

// reconnectBound bounds a wait for a node cut off from etcd to reach it
// again: gRPC's reconnect backoff (at most half a TTL), an etcd call's
// timeout, and a loaded machine.
const reconnectBound = 20 * time.Second

var testKey = []byte("0123456789abcdef0123456789abcdef")

// logBuffer is a log a test reads while the membership writes it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var epochs atomic.Uint64

// node is one membership under test, with its log.
type node struct {
	*Membership
	log *logBuffer
}

// newNode returns a membership of cluster "c" for tag at addr through
// etcd at endpoint, not joined yet, closed when t ends.
func newNode(t *testing.T, endpoint string, tag uint16, addr string, key []byte) *node {
	t.Helper()
	lb := &logBuffer{}
	// Distinct between the nodes of a test; 48 bits, as a run's are.
	epoch := uint64(time.Now().UnixMilli())*100 + epochs.Add(1)%100
	m, err := New(Config{
		Endpoints: []string{endpoint},
		Cluster:   "c",
		Member:    cluster.Member{Node: tag, Epoch: epoch, Version: "test", Started: time.Now(), KeyID: cluster.KeyID(key)},
		Addr:      addr,
		TTL:       testTTL,
		Logger:    slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	return &node{Membership: m, log: lb}
}

func joined(t *testing.T, endpoint string, tag uint16, addr string) *node {
	t.Helper()
	n := newNode(t, endpoint, tag, addr, testKey)
	if err := n.Join(ctxT(t)); err != nil {
		t.Fatalf("Join of node %d: %v", tag, err)
	}
	return n
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// crash stops n as a SIGKILL would: no revoke, its keys stay until the TTL.
func (n *node) crash() {
	n.stop()
	n.loops.Wait()
	n.setLease(0)
	_ = n.etcd.Close()
}

// poll waits, up to within, for cond.
func poll(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// keys reads tag's two keys and the leases they are on (0: absent).
func keys(t *testing.T, c *clientv3.Client, tag uint16) (claim, endpoint clientv3.LeaseID) {
	t.Helper()
	for i, key := range []string{cluster.TagKey("c", tag), cluster.NodeKey("c", tag)} {
		resp, err := c.Get(ctxT(t), key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 1 {
			if i == 0 {
				claim = clientv3.LeaseID(resp.Kvs[0].Lease)
			} else {
				endpoint = clientv3.LeaseID(resp.Kvs[0].Lease)
			}
		}
	}
	return claim, endpoint
}

// registered reports whether n's keys are both in etcd on its lease.
func registered(t *testing.T, c *clientv3.Client, n *node) bool {
	claim, endpoint := keys(t, c, n.cfg.Member.Node)
	id := n.Lease()
	return id != 0 && claim == id && endpoint == id
}

func TestJoinClaimsTheTagAndRegistersTheEndpointOnOneLease(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	a := joined(t, e.Endpoint(), 1, "127.0.0.1:7001")
	if !registered(t, c, a) {
		t.Fatal("the claim and the endpoint are not both on the node's lease")
	}
	ttl, err := c.TimeToLive(ctxT(t), a.Lease())
	if err != nil || ttl.GrantedTTL != int64(testTTL/time.Second) {
		t.Fatalf("lease TTL = %v, %v; want %v", ttl.GrantedTTL, err, testTTL)
	}
	if addr, epoch, live := a.Lookup(1); !live || addr != "127.0.0.1:7001" || epoch != a.cfg.Member.Epoch {
		t.Fatalf("Lookup(own tag) = %q %d %v", addr, epoch, live)
	}
	if !strings.Contains(a.log.String(), "joined the cluster") {
		t.Errorf("no join line in the log:\n%s", a.log)
	}
	// etcd's own resolver reads the endpoint: the address, and the member.
	eps, err := a.endpoints.List(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	m, err := cluster.MemberOf(eps[cluster.NodeKey("c", 1)])
	if err != nil || m.Node != 1 || m.Epoch != a.cfg.Member.Epoch || m.KeyID != cluster.KeyID(testKey) {
		t.Fatalf("endpoint member = %+v, %v", m, err)
	}
}

func TestSecondNodeWithTheTagIsRefusedAndChangesNothing(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	a := joined(t, e.Endpoint(), 1, "127.0.0.1:7001")
	b := newNode(t, e.Endpoint(), 1, "127.0.0.1:7002", testKey)
	err := b.Join(ctxT(t))
	var taken *TagTakenError
	if !errors.As(err, &taken) {
		t.Fatalf("Join of a second node with tag 1 = %v, want *TagTakenError", err)
	}
	if taken.Holder.Addr != "127.0.0.1:7001" || taken.Holder.Epoch != a.cfg.Member.Epoch || !taken.Holder.Started.Equal(a.cfg.Member.Started) {
		t.Errorf("holder = %+v, want the first node's address, epoch and start", taken.Holder)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "127.0.0.1:7001") || !strings.Contains(msg, "--node") {
		t.Errorf("error %q: want one line naming the holder and what to do", msg)
	}
	if !registered(t, c, a) {
		t.Error("the first node's keys changed")
	}
	leases, err := c.Leases(ctxT(t))
	if err != nil || len(leases.Leases) != 1 {
		t.Errorf("leases in etcd = %v, %v; want the first node's only", leases, err)
	}
}

func TestNodeWithAnotherKeyIsRefused(t *testing.T) {
	e := etcdtest.Start(t)
	joined(t, e.Endpoint(), 1, "127.0.0.1:7001")
	b := newNode(t, e.Endpoint(), 2, "127.0.0.1:7002", bytes.Repeat([]byte{7}, 32))
	err := b.Join(ctxT(t))
	var mismatch *KeyMismatchError
	if !errors.As(err, &mismatch) || mismatch.Node != 1 || mismatch.Addr != "127.0.0.1:7001" {
		t.Fatalf("Join with another key = %v, want *KeyMismatchError naming node 1", err)
	}
	if strings.Contains(err.Error(), string(testKey)) || !strings.Contains(err.Error(), "--key-file") {
		t.Errorf("error %q: want the flag, never the key", err)
	}
	if claim, endpoint := keys(t, e.Client(t), 2); claim != 0 || endpoint != 0 {
		t.Error("the refused node left keys in etcd")
	}
}

func TestPeersSeeNodesJoinAndLeaveAtOnce(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	a := joined(t, e.Endpoint(), 1, "127.0.0.1:7001")
	b := joined(t, e.Endpoint(), 2, "127.0.0.1:7002")
	if addr, _, live := b.Lookup(1); !live || addr != "127.0.0.1:7001" {
		t.Fatalf("b.Lookup(1) = %q %v right after b joined", addr, live)
	}
	poll(t, 10*time.Second, "a sees b", func() bool {
		addr, epoch, live := a.Lookup(2)
		return live && addr == "127.0.0.1:7002" && epoch == b.cfg.Member.Epoch
	})
	if err := b.Close(ctxT(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if claim, endpoint := keys(t, c, 2); claim != 0 || endpoint != 0 {
		t.Error("Close left keys in etcd")
	}
	// Revoked, not expired: well within the TTL.
	poll(t, testTTL/2, "a sees b leave", func() bool { _, _, live := a.Lookup(2); return !live })
}

func TestCrashedNodeExpiresWithItsTTL(t *testing.T) {
	e := etcdtest.Start(t)
	a := joined(t, e.Endpoint(), 1, "127.0.0.1:7001")
	b := joined(t, e.Endpoint(), 2, "127.0.0.1:7002")
	poll(t, 10*time.Second, "a sees b", func() bool { _, _, live := a.Lookup(2); return live })
	b.crash()
	start := time.Now()
	// etcd checks expiry every 500ms: a TTL and a second bound it.
	poll(t, testTTL+2*time.Second, "a sees the crashed b go", func() bool { _, _, live := a.Lookup(2); return !live })
	t.Logf("gone %s after the crash (TTL %s)", time.Since(start).Round(time.Millisecond), testTTL)
}

func TestEarlierRunAtTheSameAddressIsWaitedOut(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	old := joined(t, e.Endpoint(), 1, "127.0.0.1:7001")
	old.crash()
	again := joined(t, e.Endpoint(), 1, "127.0.0.1:7001") // a new run: another epoch
	if !registered(t, c, again) {
		t.Fatal("the new run is not registered")
	}
	if addr, epoch, live := again.Lookup(1); !live || addr != "127.0.0.1:7001" || epoch != again.cfg.Member.Epoch {
		t.Fatalf("Lookup(1) = %q %d %v, want the new run", addr, epoch, live)
	}
}

// TestRevokedLeaseIsReplaced: a lease lost while etcd answers (revoked by
// an operator, say) is replaced by a new one, the tag claimed again.
func TestRevokedLeaseIsReplaced(t *testing.T) {
	e := etcdtest.Start(t)
	c := e.Client(t)
	a := joined(t, e.Endpoint(), 1, "127.0.0.1:7001")
	first := a.Lease()
	if _, err := c.Revoke(ctxT(t), first); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, "registered again on a new lease", func() bool {
		return a.Lease() != first && registered(t, c, a)
	})
	logs := a.log.String()
	if !strings.Contains(logs, "lost the cluster") || !strings.Contains(logs, "registered again") {
		t.Errorf("want a line on losing the lease and one on registering again:\n%s", logs)
	}
}

// TestNodeCutOffFromEtcdServesOnAndRegistersAgain: a node that cannot
// reach etcd for longer than its TTL is counted gone by its peers, keeps
// what it knew of them, and is registered again once etcd answers; one
// whose tag another process took meanwhile logs it on every retry and
// stays unregistered until the tag is free.
func TestNodeCutOffFromEtcdServesOnAndRegistersAgain(t *testing.T) {
	for _, takenMeanwhile := range []bool{false, true} {
		name := "tag free"
		if takenMeanwhile {
			name = "tag taken meanwhile"
		}
		t.Run(name, func(t *testing.T) {
			e := etcdtest.Start(t)
			c := e.Client(t)
			proxy := netfault.New(t, strings.TrimPrefix(e.Endpoint(), "http://"))
			a := joined(t, "http://"+proxy.Addr(), 1, "127.0.0.1:7001")
			b := joined(t, e.Endpoint(), 2, "127.0.0.1:7002")
			poll(t, 10*time.Second, "a sees b", func() bool { _, _, live := a.Lookup(2); return live })
			first := a.Lease()

			proxy.SetRefuse(true)
			proxy.Drop()
			poll(t, 3*testTTL, "b sees a go", func() bool { _, _, live := b.Lookup(1); return !live })
			poll(t, 3*testTTL, "a notices", func() bool { return strings.Contains(a.log.String(), "lost the cluster") })
			if addr, _, live := a.Lookup(2); !live || addr != "127.0.0.1:7002" {
				t.Errorf("cut off, a forgot b: %q %v", addr, live)
			}
			var thief *node
			if takenMeanwhile {
				if _, err := c.Revoke(ctxT(t), first); err != nil && !strings.Contains(err.Error(), "not found") {
					t.Fatal(err)
				}
				thief = joined(t, e.Endpoint(), 1, "127.0.0.1:7009")
			}
			proxy.SetRefuse(false)
			if !takenMeanwhile {
				poll(t, reconnectBound, "a registered again", func() bool { return registered(t, c, a) })
				poll(t, 10*time.Second, "b sees a back", func() bool { _, _, live := b.Lookup(1); return live })
				return
			}
			poll(t, reconnectBound, "a says the tag is taken", func() bool {
				return strings.Count(a.log.String(), "cannot register again") >= 2
			})
			if a.Lease() != 0 || !registered(t, c, thief) {
				t.Fatal("with its tag taken, a registered anyway, or the thief lost it")
			}
			if addr, _, _ := b.Lookup(1); addr != "127.0.0.1:7009" {
				t.Errorf("b.Lookup(1) = %q, want the thief's address: one node per tag", addr)
			}
			if err := thief.Close(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			poll(t, reconnectBound, "a registered once the tag is free", func() bool { return registered(t, c, a) })
		})
	}
}

// TestEtcdRestartKeepsTheCluster: etcd stopped for longer than the TTL and
// started again: every node is registered again and sees the others.
func TestEtcdRestartKeepsTheCluster(t *testing.T) {
	e := etcdtest.Start(t)
	a := joined(t, e.Endpoint(), 1, "127.0.0.1:7001")
	b := joined(t, e.Endpoint(), 2, "127.0.0.1:7002")
	poll(t, 10*time.Second, "a sees b", func() bool { _, _, live := a.Lookup(2); return live })
	e.Stop()
	// The outage is the test's condition, not a wait for a state.
	time.Sleep(testTTL + time.Second)
	if _, _, live := a.Lookup(2); !live {
		t.Error("while etcd is away, a forgot b")
	}
	e.Restart(t)
	c := e.Client(t)
	poll(t, reconnectBound, "both registered again", func() bool { return registered(t, c, a) && registered(t, c, b) })
	poll(t, 10*time.Second, "each sees the other", func() bool {
		_, _, ab := a.Lookup(2)
		_, _, ba := b.Lookup(1)
		return ab && ba
	})
}

func TestJoinWithoutEtcdFailsNamingIt(t *testing.T) {
	n := newNode(t, "http://127.0.0.1:1", 1, "127.0.0.1:7001", testKey)
	err := n.Join(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("Join through no etcd = %v, want an error naming the endpoint", err)
	}
}

func TestConfigIsChecked(t *testing.T) {
	ok := Config{Endpoints: []string{"http://127.0.0.1:1"}, Cluster: "c", Addr: "127.0.0.1:7001"}
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"no endpoints", func(c *Config) { c.Endpoints = nil }},
		{"bad cluster name", func(c *Config) { c.Cluster = "a/b" }},
		{"no address", func(c *Config) { c.Addr = "" }},
		{"TTL too short", func(c *Config) { c.TTL = time.Second }},
		{"TTL too long", func(c *Config) { c.TTL = MaxTTL + time.Second }},
		{"TTL not whole seconds", func(c *Config) { c.TTL = 2500 * time.Millisecond }},
	} {
		cfg := ok
		tc.edit(&cfg)
		if m, err := New(cfg); err == nil {
			_ = m.Close(context.Background())
			t.Errorf("%s: New accepted it", tc.name)
		}
	}
	m, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Errorf("Close before Join: %v", err)
	}
}

// TestAFreshListReplacesThePeers: when the watch is rebuilt, its list is
// the whole truth; a node that left while it was closed is forgotten, in
// one step.
func TestAFreshListReplacesThePeers(t *testing.T) {
	m, err := New(Config{Endpoints: []string{"http://127.0.0.1:1"}, Cluster: "c", Addr: "127.0.0.1:7001"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	add := func(tag uint16, addr string, epoch uint64) *endpoints.Update {
		return &endpoints.Update{Op: endpoints.Add, Key: cluster.NodeKey("c", tag), Endpoint: cluster.Member{Node: tag, Epoch: epoch}.Endpoint(addr)}
	}
	m.applyPeers([]*endpoints.Update{add(1, "a:1", 10), add(2, "b:1", 20), {Op: endpoints.Add, Key: "registry/c/nodes/x"}})
	m.applyPeers([]*endpoints.Update{{Op: endpoints.Delete, Key: cluster.NodeKey("c", 1)}, add(3, "c:1", 30)})
	if got := m.Peers(); len(got) != 2 || got[2] != (Peer{"b:1", 20}) || got[3] != (Peer{"c:1", 30}) {
		t.Fatalf("after changes: %v", got)
	}
	m.replacePeers([]*endpoints.Update{add(3, "c:2", 31)})
	if got := m.Peers(); len(got) != 1 || got[3] != (Peer{"c:2", 31}) {
		t.Fatalf("after a fresh list: %v, want node 3's new run only", got)
	}
	if _, _, live := m.Lookup(2); live {
		t.Error("node 2, absent from the fresh list, is still live")
	}
}
