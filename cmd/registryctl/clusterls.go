package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

func (a *app) clusterCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Show the nodes of the cluster --cluster names",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("cluster needs a subcommand: ls")
		},
	}
	cmd.AddCommand(a.clusterLsCommand())
	return cmd
}

// nodeReport is one row of 'cluster ls': what etcd says of a node and
// what the node says of itself. Stats is the node's GetStats answer as
// protojson, absent when it did not answer.
type nodeReport struct {
	Node    uint16          `json:"node"`
	Addr    string          `json:"addr"`
	Epoch   uint64          `json:"epoch,string"`
	Version string          `json:"version"`
	Started time.Time       `json:"started"`
	Health  string          `json:"health"`
	Error   string          `json:"error,omitempty"`
	Stats   json.RawMessage `json:"stats,omitempty"`
}

type clusterReport struct {
	Cluster string       `json:"cluster"`
	Nodes   []nodeReport `json:"nodes"`
}

// nodeState is what one node answered: its figures and its health.
type nodeState struct {
	stats  *registryv1.GetStatsResponse
	health healthpb.HealthCheckResponse_ServingStatus
}

func (a *app) clusterLsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List the cluster's live nodes: address, epoch, uptime, objects, pinned bytes, leases, health",
		Long: `List every node etcd has registered in the cluster, and ask each for its
figures (GetStats) and its gRPC health. A node registered but not
answering is listed as such, with why; the others are listed all the
same, and the command exits with status 4.`,
		Example: `  registryctl --cluster etcd:///registry/prod --etcd-endpoints http://etcd:2379 cluster ls`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !a.clusterMode() {
				return usagef("cluster ls needs --cluster (or REGISTRYCTL_CLUSTER)")
			}
			nodes, err := a.members(cmd.Context())
			if err != nil {
				return err
			}
			states, errs, err := fanOut(cmd.Context(), a, nodes, a.nodeState)
			if err != nil {
				return err
			}
			report := clusterReport{Cluster: a.clusterName, Nodes: make([]nodeReport, len(nodes))}
			for i, n := range nodes {
				r := nodeReport{Node: n.tag, Addr: n.addr, Epoch: n.info.Epoch, Version: n.info.Version, Started: n.info.Started, Health: "UNREACHABLE"}
				if st := states[i]; st.stats != nil {
					r.Health = st.health.String()
					if r.Stats, err = jsonOptions.Marshal(st.stats); err != nil {
						return err
					}
				}
				if errs[i] != nil {
					r.Error = a.describeAt(n.addr, errs[i])
				}
				report.Nodes[i] = r
			}
			if err := a.emitClusterLs(report, states); err != nil {
				return err
			}
			return a.partial(nodes, errs, "the list")
		},
	}
}

// nodeState asks one node for its figures and its health.
func (a *app) nodeState(ctx context.Context, cl *client.Client, _ member) (nodeState, error) {
	ctx, cancel := a.callCtx(ctx)
	defer cancel()
	st, err := registryv1.NewAdminServiceClient(cl.Conn()).GetStats(ctx, &registryv1.GetStatsRequest{})
	if err != nil {
		return nodeState{}, err
	}
	h, err := healthpb.NewHealthClient(cl.Conn()).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return nodeState{stats: st}, err
	}
	return nodeState{stats: st, health: h.GetStatus()}, nil
}

func (a *app) emitClusterLs(report clusterReport, states []nodeState) error {
	if a.output != "table" {
		return a.writeStructured(report)
	}
	if len(report.Nodes) == 0 {
		fmt.Fprintf(a.stderr, "No nodes in cluster %s.\n", report.Cluster)
		return nil
	}
	now := time.Now()
	tw := newTable(a.stdout)
	row(tw, "NODE", "ADDRESS", "EPOCH", "UP", "VERSION", "OBJECTS", "PINNED", "LEASES", "HEALTH")
	for i, r := range report.Nodes {
		up := "-"
		if !r.Started.IsZero() {
			up = shortDuration(now.Sub(r.Started))
		}
		objects, pinned, leases := "-", "-", "-"
		if st := states[i].stats; st != nil {
			o := st.GetObjects()
			objects = fmt.Sprint(o.GetPinned() + o.GetLingering() + o.GetWeak())
			pinned = size(st.GetBytes().GetPinned())
			leases = fmt.Sprint(st.GetLeasesAttached() + st.GetLeasesDetached())
		}
		row(tw, r.Node, r.Addr, r.Epoch, up, orDash(r.Version), objects, pinned, leases, r.Health)
	}
	return tw.Flush()
}
