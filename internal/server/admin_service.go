package server

import (
	"context"
	"runtime"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/observe"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/telemetry"
	"github.com/weakref/registry/internal/version"
)

// MaxPageSize bounds one ListObjects page.
const MaxPageSize = 1000

// adminService adapts AdminService to the registry and lease packages.
type adminService struct {
	registryv1.UnimplementedAdminServiceServer
	reg     *registry.Registry
	leases  *lease.Manager
	limits  Limits
	obs     *observe.Observer // nil: none
	stall   time.Duration     // see Config.StreamStallTimeout
	uploads *byteBudget       // registryService's, for the figures
}

func (s *adminService) GetStats(ctx context.Context, _ *registryv1.GetStatsRequest) (*registryv1.GetStatsResponse, error) {
	st := s.reg.Stats()
	attached, detached := s.leases.Counts()
	return &registryv1.GetStatsResponse{
		Objects: &registryv1.StateCounts{
			Pinned: st.Objects[registry.Pinned], Lingering: st.Objects[registry.Lingering], Weak: st.Objects[registry.Weak],
		},
		Bytes: &registryv1.StateCounts{
			Pinned: st.Bytes[registry.Pinned], Lingering: st.Bytes[registry.Lingering], Weak: st.Bytes[registry.Weak],
		},
		LeasesAttached:   int64(attached),
		LeasesDetached:   int64(detached),
		Pins:             st.Pins,
		Puts:             st.Puts,
		ResolveHits:      st.ResolveHits,
		ResolveMisses:    st.ResolveMisses,
		CollectedObjects: st.Collected,
		CollectedBytes:   st.CollectedBytes,
		DeletedObjects:   st.Deleted,
		GcCycles:         st.GCCycles,
		Limits:           s.limits.report(st, attached+detached, s.uploads.inUse()),
		EpochStartTime:   timestamppb.New(st.EpochStart),
		Epoch:            st.Epoch,
		Watchers:         int64(st.Watchers),
		Gc:               gcStats(),
		SuspectedLeaks:   st.SuspectedLeaks,
		SoftCache: &registryv1.SoftCacheStats{
			MaxBytes: st.SoftCache.MaxBytes, Bytes: st.SoftCache.Bytes, Objects: st.SoftCache.Objects,
			Hits: st.SoftCache.Hits, Evictions: st.SoftCache.Evictions,
		},
		WatchHistory: &registryv1.WatchHistoryStats{
			Capacity: int64(st.WatchHistory.Capacity), Events: int64(st.WatchHistory.Events),
			OldestSequence: st.WatchHistory.Oldest, NewestSequence: st.WatchHistory.Newest,
		},
		ServerVersion: version.String(),
	}, nil
}

// gcStats reads the Go runtime's collector figures. ReadMemStats stops
// the world for a few microseconds, which an admin call can afford.
func gcStats() *registryv1.GcStats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	out := &registryv1.GcStats{
		HeapAllocBytes:   ms.HeapAlloc,
		NextGcBytes:      ms.NextGC,
		PauseTotal:       durationpb.New(time.Duration(ms.PauseTotalNs)),
		MemoryLimitBytes: debug.SetMemoryLimit(-1), // a negative value only reads it
	}
	if ms.LastGC != 0 {
		out.LastGcTime = timestamppb.New(time.Unix(0, int64(ms.LastGC)))
	}
	return out
}

func (s *adminService) ListObjects(ctx context.Context, req *registryv1.ListObjectsRequest) (*registryv1.ListObjectsResponse, error) {
	if err := registry.ValidateLabels(req.GetLabels()); err != nil {
		return nil, toStatus(err, handle.Object)
	}
	if err := checkEnum("state", req.GetState()); err != nil {
		return nil, toStatus(err, handle.Object)
	}
	f := registry.Filter{State: stateFromProto(req.GetState()), Labels: req.GetLabels(), SuspectedLeaks: req.GetSuspectedLeaks()}
	if req.GetLeaseId() != "" {
		id, err := s.leases.ParseID(req.GetLeaseId())
		if err != nil {
			return nil, toStatus(err, handle.Lease)
		}
		f.Lease = &id
	}
	size := int(req.GetPageSize())
	if size <= 0 {
		size = 100
	}
	size = min(size, MaxPageSize)
	infos, next, err := s.reg.List(f, req.GetPageToken(), size)
	if err != nil {
		return nil, toStatus(err, handle.Object)
	}
	out := &registryv1.ListObjectsResponse{Objects: make([]*registryv1.ObjectInfo, len(infos)), NextPageToken: next}
	for i, in := range infos {
		out.Objects[i] = infoToProto(in)
	}
	return out, nil
}

func (s *adminService) InspectObject(ctx context.Context, req *registryv1.InspectObjectRequest) (*registryv1.InspectObjectResponse, error) {
	id, err := s.reg.Parse(req.GetHandle())
	if err != nil {
		return nil, toStatus(err, handle.Object)
	}
	info, pins, err := s.reg.Inspect(id)
	if err != nil {
		return nil, toStatus(err, handle.Object)
	}
	ids := make([]handle.ID, len(pins))
	for i, p := range pins {
		ids[i] = p.Lease
	}
	clients := s.leases.Clients(ids)
	out := &registryv1.InspectObjectResponse{Info: infoToProto(info), Owner: info.Owner, Pins: make([]*registryv1.PinHolder, len(pins))}
	for i, p := range pins {
		h := clients[p.Lease]
		out.Pins[i] = &registryv1.PinHolder{LeaseId: p.LeaseID, ClientName: h.Client, Identity: h.Identity, PinTime: timestamppb.New(p.Since)}
	}
	return out, nil
}

func (s *adminService) ListLeases(ctx context.Context, _ *registryv1.ListLeasesRequest) (*registryv1.ListLeasesResponse, error) {
	all := s.leases.List()
	out := &registryv1.ListLeasesResponse{Leases: make([]*registryv1.LeaseInfo, len(all))}
	for i, in := range all {
		out.Leases[i] = leaseToProto(in)
	}
	return out, nil
}

func (s *adminService) RevokeLease(ctx context.Context, req *registryv1.RevokeLeaseRequest) (*registryv1.RevokeLeaseResponse, error) {
	n, err := s.leases.Revoke(req.GetLeaseId(), req.GetReason())
	if err != nil {
		return nil, toStatus(err, handle.Lease)
	}
	addEvent(ctx, telemetry.EventLeaseRevoke, func() []attribute.KeyValue {
		return []attribute.KeyValue{telemetry.KeyLeaseID.String(req.GetLeaseId()), telemetry.ReasonAttr(req.GetReason()), telemetry.KeyReleased.Int(n)}
	})
	return &registryv1.RevokeLeaseResponse{Released: int32(n)}, nil
}

func (s *adminService) DeleteObject(ctx context.Context, req *registryv1.DeleteObjectRequest) (*registryv1.DeleteObjectResponse, error) {
	id, err := s.reg.Parse(req.GetHandle())
	if err != nil {
		return nil, toStatus(err, handle.Object)
	}
	info, pins, err := s.reg.Delete(id, req.GetForce())
	if err != nil {
		return nil, toStatus(err, handle.Object)
	}
	s.leases.DropPins(id, pins)
	out := &registryv1.DeleteObjectResponse{Info: infoToProto(info)}
	for _, p := range pins {
		out.ReleasedLeaseIds = append(out.ReleasedLeaseIds, p.LeaseID)
	}
	addEvent(ctx, telemetry.EventDelete, func() []attribute.KeyValue {
		return append(observe.ObjectAttrs(info), telemetry.KeyForce.Bool(req.GetForce()), telemetry.KeyReleased.Int(len(pins)))
	})
	return out, nil
}

func (s *adminService) Collect(ctx context.Context, _ *registryv1.CollectRequest) (*registryv1.CollectResponse, error) {
	end := s.obs.StartCollect(ctx)
	rep := s.reg.Collect()
	end(rep)
	return &registryv1.CollectResponse{
		CollectedObjects: rep.Objects,
		CollectedBytes:   rep.Bytes,
		Duration:         durationpb.New(rep.Duration),
		HeapBeforeBytes:  rep.HeapBefore,
		HeapAfterBytes:   rep.HeapAfter,
	}, nil
}

func (s *adminService) WatchEvents(req *registryv1.WatchEventsRequest, stream grpc.ServerStreamingServer[registryv1.WatchEventsResponse]) error {
	var kinds []registry.EventKind
	for i, k := range req.GetKinds() {
		if err := checkEnum(indexed("kinds", i), k); err != nil {
			return toStatus(err, handle.Object)
		}
		if k == registryv1.EventKind_EVENT_KIND_UNSPECIFIED {
			// It would match no event; an empty list means all.
			return toStatus(fieldErrorf(indexed("kinds", i), "is EVENT_KIND_UNSPECIFIED, which names no kind; leave kinds empty for all"), handle.Object)
		}
		for dk, pk := range eventToProto {
			if pk == k {
				kinds = append(kinds, dk)
			}
		}
	}
	if err := checkWatchEpoch(s.reg, req.GetFromSequence(), req.GetEpoch()); err != nil {
		return toStatus(err, handle.Object)
	}
	sub, err := s.reg.WatchAllFrom(req.GetFromSequence(), kinds...)
	if err != nil {
		return toStatus(err, handle.Object)
	}
	defer sub.Close()
	// Headers now tell the client the watch is in place: every event from
	// here on will reach it.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return streamErr(stream.Context(), err)
	}
	return sendEvents(stream.Context(), stream.Send, s.stall, sub, func(send func(*registryv1.WatchEventsResponse) error) error {
		return pump(stream.Context(), sub, func(ev registry.Event) (bool, error) {
			return true, send(&registryv1.WatchEventsResponse{Event: eventToProtoMsg(ev, s.reg.Epoch())})
		})
	})
}
