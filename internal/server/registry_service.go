package server

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/observe"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/telemetry"
)

// MaxHandlesPerRequest bounds the handles of one Pin, Unpin or Watch, so
// that one message cannot hold a lock or a buffer for long.
const MaxHandlesPerRequest = 1000

// registryService adapts RegistryService to the registry and lease
// packages.
type registryService struct {
	registryv1.UnimplementedRegistryServiceServer
	reg     *registry.Registry
	leases  *lease.Manager
	tel     *telemetry.Telemetry // nil: none
	limits  Limits
	stall   time.Duration // see Config.StreamStallTimeout
	uploads *byteBudget   // bytes uploads in flight hold; shared with adminService
	// identity are the limits per identity (identity_limits.go).
	identity *identityLimits
	// work serves the lease streams' requests and sends their answers
	// (see pool).
	work pool
}

// linger caps the linger a request asks for at the server's maximum.
// checkDuration has refused a negative or invalid one.
func (s *registryService) linger(d *durationpb.Duration) time.Duration {
	return min(max(d.AsDuration(), 0), s.limits.MaxLinger)
}

func (s *registryService) Put(ctx context.Context, req *registryv1.PutRequest) (*registryv1.PutResponse, error) {
	if err := checkDuration("linger", req.GetLinger()); err != nil {
		return nil, toStatus(err, handle.Object)
	}
	if err := checkMaxBytes("content_type", req.GetContentType(), MaxContentTypeBytes); err != nil {
		return nil, toStatus(err, handle.Object)
	}
	who := auth.FromContext(ctx)
	meta := registry.Meta{ContentType: req.GetContentType(), Labels: req.GetLabels(), Linger: s.linger(req.GetLinger()), Owner: who.Name}
	var (
		info registry.Info
		err  error
	)
	if req.GetLeaseId() != "" {
		info, err = s.leases.Put(who, req.GetLeaseId(), req.GetData(), meta)
	} else {
		info, err = s.reg.Put(req.GetData(), meta, nil)
	}
	if err != nil {
		return nil, toStatus(err, handle.Object)
	}
	addEvent(ctx, telemetry.EventPut, func() []attribute.KeyValue { return putAttrs(info, req.GetLeaseId()) })
	return putResponse(info), nil
}

func (s *registryService) Resolve(ctx context.Context, req *registryv1.ResolveRequest) (*registryv1.ResolveResponse, error) {
	if req.GetLeaseId() != "" {
		// Refuse an object too large for one message before pinning it:
		// an error must leave nothing pinned. (Its size never changes.)
		if info, err := s.reg.Stat(req.GetHandle()); err == nil {
			if err := s.tooLargeForMessage(info.Size); err != nil {
				return nil, toStatus(err, handle.Object)
			}
		}
	}
	obj, err := s.resolve(auth.FromContext(ctx), req.GetHandle(), req.GetLeaseId())
	addEvent(ctx, telemetry.EventResolve, func() []attribute.KeyValue {
		if err != nil {
			return []attribute.KeyValue{telemetry.HandleAttr(req.GetHandle()), telemetry.KeyOutcome.String(observe.ResolveOutcome(err))}
		}
		return append(observe.ObjectAttrs(obj.Info), telemetry.KeyOutcome.String(telemetry.OutcomeHit))
	})
	if err != nil {
		return nil, toStatus(err, handle.Object)
	}
	if err := s.tooLargeForMessage(obj.Info.Size); err != nil {
		return nil, toStatus(err, handle.Object)
	}
	return resolveResponse(obj), nil
}

// tooLargeForMessage returns a *MessageTooLargeError for an object of
// size bytes that one Resolve answer cannot carry, else nil.
func (s *registryService) tooLargeForMessage(size int64) error {
	if limit := s.limits.MaxMessageBytes; limit > 0 && size > int64(limit)-messageOverhead {
		return &MessageTooLargeError{Size: size, Max: limit}
	}
	return nil
}

// checkWatchEpoch refuses to resume a watch from a sequence of another
// run: sequences start again with every run, so the same number names
// another event here.
func checkWatchEpoch(reg *registry.Registry, from, epoch uint64) error {
	if from == 0 || epoch == 0 || epoch == reg.Epoch() {
		return nil
	}
	return &WatchEpochError{handle.RestartedError{Issued: epoch, Current: reg.Epoch()}}
}

// resolve resolves h, and pins it with leaseID as one step if one is
// given.
func (s *registryService) resolve(who auth.Identity, h, leaseID string) (registry.Object, error) {
	if leaseID != "" {
		return s.leases.ResolvePin(who, leaseID, h)
	}
	return s.reg.Resolve(h)
}

func (s *registryService) Stat(ctx context.Context, req *registryv1.StatRequest) (*registryv1.StatResponse, error) {
	info, err := s.reg.Stat(req.GetHandle())
	if err != nil {
		return nil, toStatus(err, handle.Object)
	}
	return statResponse(info), nil
}

func (s *registryService) Watch(req *registryv1.WatchRequest, stream grpc.ServerStreamingServer[registryv1.WatchResponse]) error {
	hs := req.GetHandles()
	if len(hs) == 0 {
		return toStatus(fmt.Errorf("%w: name at least one handle to watch", ErrRequestEmpty), handle.Object)
	}
	if err := checkHandles(hs); err != nil {
		return toStatus(err, handle.Object)
	}
	ids := make([]handle.ID, 0, len(hs))
	seen := make(map[handle.ID]bool, len(hs))
	for _, h := range hs {
		id, err := s.reg.Parse(h)
		if err != nil {
			return toStatus(err, handle.Object)
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if err := checkWatchEpoch(s.reg, req.GetFromSequence(), req.GetEpoch()); err != nil {
		return toStatus(err, handle.Object)
	}
	sub, err := s.reg.WatchFrom(ids, req.GetFromSequence())
	if err != nil {
		return toStatus(err, handle.Object)
	}
	defer sub.Close()
	// Headers now tell the client the watch is in place, even when a
	// resumed watch has no event to send yet.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return streamErr(stream.Context(), err)
	}
	live := sub.Ending() // watched objects whose end is still to be sent
	if live == 0 {
		return nil // all ended before from_sequence
	}
	return sendEvents(stream.Context(), stream.Send, s.stall, sub, func(send func(*registryv1.WatchResponse) error) error {
		return pump(stream.Context(), sub, func(ev registry.Event) (bool, error) {
			if err := send(&registryv1.WatchResponse{Event: eventToProtoMsg(ev, s.reg.Epoch())}); err != nil {
				return false, err
			}
			if ev.State == registry.Collected || ev.State == registry.Deleted {
				live--
			}
			return live > 0, nil
		})
	})
}

// pump sends sub's replay, then its events, with send until send says
// stop, the client goes away, or the subscription ends.
func pump(ctx context.Context, sub *registry.Subscription, send func(registry.Event) (more bool, err error)) error {
	for _, ev := range sub.Replay() {
		if more, err := send(ev); err != nil || !more {
			return err
		}
	}
	for {
		select {
		case ev := <-sub.Events():
			more, err := send(ev)
			if err != nil || !more {
				return err
			}
		case <-sub.Done():
			// Deliver what was queued before the end, then say why.
		drain:
			for {
				select {
				case ev := <-sub.Events():
					if more, err := send(ev); err != nil || !more {
						return err
					}
				default:
					break drain
				}
			}
			if err := sub.Err(); err != nil {
				return toStatus(err, handle.Object)
			}
			return nil
		case <-ctx.Done():
			return ctxErr(ctx)
		}
	}
}
