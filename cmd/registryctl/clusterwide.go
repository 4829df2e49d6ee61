package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
)

// The commands about the whole registry, with --cluster: each asks every
// live node at once, then adds up (stats) or concatenates (ls, leases ls)
// what the nodes answered, in the order of their tags. A node that did not
// answer is named on stderr and the command exits with status 4, after
// printing what the others said.

// nodePart is what every node's part of an answer across the cluster
// says of the node, for json and yaml: which, where, and why it did not
// answer.
type nodePart struct {
	Node  uint16 `json:"node"`
	Addr  string `json:"addr"`
	Error string `json:"error,omitempty"`
}

// nodeParts is each node's part of the answers all (errs[i] where node i
// did not answer), its answer as protojson, wrapped by wrap.
func nodeParts[T proto.Message, P any](a *app, nodes []member, all []T, errs []error, wrap func(nodePart, json.RawMessage) P) ([]P, error) {
	out := make([]P, len(nodes))
	for i, n := range nodes {
		part, raw := nodePart{Node: n.tag, Addr: n.addr}, json.RawMessage(nil)
		if errs[i] != nil {
			part.Error = a.describeAt(n.addr, errs[i])
		} else {
			var err error
			if raw, err = jsonOptions.Marshal(all[i]); err != nil {
				return nil, err
			}
		}
		out[i] = wrap(part, raw)
	}
	return out, nil
}

// writeStructured writes v as --output asks, json or yaml.
func (a *app) writeStructured(v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return encodeJSON(a.stdout, raw, a.output, false)
}

// nodeStats is one node's part of the cluster's stats, for json and yaml.
type nodeStats struct {
	nodePart
	Stats json.RawMessage `json:"stats,omitempty"`
}

type clusterStats struct {
	Cluster string          `json:"cluster"`
	Total   json.RawMessage `json:"total"`
	Nodes   []nodeStats     `json:"nodes"`
}

func (a *app) clusterStats(ctx context.Context) error {
	nodes, err := a.members(ctx)
	if err != nil {
		return err
	}
	all, errs, err := fanOut(ctx, a, nodes, func(ctx context.Context, cl *client.Client, _ member) (*registryv1.GetStatsResponse, error) {
		ctx, cancel := a.callCtx(ctx)
		defer cancel()
		return registryv1.NewAdminServiceClient(cl.Conn()).GetStats(ctx, &registryv1.GetStatsRequest{})
	})
	if err != nil {
		return err
	}
	total := sumStats(all)
	if a.output != "table" {
		out := clusterStats{Cluster: a.clusterName}
		if out.Total, err = jsonOptions.Marshal(total); err != nil {
			return err
		}
		if out.Nodes, err = nodeParts(a, nodes, all, errs, func(p nodePart, raw json.RawMessage) nodeStats { return nodeStats{p, raw} }); err != nil {
			return err
		}
		if err := a.writeStructured(out); err != nil {
			return err
		}
	} else {
		tw := newTable(a.stdout)
		clusterStatsTable(tw, a.clusterName, nodes, all, total, time.Now())
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return a.partial(nodes, errs, "the sum")
}

// sumStats adds up the counters of the nodes that answered. What is one
// node's own (epoch, version, limits, GC figures, watch history) has no
// sum and stays empty.
func sumStats(all []*registryv1.GetStatsResponse) *registryv1.GetStatsResponse {
	t := &registryv1.GetStatsResponse{Objects: &registryv1.StateCounts{}, Bytes: &registryv1.StateCounts{}, ResolveMisses: map[string]int64{}}
	for _, s := range all {
		if s == nil {
			continue
		}
		addCounts(t.Objects, s.GetObjects())
		addCounts(t.Bytes, s.GetBytes())
		t.LeasesAttached += s.GetLeasesAttached()
		t.LeasesDetached += s.GetLeasesDetached()
		t.Pins += s.GetPins()
		t.Puts += s.GetPuts()
		t.ResolveHits += s.GetResolveHits()
		for r, n := range s.GetResolveMisses() {
			t.ResolveMisses[r] += n
		}
		t.CollectedObjects += s.GetCollectedObjects()
		t.CollectedBytes += s.GetCollectedBytes()
		t.DeletedObjects += s.GetDeletedObjects()
		t.GcCycles += s.GetGcCycles()
		t.Watchers += s.GetWatchers()
		t.SuspectedLeaks += s.GetSuspectedLeaks()
	}
	return t
}

func addCounts(t, s *registryv1.StateCounts) {
	t.Pinned += s.GetPinned()
	t.Lingering += s.GetLingering()
	t.Weak += s.GetWeak()
}

func clusterStatsTable(w io.Writer, name string, nodes []member, all []*registryv1.GetStatsResponse, total *registryv1.GetStatsResponse, now time.Time) {
	answered := 0
	for _, s := range all {
		if s != nil {
			answered++
		}
	}
	row(w, "CLUSTER", fmt.Sprintf("%s, %d node%s, %d answering", name, len(nodes), plural(len(nodes)), answered))
	row(w)
	row(w, "NODE", "ADDRESS", "EPOCH", "UP", "PINNED", "LINGERING", "WEAK", "LEASES", "PINS", "WATCHERS", "PUTS", "COLLECTED")
	line := func(tag, addr, epoch, up string, s *registryv1.GetStatsResponse) {
		o, b := s.GetObjects(), s.GetBytes()
		row(w, tag, addr, epoch, up,
			fmt.Sprintf("%d (%s)", o.GetPinned(), size(b.GetPinned())),
			fmt.Sprintf("%d (%s)", o.GetLingering(), size(b.GetLingering())),
			fmt.Sprintf("%d (%s)", o.GetWeak(), size(b.GetWeak())),
			s.GetLeasesAttached()+s.GetLeasesDetached(), s.GetPins(), s.GetWatchers(), s.GetPuts(),
			fmt.Sprintf("%d (%s)", s.GetCollectedObjects(), size(s.GetCollectedBytes())))
	}
	for i, n := range nodes {
		s := all[i]
		if s == nil {
			row(w, n.tag, n.addr, n.info.Epoch, "-", "not answering", "-", "-", "-", "-", "-", "-", "-")
			continue
		}
		line(fmt.Sprint(n.tag), n.addr, fmt.Sprint(s.GetEpoch()), age(s.GetEpochStartTime(), now), s)
	}
	line("all", "-", "-", "-", total)
}

// clusterLs lists objects of every node (or, with --lease, of the lease's
// node), each node's pages up to limit, and then at most limit in all.
func (a *app) clusterLs(ctx context.Context, req *registryv1.ListObjectsRequest, limit int) ([]member, *registryv1.ListObjectsResponse, []error, error) {
	nodes, err := a.members(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	if req.GetLeaseId() != "" {
		n, err := a.nodeFor(ctx, handle.Lease, req.GetLeaseId())
		if err != nil {
			return nil, nil, nil, opErr(req.GetLeaseId(), err)
		}
		nodes = []member{n}
	}
	pages, errs, err := fanOut(ctx, a, nodes, func(ctx context.Context, cl *client.Client, _ member) (*registryv1.ListObjectsResponse, error) {
		r := &registryv1.ListObjectsRequest{State: req.GetState(), Labels: req.GetLabels(), LeaseId: req.GetLeaseId(), SuspectedLeaks: req.GetSuspectedLeaks()}
		return a.listAll(ctx, registryv1.NewAdminServiceClient(cl.Conn()), r, limit)
	})
	if err != nil {
		return nil, nil, nil, err
	}
	all := &registryv1.ListObjectsResponse{}
	for _, p := range pages {
		all.Objects = append(all.Objects, p.GetObjects()...)
		if p.GetNextPageToken() != "" {
			all.NextPageToken = "more" // only "there are more" is shown
		}
	}
	if limit > 0 && len(all.Objects) > limit {
		all.Objects, all.NextPageToken = all.Objects[:limit], "more"
	}
	return nodes, all, errs, nil
}

// clusterLeases lists the leases of every node.
func (a *app) clusterLeases(ctx context.Context) ([]member, *registryv1.ListLeasesResponse, []error, error) {
	nodes, err := a.members(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	lists, errs, err := fanOut(ctx, a, nodes, func(ctx context.Context, cl *client.Client, _ member) (*registryv1.ListLeasesResponse, error) {
		ctx, cancel := a.callCtx(ctx)
		defer cancel()
		return registryv1.NewAdminServiceClient(cl.Conn()).ListLeases(ctx, &registryv1.ListLeasesRequest{})
	})
	if err != nil {
		return nil, nil, nil, err
	}
	all := &registryv1.ListLeasesResponse{}
	for _, l := range lists {
		all.Leases = append(all.Leases, l.GetLeases()...)
	}
	return nodes, all, errs, nil
}

// nodeColumn is the node tag of a handle or lease id, for the NODE column
// of listings across the cluster.
func nodeColumn(k handle.Kind, id string) string {
	if tag, ok := handle.NodeOf(k, id); ok {
		return fmt.Sprint(tag)
	}
	return "-"
}

// nodeCollect is one node's part of a collection across the cluster.
type nodeCollect struct {
	nodePart
	Collect json.RawMessage `json:"collect,omitempty"`
}

// clusterGC forces a collection on every node at once.
func (a *app) clusterGC(ctx context.Context) error {
	nodes, err := a.members(ctx)
	if err != nil {
		return err
	}
	all, errs, err := fanOut(ctx, a, nodes, func(ctx context.Context, cl *client.Client, _ member) (*registryv1.CollectResponse, error) {
		ctx, cancel := a.callCtx(ctx)
		defer cancel()
		return registryv1.NewAdminServiceClient(cl.Conn()).Collect(ctx, &registryv1.CollectRequest{})
	})
	if err != nil {
		return err
	}
	if a.output != "table" {
		out := struct {
			Cluster string        `json:"cluster"`
			Nodes   []nodeCollect `json:"nodes"`
		}{Cluster: a.clusterName}
		if out.Nodes, err = nodeParts(a, nodes, all, errs, func(p nodePart, raw json.RawMessage) nodeCollect { return nodeCollect{p, raw} }); err != nil {
			return err
		}
		if err := a.writeStructured(out); err != nil {
			return err
		}
	} else {
		tw := newTable(a.stdout)
		row(tw, "NODE", "ADDRESS", "COLLECTED", "BYTES", "TOOK", "HEAP")
		var objects, bytes int64
		for i, n := range nodes {
			r := all[i]
			if r == nil {
				row(tw, n.tag, n.addr, "not answering", "-", "-", "-")
				continue
			}
			objects += r.GetCollectedObjects()
			bytes += r.GetCollectedBytes()
			row(tw, n.tag, n.addr, r.GetCollectedObjects(), size(r.GetCollectedBytes()), r.GetDuration().AsDuration().Round(time.Microsecond),
				size(int64(r.GetHeapBeforeBytes()))+" -> "+size(int64(r.GetHeapAfterBytes())))
		}
		row(tw, "all", "-", objects, size(bytes), "-", "-")
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return a.partial(nodes, errs, "the collection")
}

// placeNode picks the node a put goes to: tag's with --node, else the
// node holding the fewest bytes (pinned, lingering and weak, from each
// node's GetStats) among those that answer, the lowest tag on a tie. A
// single put can afford asking every node; the Go client places its own
// puts by its own policy.
func (a *app) placeNode(ctx context.Context, tag int) error {
	nodes, err := a.members(ctx)
	if err != nil {
		return err
	}
	if tag >= 0 {
		for _, n := range nodes {
			if int(n.tag) == tag {
				a.addr = n.addr
				return nil
			}
		}
		return a.nodeUnavailable(uint16(tag))
	}
	all, _, err := fanOut(ctx, a, nodes, func(ctx context.Context, cl *client.Client, _ member) (*registryv1.GetStatsResponse, error) {
		ctx, cancel := a.callCtx(ctx)
		defer cancel()
		return registryv1.NewAdminServiceClient(cl.Conn()).GetStats(ctx, &registryv1.GetStatsRequest{})
	})
	if err != nil {
		return err
	}
	best, least := -1, int64(0)
	for i, st := range all {
		if st == nil {
			continue
		}
		b := st.GetBytes()
		if held := b.GetPinned() + b.GetLingering() + b.GetWeak(); best < 0 || held < least {
			best, least = i, held
		}
	}
	if best < 0 {
		return &cmdError{msg: fmt.Sprintf("no node of cluster %s answers; nowhere to put", a.clusterName), code: exitUnavailable}
	}
	a.addr = nodes[best].addr
	return nil
}
