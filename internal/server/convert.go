package server

import (
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// The protobuf enums and the domain enums keep the same order; these
// tables say so in one place.
var (
	stateToProto = map[registry.State]registryv1.ObjectState{
		registry.Pinned:    registryv1.ObjectState_OBJECT_STATE_PINNED,
		registry.Lingering: registryv1.ObjectState_OBJECT_STATE_LINGERING,
		registry.Weak:      registryv1.ObjectState_OBJECT_STATE_WEAK,
		registry.Collected: registryv1.ObjectState_OBJECT_STATE_COLLECTED,
		registry.Deleted:   registryv1.ObjectState_OBJECT_STATE_DELETED,
	}
	eventToProto = map[registry.EventKind]registryv1.EventKind{
		registry.EventCurrent:   registryv1.EventKind_EVENT_KIND_CURRENT,
		registry.EventCreated:   registryv1.EventKind_EVENT_KIND_CREATED,
		registry.EventPinned:    registryv1.EventKind_EVENT_KIND_PINNED,
		registry.EventUnpinned:  registryv1.EventKind_EVENT_KIND_UNPINNED,
		registry.EventLingering: registryv1.EventKind_EVENT_KIND_LINGERING,
		registry.EventWeak:      registryv1.EventKind_EVENT_KIND_WEAK,
		registry.EventCollected: registryv1.EventKind_EVENT_KIND_COLLECTED,
		registry.EventDeleted:   registryv1.EventKind_EVENT_KIND_DELETED,
	}
	outcomeToProto = map[lease.Outcome]registryv1.PinOutcome{
		lease.Pinned:        registryv1.PinOutcome_PIN_OUTCOME_PINNED,
		lease.AlreadyPinned: registryv1.PinOutcome_PIN_OUTCOME_ALREADY_PINNED,
		lease.Unpinned:      registryv1.PinOutcome_PIN_OUTCOME_UNPINNED,
		lease.NotPinned:     registryv1.PinOutcome_PIN_OUTCOME_NOT_PINNED,
		lease.Failed:        registryv1.PinOutcome_PIN_OUTCOME_FAILED,
	}
	causeToProto = map[lease.Cause]registryv1.RevokeCause{
		lease.CauseAdmin:     registryv1.RevokeCause_REVOKE_CAUSE_ADMIN,
		lease.CauseTakenOver: registryv1.RevokeCause_REVOKE_CAUSE_TAKEN_OVER,
		lease.CauseShutdown:  registryv1.RevokeCause_REVOKE_CAUSE_SHUTDOWN,
	}
)

func stateFromProto(s registryv1.ObjectState) registry.State {
	for k, v := range stateToProto {
		if v == s {
			return k
		}
	}
	return registry.StateUnknown
}

func infoToProto(in registry.Info) *registryv1.ObjectInfo {
	if in.Handle == "" {
		return nil
	}
	b := new(infoBox)
	b.fill(in)
	return &b.info
}

// infoBox is an ObjectInfo with its three timestamps, allocated as one:
// a Resolve, a Put and a Stat answer each carries one, and four
// allocations per answer were a tenth of what the server allocates for
// it. Nothing copies a box: its messages are used through pointers only.
type infoBox struct {
	info                     registryv1.ObjectInfo
	created, accessed, since timestamppb.Timestamp
}

// fill sets b to describe in, which has a handle.
func (b *infoBox) fill(in registry.Info) {
	setTime(&b.created, in.Created)
	setTime(&b.accessed, in.Accessed)
	setTime(&b.since, in.StateSince)
	i := &b.info
	i.Handle = in.Handle
	i.Size = in.Size
	i.ContentType = in.ContentType
	i.Labels = in.Labels
	i.State = stateToProto[in.State]
	i.PinCount = int32(in.Pins)
	i.CreateTime, i.AccessTime, i.StateTime = &b.created, &b.accessed, &b.since
	i.Linger = durationOrNil(in.Linger)
	i.LingerUntil = timestampOrNil(in.LingerUntil)
	i.SoftCached = in.SoftCached
	i.WeakGcCycles = in.WeakGCCycles
	i.SuspectedLeak = in.SuspectedLeak
}

// setTime sets ts to t, as timestamppb.New does.
func setTime(ts *timestamppb.Timestamp, t time.Time) {
	ts.Seconds, ts.Nanos = t.Unix(), int32(t.Nanosecond())
}

// resolveResponse is the answer to a Resolve of obj, in one allocation
// with its ObjectInfo and timestamps.
func resolveResponse(obj registry.Object) *registryv1.ResolveResponse {
	b := new(struct {
		resp registryv1.ResolveResponse
		info infoBox
	})
	b.resp.Data = obj.Payload().Bytes()
	if obj.Info.Handle != "" {
		b.info.fill(obj.Info)
		b.resp.Info = &b.info.info
	}
	return &b.resp
}

// putResponse is the answer to a Put that made info, in one allocation.
func putResponse(info registry.Info) *registryv1.PutResponse {
	b := new(struct {
		resp registryv1.PutResponse
		info infoBox
	})
	b.resp.Handle = info.Handle
	if info.Handle != "" {
		b.info.fill(info)
		b.resp.Info = &b.info.info
	}
	return &b.resp
}

// statResponse is the answer to a Stat, in one allocation.
func statResponse(info registry.Info) *registryv1.StatResponse {
	b := new(struct {
		resp registryv1.StatResponse
		info infoBox
	})
	if info.Handle != "" {
		b.info.fill(info)
		b.resp.Info = &b.info.info
	}
	return &b.resp
}

func durationOrNil(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(d)
}

func timestampOrNil(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func eventToProtoMsg(ev registry.Event, epoch uint64) *registryv1.Event {
	out := &registryv1.Event{
		Epoch:    epoch,
		Sequence: ev.Seq,
		Kind:     eventToProto[ev.Kind],
		Handle:   ev.Handle,
		State:    stateToProto[ev.State],
		PinCount: int32(ev.Pins),
		Size:     ev.Size,
		LeaseId:  ev.LeaseID,
		Time:     timestamppb.New(ev.Time),
	}
	if ev.Kind == registry.EventCollected {
		out.UnpinnedFor = durationpb.New(ev.UnpinnedFor)
	}
	return out
}

func resultsToProto(rs []lease.Result) *registryv1.PinResults {
	out := &registryv1.PinResults{Results: make([]*registryv1.PinResult, len(rs))}
	for i, r := range rs {
		pr := &registryv1.PinResult{Handle: r.Handle, Outcome: outcomeToProto[r.Outcome], Info: infoToProto(r.Info)}
		if r.Err != nil {
			re := toRequestError(r.Err, handle.Object)
			pr.Error = &registryv1.HandleError{Code: re.Code, Reason: re.Reason, Message: re.Message, Metadata: re.Metadata, Details: re.Details}
		}
		out.Results[i] = pr
	}
	return out
}

func leaseToProto(in lease.Info) *registryv1.LeaseInfo {
	out := &registryv1.LeaseInfo{
		LeaseId:    in.ID,
		ClientName: in.Client,
		Identity:   in.Identity,
		OpenTime:   timestamppb.New(in.Opened),
		PinCount:   int32(in.Pins),
		Grace:      durationpb.New(in.Grace),
		Attached:   in.Attached,
		Peer:       in.Peer,
	}
	if !in.ExpireAt.IsZero() {
		out.ExpireTime = timestamppb.New(in.ExpireAt)
	}
	return out
}
