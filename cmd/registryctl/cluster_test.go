package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/naming/endpoints"

	"github.com/weakref/registry/client"
	"github.com/weakref/registry/internal/cluster"
	"github.com/weakref/registry/internal/etcdtest"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/server"
)

// testNode is one in-process registryd of a test cluster.
type testNode struct {
	tag    uint16
	addr   string
	reg    *registry.Registry
	codec  *handle.Codec
	keeper registry.Holder // pins what the test puts, so that no GC takes it
}

// put stores data on n, pinned by the node's keeper, and returns its handle.
func (n *testNode) put(t *testing.T, data string) string {
	t.Helper()
	return n.putInfo(t, data).Handle
}

func (n *testNode) putInfo(t *testing.T, data string) registry.Info {
	t.Helper()
	info, err := n.reg.Put([]byte(data), registry.Meta{}, &n.keeper)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// testCluster is a real etcd and registryd nodes registered in it as
// registryd's membership registers them: an endpoint under the cluster's
// nodes target with the node's Member as metadata.
type testCluster struct {
	name  string
	etcd  *etcdtest.Server
	nodes []*testNode
}

func (c *testCluster) args(more ...string) []string {
	return append([]string{"--cluster", cluster.Target(c.name), "--etcd-endpoints", c.etcd.Endpoint(), "--timeout", "5s"}, more...)
}

var testKey = bytes.Repeat([]byte{7}, handle.MinKeyLen)

// startCluster starts etcd and one node per tag, all sharing one key.
func startCluster(t *testing.T, tags ...uint16) *testCluster {
	t.Helper()
	c := &testCluster{name: "test", etcd: etcdtest.Start(t)}
	for _, tag := range tags {
		n := serveNode(t, tag)
		c.register(t, n.tag, n.addr, n.reg.Epoch())
		c.nodes = append(c.nodes, n)
	}
	return c
}

func serveNode(t *testing.T, tag uint16) *testNode {
	t.Helper()
	codec, err := handle.NewCodec(handle.Config{Key: testKey, Node: tag})
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(registry.Config{Codec: codec, WatchHistory: 64})
	srv := server.New(server.Config{
		Registry: reg,
		Leases:   lease.New(lease.Config{Codec: codec, Registry: reg}),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	id, name := codec.New(handle.Lease)
	return &testNode{tag: tag, addr: lis.Addr().String(), reg: reg, codec: codec, keeper: registry.Holder{ID: id, LeaseID: name}}
}

// register writes a node's endpoint into etcd.
func (c *testCluster) register(t *testing.T, tag uint16, addr string, epoch uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := endpoints.NewManager(c.etcd.Client(t), cluster.NodesTarget(c.name))
	if err != nil {
		t.Fatal(err)
	}
	member := cluster.Member{Node: tag, Epoch: epoch, Version: "test", Started: time.Now().Add(-90 * time.Second)}
	if err := m.AddEndpoint(ctx, cluster.NodeKey(c.name, tag), member.Endpoint(addr)); err != nil {
		t.Fatal(err)
	}
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

// foreignHandle is a valid handle of a node tag no node of the cluster has.
func foreignHandle(t *testing.T, tag uint16) string {
	t.Helper()
	codec, err := handle.NewCodec(handle.Config{Key: testKey, Node: tag})
	if err != nil {
		t.Fatal(err)
	}
	_, h := codec.New(handle.Object)
	return h
}

func runCtl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// tableRow finds the row of a table whose first cell is first.
func tableRow(out, first string) []string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == first {
			return f
		}
	}
	return nil
}

// objectCounts is every node's object count, to check that a refused
// command changed nothing.
func (c *testCluster) objectCounts() []int64 {
	out := make([]int64, len(c.nodes))
	for i, n := range c.nodes {
		for _, k := range n.reg.Stats().Objects {
			out[i] += k
		}
	}
	return out
}

func TestClusterLsListsEveryNodeAndOneNotAnswering(t *testing.T) {
	c := startCluster(t, 1, 2, 3)
	for i, n := range c.nodes {
		for range i + 1 { // node 1 holds 1 object, node 2 two, node 3 three
			n.put(t, "0123456789")
		}
	}
	c.register(t, 9, deadAddr(t), 42)

	code, out, errOut := runCtl(t, c.args("cluster", "ls")...)
	if code != exitUnavailable {
		t.Fatalf("cluster ls with node 9 down: exit %d, want %d; stderr %q", code, exitUnavailable, errOut)
	}
	if head := tableRow(out, "NODE"); strings.Join(head, " ") != "NODE ADDRESS EPOCH UP VERSION OBJECTS PINNED LEASES HEALTH" {
		t.Errorf("header %q", head)
	}
	for i, n := range c.nodes {
		r := tableRow(out, string(rune('1'+i)))
		want := []string{string(rune('1' + i)), n.addr, itoa(n.reg.Epoch()), r[3], "test", itoa(uint64(i + 1)), itoa(uint64(10 * (i + 1))), "B", "0", "SERVING"}
		if strings.Join(r, " ") != strings.Join(want, " ") || !strings.HasPrefix(r[3], "1m3") {
			t.Errorf("node %d row %q, want %q", n.tag, r, want)
		}
	}
	if r := tableRow(out, "9"); len(r) != 9 || r[2] != "42" || r[5] != "-" || r[8] != "UNREACHABLE" {
		t.Errorf("node 9 row %q, want its epoch 42, no figures and UNREACHABLE", r)
	}
	if !strings.Contains(errOut, "node 9 at ") || !strings.Contains(errOut, "cannot reach registryd") ||
		!strings.Contains(errOut, "1 of 4 nodes did not answer") {
		t.Errorf("stderr %q, want node 9 named as not reachable", errOut)
	}

	code, out, _ = runCtl(t, c.args("cluster", "ls", "-w", "json")...)
	var report struct {
		Cluster string `json:"cluster"`
		Nodes   []struct {
			Node   uint16 `json:"node"`
			Epoch  string `json:"epoch"`
			Health string `json:"health"`
			Error  string `json:"error"`
			Stats  *struct {
				Objects struct {
					Pinned string `json:"pinned"`
				} `json:"objects"`
			} `json:"stats"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &report); err != nil || code != exitUnavailable {
		t.Fatalf("cluster ls -w json: exit %d, %v: %s", code, err, out)
	}
	if report.Cluster != "test" || len(report.Nodes) != 4 {
		t.Fatalf("cluster ls -w json: %+v", report)
	}
	for i, r := range report.Nodes[:3] {
		if r.Health != "SERVING" || r.Stats == nil || r.Stats.Objects.Pinned != itoa(uint64(i+1)) || r.Error != "" {
			t.Errorf("node %d: %+v", r.Node, r)
		}
	}
	if r := report.Nodes[3]; r.Node != 9 || r.Health != "UNREACHABLE" || r.Stats != nil || r.Error == "" || r.Epoch != "42" {
		t.Errorf("node 9: %+v", r)
	}
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestClusterStatsSumsTheNodes(t *testing.T) {
	c := startCluster(t, 1, 2)
	c.nodes[0].put(t, "abc")
	c.nodes[1].put(t, "defg")
	c.nodes[1].put(t, "hi")

	code, out, errOut := runCtl(t, c.args("stats")...)
	if code != exitOK {
		t.Fatalf("stats: exit %d: %s", code, errOut)
	}
	for _, want := range []string{`(?m)^CLUSTER\s+test, 2 nodes, 2 answering$`, `(?m)^1\s+\S+\s+\d+\s+\S+\s+1 \(3 B\)`, `(?m)^2\s+\S+\s+\d+\s+\S+\s+2 \(6 B\)`, `(?m)^all\s+-\s+-\s+-\s+3 \(9 B\)\s+0 \(0 B\)\s+0 \(0 B\)\s+0\s+3\s+0\s+3\s`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("stats lacks %s:\n%s", want, out)
		}
	}
	code, out, _ = runCtl(t, c.args("stats", "-w", "json")...)
	var doc struct {
		Total struct {
			Objects struct{ Pinned string } `json:"objects"`
			Bytes   struct{ Pinned string } `json:"bytes"`
			Puts    string                  `json:"puts"`
		} `json:"total"`
		Nodes []struct {
			Node  uint16          `json:"node"`
			Stats json.RawMessage `json:"stats"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil || code != exitOK {
		t.Fatalf("stats -w json: exit %d, %v: %s", code, err, out)
	}
	if doc.Total.Objects.Pinned != "3" || doc.Total.Bytes.Pinned != "9" || doc.Total.Puts != "3" || len(doc.Nodes) != 2 || len(doc.Nodes[1].Stats) == 0 {
		t.Errorf("stats -w json: %s", out)
	}
}

func TestClusterRoutesHandleCommandsToTheirNode(t *testing.T) {
	c := startCluster(t, 1, 2, 3)
	h1, h2, h3 := c.nodes[0].put(t, "one"), c.nodes[1].put(t, "two"), c.nodes[2].put(t, "three")

	if code, out, errOut := runCtl(t, c.args("get", h2)...); code != exitOK || out != "two" {
		t.Errorf("get %s: exit %d, %q, %s", h2, code, out, errOut)
	}
	if code, out, errOut := runCtl(t, c.args("inspect", h3)...); code != exitOK || !strings.Contains(out, h3) || !strings.Contains(out, "5 bytes") {
		t.Errorf("inspect %s: exit %d, %q, %s", h3, code, out, errOut)
	}
	code, out, errOut := runCtl(t, c.args("stat", h3, h1, h2)...)
	if code != exitOK {
		t.Fatalf("stat: exit %d: %s", code, errOut)
	}
	var order []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		order = append(order, strings.Fields(line)[0])
	}
	if strings.Join(order, " ") != strings.Join([]string{h3, h1, h2}, " ") {
		t.Errorf("stat rows %v, want the order given", order)
	}
	// rm of a pinned object is refused by its node, naming the lease that
	// pins it, and deletes nothing anywhere.
	if code, _, errOut := runCtl(t, c.args("rm", h1)...); code != exitError || !strings.Contains(errOut, "refusing to delete: pinned by 1 lease: "+c.nodes[0].keeper.LeaseID) {
		t.Errorf("rm of pinned %s: exit %d, %s", h1, code, errOut)
	}
	if got := c.objectCounts(); got[0] != 1 || got[1] != 1 || got[2] != 1 {
		t.Errorf("after a refused rm: objects per node %v, want [1 1 1]", got)
	}
	if code, out, errOut := runCtl(t, c.args("rm", "--force", h1)...); code != exitOK || !strings.Contains(out, "deleted "+h1) {
		t.Errorf("rm %s: exit %d, %q, %s", h1, code, out, errOut)
	}
	if got := c.objectCounts(); got[0] != 0 || got[1] != 1 || got[2] != 1 {
		t.Errorf("after rm of node 1's object: objects per node %v, want [0 1 1]", got)
	}
}

func TestClusterRevokesALeaseOnItsNode(t *testing.T) {
	c := startCluster(t, 1, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := client.Dial(c.nodes[1].addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	l, err := cl.Lease(ctx, client.LeaseName("victim"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	if _, err := l.Pin(ctx, c.nodes[1].put(t, "held")); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCtl(t, c.args("leases", "revoke", l.ID())...)
	if code != exitOK || !strings.Contains(out, "revoked "+l.ID()+"; released 1 pin") {
		t.Fatalf("leases revoke: exit %d, %q, %s", code, out, errOut)
	}
	// A lease id of a node etcd does not list: NODE_UNAVAILABLE.
	codec, err := handle.NewCodec(handle.Config{Key: testKey, Node: 9})
	if err != nil {
		t.Fatal(err)
	}
	_, gone := codec.New(handle.Lease)
	code, _, errOut = runCtl(t, c.args("leases", "revoke", gone)...)
	if code != exitUnavailable || !strings.Contains(errOut, "node 9 is not a live member") || !strings.Contains(errOut, "NODE_UNAVAILABLE") {
		t.Errorf("leases revoke of node 9's lease: exit %d, %s", code, errOut)
	}
}

func TestClusterHandleOfNoLiveNodeIsNodeUnavailable(t *testing.T) {
	c := startCluster(t, 1, 2)
	h1 := c.nodes[0].put(t, "one")
	gone := foreignHandle(t, 7)
	before := c.objectCounts()
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"get", []string{"get", gone}, exitUnavailable},
		{"get json", []string{"get", "-w", "json", gone}, exitUnavailable},
		{"inspect", []string{"inspect", gone}, exitUnavailable},
		{"rm", []string{"rm", "--force", gone}, exitUnavailable},
		{"watch", []string{"watch", h1, gone}, exitUnavailable},
		{"hold", []string{"hold", gone}, exitUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runCtl(t, c.args(tt.args...)...)
			if code != tt.code || !strings.Contains(errOut, "node 7 is not a live member of cluster test") || !strings.Contains(errOut, "(NODE_UNAVAILABLE)") {
				t.Errorf("exit %d, stderr %q; want %d and the NODE_UNAVAILABLE message", code, errOut, tt.code)
			}
			if got := c.objectCounts(); got[0] != before[0] || got[1] != before[1] {
				t.Errorf("objects per node %v, were %v", got, before)
			}
		})
	}

	// stat: the handle's row says so, the others answer, and the exit
	// status is NODE_UNAVAILABLE's when every failure is one.
	code, out, _ := runCtl(t, c.args("stat", h1, gone)...)
	if code != exitUnavailable || tableRow(out, h1) == nil || !strings.Contains(tableRow(out, gone)[4], "node") ||
		!strings.HasSuffix(strings.TrimSpace(out), "(NODE_UNAVAILABLE)") {
		t.Errorf("stat of a live and a gone handle: exit %d:\n%s", code, out)
	}
	// A handle that is not one at all gets the node's own answer.
	code, _, errOut := runCtl(t, c.args("get", "obj_bogus")...)
	if code != exitError || !strings.Contains(errOut, "HANDLE_MALFORMED") {
		t.Errorf("get obj_bogus: exit %d, %q; want 1 and HANDLE_MALFORMED", code, errOut)
	}
}

func TestClusterListsAcrossNodes(t *testing.T) {
	c := startCluster(t, 1, 2)
	h1, h2 := c.nodes[0].put(t, "one"), c.nodes[1].put(t, "two")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range c.nodes {
		cl, err := client.Dial(n.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		l, err := cl.Lease(ctx, client.LeaseName("job-"+itoa(uint64(n.tag))))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close(ctx)
	}

	code, out, errOut := runCtl(t, c.args("ls")...)
	if code != exitOK || tableRow(out, "NODE") == nil {
		t.Fatalf("ls: exit %d: %s%s", code, out, errOut)
	}
	for tag, h := range map[string]string{"1": h1, "2": h2} {
		if r := tableRow(out, tag); len(r) < 2 || r[1] != h {
			t.Errorf("ls: node %s row %q, want %s", tag, r, h)
		}
	}
	code, out, errOut = runCtl(t, c.args("ls", "-w", "json")...)
	var list struct {
		Objects []struct{ Handle string } `json:"objects"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || code != exitOK || len(list.Objects) != 2 {
		t.Errorf("ls -w json: exit %d, %v: %s%s", code, err, out, errOut)
	}

	code, out, errOut = runCtl(t, c.args("leases", "ls")...)
	if code != exitOK {
		t.Fatalf("leases ls: exit %d: %s", code, errOut)
	}
	for _, tag := range []string{"1", "2"} {
		if r := tableRow(out, tag); len(r) < 3 || r[2] != "job-"+tag {
			t.Errorf("leases ls: node %s row %q, want its lease job-%s", tag, r, tag)
		}
	}

	// A node that stops answering: the others are still listed.
	c.register(t, 5, deadAddr(t), 1)
	code, out, errOut = runCtl(t, c.args("ls")...)
	if code != exitUnavailable || tableRow(out, "1") == nil || tableRow(out, "2") == nil || !strings.Contains(errOut, "node 5 at") {
		t.Errorf("ls with node 5 down: exit %d: %s%s", code, out, errOut)
	}
}

// syncBuffer is a bytes.Buffer safe to read while the command writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestClusterWatchMergesTheNodes(t *testing.T) {
	c := startCluster(t, 1, 2)
	infos := []registry.Info{c.nodes[0].putInfo(t, "one"), c.nodes[1].putInfo(t, "two")}
	h1, h2 := infos[0].Handle, infos[1].Handle

	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(context.Background(), c.args("watch", "-w", "json", h1, h2), strings.NewReader(""), &stdout, &stderr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "watching") {
		if time.Now().After(deadline) {
			t.Fatalf("watch did not start: %s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i, n := range c.nodes {
		if _, _, err := n.reg.Delete(infos[i].ID, true); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("watch: exit %d: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end once both objects were deleted")
	}
	kinds := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		var ev struct{ Handle, Kind string }
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		kinds[ev.Handle] = append(kinds[ev.Handle], ev.Kind)
	}
	for _, h := range []string{h1, h2} {
		if got := strings.Join(kinds[h], " "); got != "EVENT_KIND_CURRENT EVENT_KIND_DELETED" {
			t.Errorf("events of %s: %s, want CURRENT then DELETED", h, got)
		}
	}
}

func TestClusterCommandLines(t *testing.T) {
	c := startCluster(t, 1, 2)
	// A cluster whose node is off loopback, where a token would go in
	// clear text; it is refused before any connection is made.
	offLoopback := &testCluster{name: "offloop", etcd: c.etcd}
	offLoopback.register(t, 4, "registry.example.org:7600", 1)
	target := cluster.Target(c.name)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"addr and cluster", nil, []string{"--addr", "127.0.0.1:1", "--cluster", "x", "stats"}, exitUsage, "--addr and --cluster name the registry twice"},
		{"both in env", map[string]string{"REGISTRYCTL_ADDR": "127.0.0.1:1", "REGISTRYCTL_CLUSTER": "x"}, []string{"stats"}, exitUsage, "REGISTRYCTL_ADDR and REGISTRYCTL_CLUSTER name the registry twice"},
		{"bad name", nil, []string{"--cluster", "a/b", "stats"}, exitUsage, `cluster name "a/b"`},
		{"bad target", nil, []string{"--cluster", "etcd:///other/x", "stats"}, exitUsage, "want etcd:///registry/NAME"},
		{"no endpoints", nil, []string{"--cluster", "x", "--etcd-endpoints", " , ", "stats"}, exitUsage, "--etcd-endpoints is empty"},
		{"health", nil, []string{"--cluster", target, "--etcd-endpoints", c.etcd.Endpoint(), "health"}, exitUsage, "health with --cluster: 'registryctl cluster ls' shows every node's health"},
		{"put --node without cluster", nil, []string{"put", "--node", "1", "-"}, exitUsage, "--node picks a node of a --cluster"},
		{"put --node out of range", nil, []string{"--cluster", target, "--etcd-endpoints", c.etcd.Endpoint(), "put", "--node", "70000", "-"}, exitUsage, "--node 70000: want a node tag"},
		{"cluster ls without cluster", nil, []string{"cluster", "ls"}, exitUsage, "cluster ls needs --cluster"},
		{"from across nodes", nil, []string{"--cluster", target, "--etcd-endpoints", c.etcd.Endpoint(), "watch", "--from", "3"}, exitUsage, "--from resumes one node's watch"},
		{"token in clear to a node off loopback", nil, []string{"--cluster", "offloop", "--etcd-endpoints", c.etcd.Endpoint(), "--token", "s3cret", "cluster", "ls"}, exitUsage, "--token would be sent in clear text to registry.example.org:7600"},
		{"etcd unreachable", nil, []string{"--cluster", target, "--etcd-endpoints", "http://" + deadAddr(t), "--timeout", "1s", "cluster", "ls"}, exitUnavailable, "cannot read cluster test's nodes from etcd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, msg, _ := runWith(tt.env, tt.args...)
			if code != tt.code || !strings.Contains(msg, tt.want) {
				t.Errorf("exit %d, %q; want %d and %q", code, msg, tt.code, tt.want)
			}
		})
	}

	// The environment twins, and a flag --addr wins over REGISTRYCTL_CLUSTER.
	env := map[string]string{"REGISTRYCTL_CLUSTER": c.name, "REGISTRYCTL_ETCD_ENDPOINTS": c.etcd.Endpoint()}
	if code, msg, a := runWith(env, "cluster", "ls"); code != exitOK || len(a.nodes) != 2 {
		t.Errorf("cluster ls from the environment: exit %d, %s, %d nodes", code, msg, len(a.nodes))
	}
	if code, msg, a := runWith(env, "--addr", c.nodes[1].addr, "stats"); code != exitOK || a.clusterMode() {
		t.Errorf("--addr over REGISTRYCTL_CLUSTER: exit %d, %s, cluster mode %v", code, msg, a.clusterMode())
	}
}

func TestClusterPutPlacesOnANode(t *testing.T) {
	c := startCluster(t, 1, 2)
	c.nodes[0].put(t, strings.Repeat("x", 100)) // node 1 holds more bytes

	put := func(args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := run(context.Background(), c.args(append([]string{"put", "--linger", "1m"}, args...)...), strings.NewReader("payload"), &out, &errb)
		return code, strings.TrimSpace(out.String()), errb.String()
	}
	code, h, errOut := put()
	if tag, ok := handle.NodeOf(handle.Object, h); code != exitOK || !ok || tag != 2 {
		t.Fatalf("put: exit %d, handle %q of node %d, %s; want node 2, which held fewer bytes", code, h, tag, errOut)
	}
	code, h, errOut = put("--node", "1")
	if tag, ok := handle.NodeOf(handle.Object, h); code != exitOK || !ok || tag != 1 {
		t.Fatalf("put --node 1: exit %d, handle %q of node %d, %s", code, h, tag, errOut)
	}
	before := c.objectCounts()
	code, h, errOut = put("--node", "7")
	if code != exitUnavailable || h != "" || !strings.Contains(errOut, "node 7 is not a live member of cluster test") || !strings.Contains(errOut, "NODE_UNAVAILABLE") {
		t.Errorf("put --node 7: exit %d, %q, %s; want NODE_UNAVAILABLE and no handle", code, h, errOut)
	}
	if got := c.objectCounts(); got[0] != before[0] || got[1] != before[1] {
		t.Errorf("put --node 7 stored something: objects per node %v, were %v", got, before)
	}
}

func TestClusterGCCollectsOnEveryNode(t *testing.T) {
	c := startCluster(t, 1, 2)
	for _, n := range c.nodes {
		if _, err := n.reg.Put([]byte("weak and unreferenced"), registry.Meta{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := runCtl(t, c.args("gc")...)
	if code != exitOK || tableRow(out, "1") == nil || tableRow(out, "2") == nil || tableRow(out, "all") == nil {
		t.Fatalf("gc: exit %d:\n%s%s", code, out, errOut)
	}
	// The evidence: each node collected its object, and says so.
	for _, tag := range []string{"1", "2"} {
		if r := tableRow(out, tag); len(r) < 3 || r[2] != "1" {
			t.Errorf("gc: node %s row %q, want 1 object collected", tag, r)
		}
	}
	if r := tableRow(out, "all"); r[2] != "2" {
		t.Errorf("gc: total row %q, want 2 objects collected", r)
	}
	for _, n := range c.nodes {
		if weak := n.reg.Stats().Objects[registry.Weak]; weak != 0 {
			t.Errorf("node %d holds %d weak objects after gc", n.tag, weak)
		}
	}
}
