package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weakref/registry/internal/cluster"
)

// -mode etcd-members is the capacity model's simulation (docs/CLUSTER.md):
// -n node registrations against a real etcd, made as a registryd makes
// its own (a lease with the TTL, the tag claimed by a create-if-absent
// transaction under it, the endpoint put through naming/endpoints under
// it, the lease kept alive), and -watchers clients watching the endpoints
// as the Go client's routing does. It prints, one "key=value" a line:
//
//	register_all        time to register every node, at -c at once
//	register_p50/p99    one node's registration (grant, claim, endpoint)
//	keepalive_rps       lease renewals answered per second at steady state
//	etcd_keepalive_rps  the same counted by etcd (its LeaseKeepAlive
//	                    messages received), when -etcd-metrics is given
//	watch_initial       time for every watcher to list the nodes
//	fanout_p50/p99/max  from one endpoint put (or delete) to each
//	                    watcher's receipt, over -changes changes
//	fanout_all_p50      from the change to the last watcher's receipt
//	db_size             etcd's database size, and in use, after it all
//	route_bytes_node    heap of one node's entry in a client's routing
//	                    table: its decoded endpoint and an idle
//	                    grpc.ClientConn
//	conn_bytes_node     with -conn-addr, the heap a connected ClientConn
//	                    adds (to a server in another process)
//	etcd_cpu_cores      with -pid (etcd's), the CPU etcd spent in the
//	                    steady state, in cores; etcd_rss its RSS after
//	deregister_all      revoking every lease, as nodes shutting down do
//
// The nodes share -node-clients etcd clients and the watchers
// -watch-clients: a real node or client has its own connection, but the
// requests etcd answers are the same, one per lease or per watch.

type membersParams struct {
	etcd         []string
	metrics      string // etcd's /metrics URL, or ""
	cluster      string
	nodes        int
	watchers     int
	nodeClients  int
	watchClients int
	ttl          time.Duration
	steady       time.Duration
	changes      int
	conc         int
	connAddr     string
	pid          int // etcd's process, whose CPU and RSS are read, or 0
	out          io.Writer
}

func etcdMembers(p membersParams) error {
	switch {
	case p.nodes < 1 || p.nodes > 60000:
		return errors.New("-n: 1 to 60000 nodes")
	case p.ttl < 2*time.Second:
		return errors.New("-ttl: 2s or more (etcd's least TTL is its election timeout's)")
	case p.changes < 1:
		return errors.New("-changes: 1 or more")
	}
	if p.out == nil {
		p.out = os.Stdout
	}
	p.nodeClients = max(1, min(p.nodeClients, p.nodes))
	p.watchClients = max(1, min(p.watchClients, max(p.watchers, 1)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	newClient := func() (*clientv3.Client, error) {
		return clientv3.New(clientv3.Config{Endpoints: p.etcd, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	}
	admin, err := newClient()
	if err != nil {
		return err
	}
	defer admin.Close()
	prefix := "registry/" + p.cluster + "/"
	// A rerun against the same etcd starts from an empty cluster.
	if _, err := admin.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
		return fmt.Errorf("etcd at %v: %w", p.etcd, err)
	}
	fmt.Fprintf(p.out, "etcd-members nodes=%d watchers=%d ttl=%s node_clients=%d watch_clients=%d cluster=%s\n",
		p.nodes, p.watchers, p.ttl, p.nodeClients, p.watchClients, p.cluster)

	ncs := make([]*clientv3.Client, p.nodeClients)
	for i := range ncs {
		if ncs[i], err = newClient(); err != nil {
			return err
		}
		defer ncs[i].Close()
	}

	// Registration, -c nodes at once, as nodes starting together would;
	// each node keeps its lease alive from the moment it has one, as
	// registryd does (clientv3 renews each lease every TTL/3, one
	// LeaseKeepAlive message per lease on its client's stream).
	var renewals, lost atomic.Int64
	kctx, stopKeep := context.WithCancel(ctx)
	defer stopKeep()
	leases := make([]clientv3.LeaseID, p.nodes)
	lat := make([]time.Duration, p.nodes)
	start := time.Now()
	if err := each(p.nodes, p.conc, func(i int) error {
		t0 := time.Now()
		nc := ncs[i%len(ncs)]
		id, err := registerNode(ctx, nc, p.cluster, uint16(i+1), p.ttl)
		leases[i], lat[i] = id, time.Since(t0)
		if err != nil {
			return err
		}
		ch, err := nc.KeepAlive(kctx, id)
		if err != nil {
			return err
		}
		go func() {
			for range ch {
				renewals.Add(1)
			}
			if kctx.Err() == nil {
				lost.Add(1) // the lease expired: etcd did not renew it in time
			}
		}()
		return nil
	}); err != nil {
		return err
	}
	regAll := time.Since(start)
	slices.Sort(lat)
	fmt.Fprintf(p.out, "register_all=%s register_p50=%s register_p99=%s\n", round(regAll), round(pctOf(lat, 0.5)), round(pctOf(lat, 0.99)))

	time.Sleep(p.ttl) // one TTL: every lease's renewals are in their rhythm
	r0, m0, c0, t0 := renewals.Load(), scrapeKeepalives(p.metrics), cpuTicks(p.pid), time.Now()
	time.Sleep(p.steady)
	r1, m1, c1, el := renewals.Load(), scrapeKeepalives(p.metrics), cpuTicks(p.pid), time.Since(t0).Seconds()
	fmt.Fprintf(p.out, "keepalive_rps=%.1f keepalive_rps_per_node=%.3f", float64(r1-r0)/el, float64(r1-r0)/el/float64(p.nodes))
	if m0 >= 0 && m1 >= 0 {
		fmt.Fprintf(p.out, " etcd_keepalive_rps=%.1f", (m1-m0)/el)
	}
	if c0 >= 0 && c1 >= 0 {
		// Linux counts CPU time in ticks of 1/100 s (USER_HZ).
		fmt.Fprintf(p.out, " etcd_cpu_cores=%.4f", float64(c1-c0)/100/el)
	}
	if r, err := rss(p.pid); p.pid > 0 && err == nil {
		fmt.Fprintf(p.out, " etcd_rss=%d", r)
	}
	fmt.Fprintf(p.out, " leases_lost=%d\n", lost.Load())

	if p.watchers > 0 {
		if err := watchFanout(ctx, p, newClient); err != nil {
			return err
		}
	}

	st, err := admin.Status(ctx, p.etcd[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(p.out, "db_size=%d db_size_in_use=%d etcd_version=%s\n", st.DbSize, st.DbSizeInUse, st.Version)

	// The routing table is measured once the keepalives have stopped, so
	// that their answers do not count in its heap: the leases outlive them
	// by two thirds of their TTL at least, plenty for one listing.
	stopKeep()
	if err := routingTable(ctx, admin, p); err != nil {
		return err
	}

	start = time.Now()
	var expired atomic.Int64
	if err := each(p.nodes, p.conc, func(i int) error {
		_, err := ncs[i%len(ncs)].Revoke(ctx, leases[i])
		// rpctypes.ErrLeaseNotFound, by its text: go.etcd.io/etcd/api
		// is only an indirect requirement of this module.
		if err != nil && strings.Contains(err.Error(), "requested lease not found") {
			expired.Add(1) // lost above: its keys went with it
			return nil
		}
		return err
	}); err != nil {
		return err
	}
	fmt.Fprintf(p.out, "deregister_all=%s expired_before=%d\n", round(time.Since(start)), expired.Load())
	left, err := admin.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	if left.Count != 0 {
		return fmt.Errorf("%d keys left under %s after every lease was revoked", left.Count, prefix)
	}
	return nil
}

// registerNode joins node tag as registryd's membership does: a lease, the
// tag's claim if no one holds it, the endpoint; both keys on the lease.
func registerNode(ctx context.Context, c *clientv3.Client, name string, tag uint16, ttl time.Duration) (clientv3.LeaseID, error) {
	g, err := c.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return 0, err
	}
	addr := fmt.Sprintf("node-%d.registry.internal:7600", tag)
	now := time.Now()
	claim, err := json.Marshal(cluster.Claim{Addr: addr, Epoch: uint64(now.UnixNano()), Started: now})
	if err != nil {
		return 0, err
	}
	key := cluster.TagKey(name, tag)
	resp, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(claim), clientv3.WithLease(g.ID))).
		Commit()
	if err != nil {
		return 0, err
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("node tag %d is claimed already", tag)
	}
	m, err := endpoints.NewManager(c, cluster.NodesTarget(name))
	if err != nil {
		return 0, err
	}
	member := cluster.Member{Node: tag, Epoch: uint64(now.UnixNano()), Version: "registrybench", Started: now}
	return g.ID, m.AddEndpoint(ctx, cluster.NodeKey(name, tag), member.Endpoint(addr), clientv3.WithLease(g.ID))
}

// watchFanout starts the watchers, each listing then watching the nodes
// as endpoints.NewWatchChannel does (the Go client's resolver), then makes
// -changes membership changes, alternately a node joining and leaving,
// and times each one's arrival at every watcher.
func watchFanout(ctx context.Context, p membersParams, newClient func() (*clientv3.Client, error)) error {
	wcs := make([]*clientv3.Client, p.watchClients)
	for i := range wcs {
		c, err := newClient()
		if err != nil {
			return err
		}
		defer c.Close()
		wcs[i] = c
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	probe := cluster.NodeKey(p.cluster, uint16(p.nodes+1))
	// seen[w] gets the time watcher w received an update of the probe.
	seen := make([]chan time.Time, p.watchers)
	listed := make(chan struct{}, p.watchers)
	start := time.Now()
	for w := range p.watchers {
		seen[w] = make(chan time.Time, 4)
		m, err := endpoints.NewManager(wcs[w%len(wcs)], cluster.NodesTarget(p.cluster))
		if err != nil {
			return err
		}
		ch, err := m.NewWatchChannel(wctx)
		if err != nil {
			return err
		}
		go func() {
			first := true
			for ups := range ch {
				now := time.Now()
				if first {
					first = false
					listed <- struct{}{}
					if len(ups) == p.nodes {
						continue // the initial list
					}
				}
				for _, u := range ups {
					if u.Key == probe {
						seen[w] <- now
					}
				}
			}
		}()
	}
	for range p.watchers {
		select {
		case <-listed:
		case <-time.After(time.Minute):
			return errors.New("watchers did not list the nodes within a minute")
		}
	}
	fmt.Fprintf(p.out, "watch_initial=%s\n", round(time.Since(start)))
	// The watch itself starts after the list: give etcd's watch streams
	// a moment to be in place before the first change.
	time.Sleep(500 * time.Millisecond)

	ec, err := newClient()
	if err != nil {
		return err
	}
	defer ec.Close()
	m, err := endpoints.NewManager(ec, cluster.NodesTarget(p.cluster))
	if err != nil {
		return err
	}
	var each, last []time.Duration
	for c := range p.changes {
		t0 := time.Now()
		if c%2 == 0 {
			member := cluster.Member{Node: uint16(p.nodes + 1), Version: "registrybench", Started: t0}
			err = m.AddEndpoint(ctx, probe, member.Endpoint("probe.registry.internal:7600"))
		} else {
			err = m.DeleteEndpoint(ctx, probe)
		}
		if err != nil {
			return err
		}
		var worst time.Duration
		for w := range p.watchers {
			select {
			case at := <-seen[w]:
				d := at.Sub(t0)
				each = append(each, d)
				worst = max(worst, d)
			case <-time.After(30 * time.Second):
				return fmt.Errorf("watcher %d did not see change %d within 30s", w, c)
			}
		}
		last = append(last, worst)
	}
	slices.Sort(each)
	slices.Sort(last)
	fmt.Fprintf(p.out, "fanout_p50=%s fanout_p99=%s fanout_max=%s fanout_all_p50=%s changes=%d\n",
		round(pctOf(each, 0.5)), round(pctOf(each, 0.99)), round(each[len(each)-1]), round(pctOf(last, 0.5)), p.changes)
	return nil
}

// routeEntry is what a client's routing table keeps of one node: where it
// is, what it said of itself, and a connection to it.
type routeEntry struct {
	addr   string
	member cluster.Member
	conn   *grpc.ClientConn
}

// routingTable measures a client's routing table of the nodes listed: the
// heap it takes after a collection, per node, with idle (not yet
// connected) connections; with -conn-addr, also the heap a connected
// ClientConn adds.
func routingTable(ctx context.Context, c *clientv3.Client, p membersParams) error {
	m, err := endpoints.NewManager(c, cluster.NodesTarget(p.cluster))
	if err != nil {
		return err
	}
	eps, err := m.List(ctx)
	if err != nil {
		return err
	}
	// Tables of enough entries in all that the heap's noise is small
	// against them: a 3-node table is a few kilobytes.
	reps := max(1, 10000/max(len(eps), 1))
	before := heapAfterGC()
	tables := make([]map[uint16]*routeEntry, reps)
	for r := range tables {
		table := make(map[uint16]*routeEntry, len(eps))
		for _, ep := range eps {
			mb, err := cluster.MemberOf(ep)
			if err != nil {
				return err
			}
			cc, err := grpc.NewClient(ep.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			table[mb.Node] = &routeEntry{addr: strings.Clone(ep.Addr), member: mb, conn: cc}
		}
		tables[r] = table
	}
	after := heapAfterGC()
	entries := reps * len(eps)
	fmt.Fprintf(p.out, "route_bytes_node=%d route_nodes=%d\n", (int64(after)-int64(before))/int64(max(entries, 1)), len(eps))
	for _, table := range tables {
		for _, e := range table {
			_ = e.conn.Close()
		}
	}
	runtime.KeepAlive(tables)
	if p.connAddr == "" {
		return nil
	}
	// Connections to one server, each its own transport: their number
	// need not be the nodes'.
	const k = 100
	before = heapAfterGC()
	conns := make([]*grpc.ClientConn, k)
	for i := range conns {
		cc, err := grpc.NewClient(p.connAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		cc.Connect()
		conns[i] = cc
	}
	for _, cc := range conns {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
			if !cc.WaitForStateChange(cctx, s) {
				cancel()
				return fmt.Errorf("-conn-addr %s: not ready within 10s", p.connAddr)
			}
		}
		cancel()
	}
	after = heapAfterGC()
	fmt.Fprintf(p.out, "conn_bytes_node=%d conns=%d\n", (int64(after)-int64(before))/k, k)
	for _, cc := range conns {
		_ = cc.Close()
	}
	return nil
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// cpuTicks is the user and system CPU time of process pid, in ticks; -1
// without a pid or a Linux /proc.
func cpuTicks(pid int) int64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The fields after the command's ")": state is field 3, utime 14,
	// stime 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return u + s
}

// scrapeKeepalives reads how many LeaseKeepAlive messages etcd has
// received, from its Prometheus metrics; -1 without them.
func scrapeKeepalives(url string) float64 {
	if url == "" {
		return -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return -1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "grpc_server_msg_received_total{") && strings.Contains(line, `grpc_method="LeaseKeepAlive"`) {
			f := strings.Fields(line)
			if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
				return v
			}
		}
	}
	return -1
}

// each runs f(0..n-1), conc at once, and returns the first error.
func each(n, conc int, f func(i int) error) error {
	next := atomic.Int64{}
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range min(conc, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

func pctOf(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(p*float64(len(sorted)-1))]
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Second:
		return d.Round(time.Millisecond)
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
