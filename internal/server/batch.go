package server

import (
	"context"
	"fmt"
	"math"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/observe"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/telemetry"
)

// The batched data path: BatchResolve and BatchStat answer many handles
// in one call, each exactly as Resolve or Stat would answer it alone, so
// that a caller pays one round trip, one pass of the interceptor chain
// and one message for up to MaxHandlesPerRequest objects.
//
// A batch fails as a whole only when it is wrong as a whole (no handles,
// too many, a lease_id that names no lease this caller may use), and then
// changes nothing. Everything about one handle is that handle's answer.
// A batch is one call: the rate limit per identity counts it once, as it
// counts a lease stream's pin of many handles once.

// ResponseTooLargeError reports a handle whose answer fits one message alone
// but not beside the answers before it in the same batch: it was left
// out. RESPONSE_TOO_LARGE, metadata `max` and `want`.
type ResponseTooLargeError struct {
	// Want is the size the batch's answer would have needed: the answers
	// before, this one, and room for those after (see errorRoom).
	Want int64
	Max  int // the message limit the answer must fit
}

func (e *ResponseTooLargeError) Error() string {
	return fmt.Sprintf("the answer would grow to %d bytes with this object, more than one message may carry (--max-message-bytes %d)", e.Want, e.Max)
}

// defaultMessageBytes is what a batch's answer must fit when the server
// sets no message limit: gRPC's default for what a client receives.
const defaultMessageBytes = 4 << 20

// batchSlack is room a batch's answer leaves free below the message
// limit, for what its count of sizes does not know exactly: with a lease
// and with_info, the metadata after the pin is a few bytes longer than
// the Stat before it; an error a little longer than errorRoom (a long
// identity name in its metadata).
const batchSlack = 16 << 10

// batchRoom is how many bytes a batch's answer may take: the message
// limit, less batchSlack. (Each object's bytes are bounded further, as
// Resolve bounds them: see tooLargeForMessage.)
func (s *registryService) batchRoom() (room int64, limit int) {
	limit = s.limits.MaxMessageBytes
	if limit <= 0 {
		limit = defaultMessageBytes
	}
	return int64(limit) - batchSlack, limit
}

// errorRoom is what one handle's error adds to an answer, at most: a
// RESPONSE_TOO_LARGE, the longest a handle that fails for the answer's
// size may get. A batch keeps this much free for every handle still to
// answer, so that the errors of those that do not fit fit too: an answer
// over the limit would fail the whole call after its pins were taken.
// (Other errors are no longer; one that is finds room in batchSlack.)
func errorRoom(limit int) int64 {
	if n, ok := errorRooms.Load(limit); ok {
		return n.(int64)
	}
	e := handleError(&ResponseTooLargeError{Want: math.MaxInt64, Max: limit})
	n := entrySize(1 + protowire.SizeBytes(proto.Size(e)))
	errorRooms.Store(limit, n)
	return n
}

// errorRooms caches errorRoom by message limit: building the error costs
// dozens of allocations, and a server has one limit.
var errorRooms sync.Map

// checkBatch refuses a batch of no handles, or of more than
// MaxHandlesPerRequest, or of more than an answer could carry errors
// for: only a server with a --max-message-bytes far below its default
// caps a batch below MaxHandlesPerRequest.
func (s *registryService) checkBatch(hs []string) error {
	if len(hs) == 0 {
		return fmt.Errorf("%w: name at least one handle", ErrRequestEmpty)
	}
	if err := checkHandles(hs); err != nil {
		return err
	}
	room, limit := s.batchRoom()
	if most := room / errorRoom(limit); int64(len(hs)) > most {
		return &TooManyHandlesError{Max: int(max(most, 0)), Want: len(hs)}
	}
	return nil
}

// entrySize is how many bytes a result of n bytes adds to a response: its
// tag, its length and itself.
func entrySize(n int) int64 { return 1 + int64(protowire.SizeBytes(n)) }

// handleError is err as one handle's answer: what a unary call's status
// would carry.
func handleError(err error) *registryv1.HandleError {
	re := toRequestError(err, handle.Object)
	return &registryv1.HandleError{Code: re.Code, Reason: re.Reason, Message: re.Message, Metadata: re.Metadata, Details: re.Details}
}

func (s *registryService) BatchResolve(ctx context.Context, req *registryv1.BatchResolveRequest) (*registryv1.BatchResolveResponse, error) {
	hs := req.GetHandles()
	if err := s.checkBatch(hs); err != nil {
		return nil, toStatus(err, handle.Object)
	}
	who := auth.FromContext(ctx)
	leaseID := req.GetLeaseId()
	if leaseID != "" {
		// Wrong as a whole: the lease is refused before any handle is
		// looked at, so nothing is pinned.
		if err := s.leases.Check(who, leaseID); err != nil {
			return nil, toStatus(err, handle.Lease)
		}
	}
	room, limit := s.batchRoom()
	b := batchResolver{s: s, who: who, leaseID: leaseID, withInfo: req.GetWithInfo(), room: room, limit: limit,
		perError: errorRoom(limit), left: int64(len(hs))}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		b.span = span
	}
	// One allocation holds every result: a batch of a thousand would
	// otherwise allocate a thousand times for the results alone.
	slab := make([]registryv1.BatchResolveResult, len(hs))
	out := &registryv1.BatchResolveResponse{Results: make([]*registryv1.BatchResolveResult, len(hs))}
	for i := range slab {
		out.Results[i] = &slab[i]
	}
	if leaseID == "" {
		// The registry's batch: one clock read, no metadata copy unless
		// the answer or the span wants it (see registry.ResolveMany).
		s.reg.ResolveMany(hs, b.withInfo || b.span != nil, func(i int, obj *registry.Object, err error) {
			b.answer(hs[i], &slab[i], obj, err)
		})
		return out, nil
	}
	for i, h := range hs {
		b.one(h, &slab[i])
	}
	return out, nil
}

// batchResolver answers the handles of one BatchResolve in order, keeping
// count of the answer's size.
type batchResolver struct {
	s        *registryService
	who      auth.Identity
	leaseID  string
	withInfo bool
	room     int64      // bytes the answer may take
	limit    int        // the message limit, for errors
	perError int64      // room kept for each handle still to answer (errorRoom)
	left     int64      // handles still to answer, this one included
	used     int64      // bytes the answer takes so far
	span     trace.Span // the call's span if it records, else nil
}

// one answers h into r, with the lease.
func (b *batchResolver) one(h string, r *registryv1.BatchResolveResult) {
	obj, info, err := b.resolve(h)
	b.record(h, r, &obj, info, err)
}

// answer answers h into r without a lease, from obj or err as
// registry.ResolveMany gave them.
func (b *batchResolver) answer(h string, r *registryv1.BatchResolveResult, obj *registry.Object, err error) {
	var pi *registryv1.ObjectInfo
	if err == nil {
		pi = b.info(obj.Info)
		err = b.fits(obj.Info.Size, pi)
	}
	b.record(h, r, obj, pi, err)
}

// record puts h's answer, obj with info or err, into r and counts its size.
func (b *batchResolver) record(h string, r *registryv1.BatchResolveResult, obj *registry.Object, info *registryv1.ObjectInfo, err error) {
	b.left--
	if b.span != nil {
		b.event(h, *obj, err)
	}
	if err != nil {
		r.Error = handleError(err)
		b.used += entrySize(1 + protowire.SizeBytes(proto.Size(r.Error)))
		return
	}
	r.Data, r.Info = obj.Payload().Bytes(), info
	b.used += b.resultSize(len(r.Data), r.Info)
}

// resultSize is what a result with n bytes and info adds to the answer.
func (b *batchResolver) resultSize(n int, info *registryv1.ObjectInfo) int64 {
	size := 1 + protowire.SizeBytes(n)
	if info != nil {
		size += 1 + protowire.SizeBytes(proto.Size(info))
	}
	return entrySize(size)
}

// info is the metadata the answer carries for an object: in, if
// with_info asked for it, else none.
func (b *batchResolver) info(in registry.Info) *registryv1.ObjectInfo {
	if !b.withInfo {
		return nil
	}
	return infoToProto(in)
}

// fits returns the error for an object of size bytes, with pi if asked,
// that the answer cannot carry: MESSAGE_TOO_LARGE if no message could, as
// Resolve says, RESPONSE_TOO_LARGE if this one no longer can; else nil.
func (b *batchResolver) fits(size int64, pi *registryv1.ObjectInfo) error {
	if err := b.s.tooLargeForMessage(size); err != nil {
		return err
	}
	if want := b.used + b.resultSize(int(size), pi) + (b.left-1)*b.perError; want > b.room {
		return &ResponseTooLargeError{Want: want, Max: b.limit}
	}
	return nil
}

// resolve resolves h with the lease as Resolve would, and refuses an
// object the answer cannot carry; it returns the metadata the answer
// carries, if any. It refuses before pinning, so that a refused handle is left
// unpinned, as Resolve leaves it.
func (b *batchResolver) resolve(h string) (registry.Object, *registryv1.ObjectInfo, error) {
	// An object's size never changes, so a Stat tells whether its answer
	// fits before the pin (the metadata after the pin is a few bytes
	// longer at most: batchSlack). A Stat that fails says nothing:
	// ResolvePin gives the error Resolve would.
	if info, err := b.s.reg.Stat(h); err == nil {
		if err := b.fits(info.Size, b.info(info)); err != nil {
			return registry.Object{}, nil, err
		}
	}
	obj, err := b.s.leases.ResolvePin(b.who, b.leaseID, h)
	if err != nil {
		return registry.Object{}, nil, err
	}
	return obj, b.info(obj.Info), nil
}

// event records one handle's answer on the call's span, as Resolve does.
func (b *batchResolver) event(h string, obj registry.Object, err error) {
	var attrs []attribute.KeyValue
	if err != nil {
		attrs = []attribute.KeyValue{telemetry.HandleAttr(h), telemetry.KeyOutcome.String(observe.ResolveOutcome(err))}
	} else {
		attrs = append(observe.ObjectAttrs(obj.Info), telemetry.KeyOutcome.String(telemetry.OutcomeHit))
	}
	b.span.AddEvent(telemetry.EventResolve, trace.WithAttributes(attrs...))
}

func (s *registryService) BatchStat(_ context.Context, req *registryv1.BatchStatRequest) (*registryv1.BatchStatResponse, error) {
	hs := req.GetHandles()
	if err := s.checkBatch(hs); err != nil {
		return nil, toStatus(err, handle.Object)
	}
	room, limit := s.batchRoom()
	perError := errorRoom(limit)
	var used int64
	slab := make([]registryv1.BatchStatResult, len(hs))
	out := &registryv1.BatchStatResponse{Results: make([]*registryv1.BatchStatResult, len(hs))}
	for i, h := range hs {
		r := &slab[i]
		out.Results[i] = r
		info, err := s.reg.Stat(h)
		if err == nil {
			r.Info = infoToProto(info)
			size := entrySize(1 + protowire.SizeBytes(proto.Size(r.Info)))
			want := used + size + int64(len(hs)-i-1)*perError // see errorRoom
			if want <= room {
				used += size
				continue
			}
			r.Info, err = nil, &ResponseTooLargeError{Want: want, Max: limit}
		}
		r.Error = handleError(err)
		used += entrySize(1 + protowire.SizeBytes(proto.Size(r.Error)))
	}
	return out, nil
}
