package server

import (
	"maps"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
)

// clusterAnswer is an answer with its ErrorInfo metadata.
type clusterAnswer struct {
	code   codes.Code
	reason string
	md     map[string]string
}

func statusAnswer(err error) clusterAnswer {
	st := status.Convert(err)
	return clusterAnswer{st.Code(), reasonOf(st), infoOf(st).GetMetadata()}
}

// TestClusterAnswersForAnotherNodesHandle: in a cluster, a handle of a
// live node answers HANDLE_FOREIGN_NODE with the owner's address, of a
// node that is not live NODE_UNAVAILABLE, of a live node's earlier run
// REGISTRY_RESTARTED, on every call that takes a handle, and with the
// same metadata on a stream's per-handle answers as on a status; the
// registry is left as it was. Outside a cluster nothing changes.
func TestClusterAnswersForAnotherNodesHandle(t *testing.T) {
	const live, gone, restarted = 1, 2, 3
	peers := fakePeers{live: {addr: "10.0.0.1:7600"}, restarted: {addr: "10.0.0.3:7600", epoch: 1 << 45}}
	calls := map[string]func(t *testing.T, w *world, h string) clusterAnswer{
		"Resolve": func(t *testing.T, w *world, h string) clusterAnswer {
			_, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: h})
			return statusAnswer(err)
		},
		"Stat": func(t *testing.T, w *world, h string) clusterAnswer {
			_, err := w.e.rs.Stat(ctxT(t), &registryv1.StatRequest{Handle: h})
			return statusAnswer(err)
		},
		"Download": func(t *testing.T, w *world, h string) clusterAnswer {
			stream, err := w.e.rs.Download(ctxT(t), &registryv1.DownloadRequest{Handle: h})
			return statusAnswer(firstEventErr(stream, err))
		},
		"Watch": func(t *testing.T, w *world, h string) clusterAnswer {
			stream, err := w.e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: []string{h}})
			return statusAnswer(firstEventErr(stream, err))
		},
		"InspectObject": func(t *testing.T, w *world, h string) clusterAnswer {
			_, err := w.e.admin.InspectObject(ctxT(t), &registryv1.InspectObjectRequest{Handle: h})
			return statusAnswer(err)
		},
		"DeleteObject": func(t *testing.T, w *world, h string) clusterAnswer {
			_, err := w.e.admin.DeleteObject(ctxT(t), &registryv1.DeleteObjectRequest{Handle: h, Force: true})
			return statusAnswer(err)
		},
		"Lease pin": func(t *testing.T, w *world, h string) clusterAnswer {
			e := w.bystander.pin(h)[0].GetError()
			return clusterAnswer{codes.Code(e.GetCode()), e.GetReason(), e.GetMetadata()}
		},
		"Lease unpin": func(t *testing.T, w *world, h string) clusterAnswer {
			e := w.bystander.unpin(h)[0].GetError()
			return clusterAnswer{codes.Code(e.GetCode()), e.GetReason(), e.GetMetadata()}
		},
		"BatchResolve result": func(t *testing.T, w *world, h string) clusterAnswer {
			e := w.e.batchResolve(t, &registryv1.BatchResolveRequest{Handles: []string{w.pinned, h}})[1].GetError()
			return clusterAnswer{codes.Code(e.GetCode()), e.GetReason(), e.GetMetadata()}
		},
		"BatchStat result": func(t *testing.T, w *world, h string) clusterAnswer {
			resp, err := w.e.rs.BatchStat(ctxT(t), &registryv1.BatchStatRequest{Handles: []string{h}})
			if err != nil {
				t.Fatal(err)
			}
			e := resp.GetResults()[0].GetError()
			return clusterAnswer{codes.Code(e.GetCode()), e.GetReason(), e.GetMetadata()}
		},
	}
	cases := []struct {
		name  string
		peers Peers
		node  uint16
		want  func(w *world, h string) clusterAnswer
	}{
		{"live node: its address", peers, live, func(*world, string) clusterAnswer {
			return clusterAnswer{codes.NotFound, ReasonHandleForeignNode, map[string]string{"node": "1", "owner_addr": "10.0.0.1:7600"}}
		}},
		{"node not live: unavailable", peers, gone, func(*world, string) clusterAnswer {
			return clusterAnswer{codes.Unavailable, ReasonNodeUnavailable, map[string]string{"node": "2"}}
		}},
		{"live node's earlier run: restarted", peers, restarted, func(w *world, _ string) clusterAnswer {
			e := w.e.codec.Epoch()
			return clusterAnswer{codes.NotFound, ReasonRestarted, map[string]string{
				"handle_epoch": strconv.FormatUint(e, 10), "current_epoch": strconv.FormatUint(1<<45, 10),
				"epoch_start_time": time.UnixMilli(1 << 45).UTC().Format(time.RFC3339Nano),
			}}
		}},
		{"no cluster: the node only", nil, gone, func(*world, string) clusterAnswer {
			return clusterAnswer{codes.NotFound, ReasonHandleForeignNode, map[string]string{"node": "2"}}
		}},
	}
	for _, tc := range cases {
		for rpc, call := range calls {
			t.Run(tc.name+"/"+rpc, func(t *testing.T) {
				w := newWorldWith(t, envOptions{peers: tc.peers})
				h := w.nodeHandle(handle.Object, tc.node)
				before := w.snapshot(t)
				got, want := call(t, w, h), tc.want(w, h)
				if got.code != want.code || got.reason != want.reason || !maps.Equal(got.md, want.md) {
					t.Errorf("%s answered %v %s %v, want %v %s %v", rpc, got.code, got.reason, got.md, want.code, want.reason, want.md)
				}
				if after := w.snapshot(t); after != before {
					t.Errorf("%s changed the registry:\nbefore %s\nafter  %s", rpc, before, after)
				}
			})
		}
	}
}
