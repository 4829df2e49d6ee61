package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weakref/registry/internal/etcdtest"
)

// TestEtcdMembersReportsEveryFigure runs the capacity model's simulation
// small against a real etcd: every figure docs/CLUSTER.md quotes is
// printed, no lease is lost, and nothing is left in etcd (the mode checks
// that itself). The figures' values are the benchmark's, not the test's.
func TestEtcdMembersReportsEveryFigure(t *testing.T) {
	if testing.Short() {
		t.Skip("holds leases for a TTL and more")
	}
	srv := etcdtest.Start(t)
	var out bytes.Buffer
	err := etcdMembers(membersParams{
		etcd: srv.Endpoints(), cluster: "test", nodes: 5, watchers: 3, nodeClients: 2, watchClients: 2,
		ttl: 2 * time.Second, steady: 500 * time.Millisecond, changes: 2, conc: 4, out: &out,
	})
	if err != nil {
		t.Fatalf("etcd-members: %v\n%s", err, out.String())
	}
	for _, key := range []string{"register_all", "register_p99", "keepalive_rps", "leases_lost", "watch_initial", "fanout_p50",
		"fanout_all_p50", "db_size", "route_bytes_node", "deregister_all", "expired_before"} {
		if !regexp.MustCompile(`\b` + key + `=\S+`).MatchString(out.String()) {
			t.Errorf("no %s= in\n%s", key, out.String())
		}
	}
	if !strings.Contains(out.String(), "leases_lost=0") || !strings.Contains(out.String(), "route_nodes=5") {
		t.Errorf("a lease was lost, or the routing table lacks a node:\n%s", out.String())
	}
}

func TestPlacementReportsEachPolicy(t *testing.T) {
	var out bytes.Buffer
	if err := placement(&out, 3, 3000, 2); err != nil {
		t.Fatal(err)
	}
	for _, policy := range []string{"round-robin", "random", "two-choices"} {
		if !regexp.MustCompile(`(?m)^` + policy + ` objects_max/mean=\S+ .* bytes_cv=\S+$`).MatchString(out.String()) {
			t.Errorf("no line for %s in\n%s", policy, out.String())
		}
	}
	for _, bad := range [][3]int{{0, 1, 1}, {1, 0, 1}, {1, 1, 0}} {
		if err := placement(&out, bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("placement(%v) did not refuse", bad)
		}
	}
}
