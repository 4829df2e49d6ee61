package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/observe"
	"github.com/weakref/registry/internal/telemetry"
)

type leaseStream = grpc.BidiStreamingServer[registryv1.LeaseRequest, registryv1.LeaseResponse]

// received is one message from a lease stream: a request, or why the
// bytes that came were not one (a *MalformedError), or the bytes
// themselves, still to decode.
type received struct {
	req *registryv1.LeaseRequest
	err error
	raw []byte // when not nil: req and err are decoded from it
}

// decoded returns the request r holds, decoding it if it came raw.
func (r received) decoded() (*registryv1.LeaseRequest, error) {
	if r.raw == nil {
		return r.req, r.err
	}
	req := &registryv1.LeaseRequest{}
	if err := decodeRequest(r.raw, req); err != nil {
		return nil, err
	}
	return req, nil
}

// served is what the worker made of a request after open: the answer the
// handler is to send.
type served struct {
	resp  *registryv1.LeaseResponse
	done  bool // the lease was closed: the stream ends after resp
	ended bool // the lease was ended from outside (revoked, taken over): no resp
}

// Lease serves one lease stream. After open, one goroutine receives each
// request and has a worker serve it; this one decides what is sent and
// when the stream ends; an outbox sends, so that neither a revoke nor a
// client that stops reading can leave this handler waiting for ever.
//
// A request after open that fails as a whole (too many handles, a second
// open, no kind, a bad field) is answered with a RequestError and changes
// nothing: the stream, the lease and its pins stay as they were. Only
// what happens before open, or to the stream itself, ends the stream.
//
// Most lease streams idle most of the time, and ten thousand of them are
// twenty thousand parked goroutines, each with its stack, which the
// runtime shrinks only when a quarter of it is enough: never, for these.
// So neither does anything deep. The receiver only receives, the bytes
// alone (see receiveFunc); this goroutine only waits; the decoding, the
// open, every request and the sends run on goroutines of a pool that
// every stream shares (see pool). An idle stream's receiver so keeps a
// 4 KiB stack and its handler 8 KiB, under gRPC's frames and the
// interceptor chain.
func (s *registryService) Lease(stream leaseStream) error {
	ctx := stream.Context()
	ls := &leaseServer{s: s, ctx: ctx, w: newWorker(&s.work)}
	ls.in = receive(ctx, stream, ls.serveOnWorker)
	first, err := ls.open()
	if first == nil {
		return err // no lease exists yet: ending the stream loses nothing
	}
	// However this handler ends, a lease it still holds is detached:
	// released now, or kept for its grace. After Close, revoke or
	// take-over it does nothing.
	defer func() { detach(ctx, ls.sess, ls.closed) }()
	ls.out = newOutbox(stream.Send, s.stall)
	ls.out.pool = &s.work
	defer ls.out.abandon()
	if ls.w.do(func() { err = ls.opened(first) }); err != nil {
		return err
	}
	close(ls.in.start)
	return ls.serve()
}

// leaseServer is one lease stream's handler. s, ctx and w never change;
// sess is set before start is closed, and the receiver reads it only
// after; out and closed are the handler goroutine's alone.
type leaseServer struct {
	s      *registryService
	ctx    context.Context
	w      *worker // runs the open and each request (see pool)
	sess   *lease.Session
	in     *inbox
	out    *outbox[*registryv1.LeaseResponse]
	closed bool // by the client, with close: nothing to detach
}

// inbox is what a lease stream's receiver goroutine delivers.
type inbox struct {
	first   chan received // the first message, as it came
	start   chan struct{} // closed once the lease is open: serve what follows
	answers chan served   // one at a time: the receiver serves one request ahead at most
	errs    chan error    // why Recv failed for good; buffered, so the receiver never waits to say it
}

// receive starts the stream's receiver goroutine. It hands the first
// message over as it came, and once start is closed, has serve serve each
// request that follows. It ends when Recv fails for good, which it does
// once the handler returns. A message that does not decode is a request
// that failed, not the stream's end: the next one is received as usual.
//
// The first message is received here too, not by the handler, which
// stays as shallow as it can: the handler has it decoded on the worker.
func receive(ctx context.Context, stream leaseStream, serve func(received) served) *inbox {
	in := &inbox{first: make(chan received), start: make(chan struct{}), answers: make(chan served), errs: make(chan error, 1)}
	go in.run(ctx, stream, serve)
	return in
}

func (in *inbox) run(ctx context.Context, stream leaseStream, serve func(received) served) {
	recv := receiveFunc(stream)
	first := true
	for {
		r := recv()
		var malformed *MalformedError
		if r.err != nil && !errors.As(r.err, &malformed) {
			in.errs <- r.err
			return
		}
		if first {
			first = false
			select {
			case in.first <- r:
			case <-ctx.Done():
				return
			}
			select {
			case <-in.start:
			case <-ctx.Done():
				return
			}
			continue
		}
		select {
		case in.answers <- serve(r):
		case <-ctx.Done():
			return
		}
	}
}

// receiveFunc returns how the receiver receives from stream: through
// registryd's chain, the bytes alone, so that decoding them, as deep as
// serving, happens on the worker and the receiver's stack stays at its
// first size; from any other stream (a test's), decoded by its Recv.
func receiveFunc(stream leaseStream) func() received {
	gs, ok := stream.(*grpc.GenericServerStream[registryv1.LeaseRequest, registryv1.LeaseResponse])
	if !ok {
		return func() received { req, err := stream.Recv(); return received{req: req, err: err} }
	}
	ds, ok := gs.ServerStream.(*decodeStream)
	if !ok {
		return func() received { req, err := stream.Recv(); return received{req: req, err: err} }
	}
	ss := ds.ServerStream
	return func() received {
		var raw rawRequest
		if err := ss.RecvMsg(&raw); err != nil {
			return received{err: err}
		}
		if raw.data == nil {
			raw.data = []byte{} // an empty message: still raw, to decode
		}
		return received{raw: raw.data}
	}
}

// open waits for the stream's first request, which must be open, and
// opens or resumes the lease it asks for. It returns that request, or nil
// and why the handler should end: nil when the client half-closed first.
func (ls *leaseServer) open() (*registryv1.LeaseRequest, error) {
	ctx := ls.ctx
	var first *registryv1.LeaseRequest
	var err error
	select {
	case r := <-ls.in.first:
		ls.w.do(func() { first, err = r.decoded() })
		if err != nil {
			return nil, err
		}
	case err := <-ls.in.errs:
		return nil, endOfStream(err)
	case <-ctx.Done():
		return nil, ctxStatus(ctx.Err())
	}
	open := first.GetOpen()
	if open == nil {
		if first.GetKind() == nil {
			return nil, toStatus(fmt.Errorf("%w: the lease request has no kind; send open first", ErrRequestEmpty), handle.Lease)
		}
		return nil, toStatus(ErrLeaseNotOpen, handle.Lease)
	}
	params, err := openParams(open)
	if err != nil {
		return nil, err
	}
	if p, ok := peer.FromContext(ctx); ok {
		params.Peer = p.Addr.String()
	}
	params.Identity = auth.FromContext(ctx)
	var sess *lease.Session
	if ls.w.do(func() { sess, err = ls.s.leases.Open(params) }); err != nil {
		return nil, toStatus(err, handle.Lease)
	}
	ls.sess = sess
	return first, nil
}

// opened answers the open request first, and records it on the span.
func (ls *leaseServer) opened(first *registryv1.LeaseRequest) error {
	ctx, sess := ls.ctx, ls.sess
	info := sess.Info()
	if err := ls.out.send(ctx, &registryv1.LeaseResponse{
		RequestId: first.GetRequestId(),
		Kind: &registryv1.LeaseResponse_Opened{Opened: &registryv1.LeaseOpened{
			LeaseId:  sess.ID(),
			Grace:    durationpb.New(info.Grace),
			Resumed:  sess.Resumed(),
			PinCount: int32(info.Pins),
		}},
	}, sess.Done()); err != nil {
		return ls.s.streamEnd(ctx, ls.out, sess, err)
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(telemetry.KeyLeaseID.String(sess.ID()), telemetry.KeyLeaseClient.String(info.Client))
		span.AddEvent(telemetry.EventLeaseOpen, trace.WithAttributes(
			telemetry.KeyLeaseID.String(sess.ID()),
			telemetry.KeyLeaseClient.String(info.Client),
			telemetry.KeyLeaseGrace.Float64(info.Grace.Seconds()),
			telemetry.KeyLeaseResumed.Bool(sess.Resumed()),
			telemetry.KeyLeasePins.Int(info.Pins),
		))
	}
	return nil
}

// serve sends the answers until the stream or the lease ends. This is
// where an idle stream's handler waits: keep its frame small.
func (ls *leaseServer) serve() error {
	for {
		select {
		case a := <-ls.in.answers:
			if end, err := ls.send(a); end {
				return err
			}
		case <-ls.sess.Done():
			return ls.s.streamEnd(ls.ctx, ls.out, ls.sess, errEndedOutside)
		case <-ls.out.stalled:
			return ls.out.stalledStatus()
		case <-ls.out.exited:
			return ls.out.err
		case err := <-ls.in.errs:
			return ls.endOfRequests(err)
		case <-ls.ctx.Done():
			return ctxStatus(ls.ctx.Err())
		}
	}
}

// serveOnWorker serves one request after open on the worker, for the
// receiver goroutine.
func (ls *leaseServer) serveOnWorker(r received) (a served) {
	ls.w.do(func() { a = ls.serveRequest(r) })
	return a
}

// serveRequest serves one request after open.
func (ls *leaseServer) serveRequest(r received) served {
	if r.raw != nil {
		r.req, r.err = r.decoded()
	}
	if r.err != nil {
		// Its request_id did not decode either: the answer has 0.
		return served{resp: &registryv1.LeaseResponse{Kind: &registryv1.LeaseResponse_Error{Error: requestError(r.err)}}}
	}
	resp, done, err := ls.s.leaseRequest(ls.ctx, ls.sess, r.req)
	if errors.Is(err, lease.ErrEnded) || errors.Is(err, lease.ErrTakenOver) {
		return served{ended: true}
	}
	if err != nil {
		// The request failed as a whole and changed nothing: say
		// why, and go on serving the lease.
		resp = &registryv1.LeaseResponse{RequestId: r.req.GetRequestId(),
			Kind: &registryv1.LeaseResponse_Error{Error: requestError(err)}}
	}
	return served{resp: resp, done: done}
}

// send sends one answer, and says whether the handler should end, with
// what.
func (ls *leaseServer) send(a served) (end bool, err error) {
	ctx, sess, out := ls.ctx, ls.sess, ls.out
	if a.ended {
		return true, ls.s.streamEnd(ctx, out, sess, errEndedOutside)
	}
	ls.closed = a.done
	if err := out.send(ctx, a.resp, sess.Done()); err != nil {
		return true, ls.s.streamEnd(ctx, out, sess, err)
	}
	if a.done {
		return true, out.flush(ctx)
	}
	return false, nil
}

// endOfRequests ends the handler once Recv failed for good with err: a
// half-close delivers what is owed.
func (ls *leaseServer) endOfRequests(err error) error {
	if err := endOfStream(err); err != nil {
		return err
	}
	return ls.out.flush(ls.ctx)
}

// streamEnd ends the handler after err from the outbox or the lease. A
// lease ended from outside (revoked, taken over, shut down) is told why,
// unless its client is not reading: then the handler just returns, so that
// a revoke or a shutdown never waits on a client.
func (s *registryService) streamEnd(ctx context.Context, out *outbox[*registryv1.LeaseResponse], sess *lease.Session, err error) error {
	if !errors.Is(err, errEndedOutside) {
		return err
	}
	select {
	case <-sess.Done():
	case <-ctx.Done():
		return ctxStatus(ctx.Err())
	}
	revoked := revokedResponse(ctx, sess)
	if !out.idle() {
		return nil // the client is behind; it would not read this in time
	}
	if !out.offer(revoked) {
		return nil
	}
	return out.flushWithin(ctx, min(out.stall, endedFlush))
}

// openParams checks open's fields and returns what to open.
func openParams(open *registryv1.OpenLease) (lease.OpenParams, error) {
	grace, err := checkedDuration("grace", open.GetGrace())
	if err != nil {
		return lease.OpenParams{}, err
	}
	if n := len(open.GetClientName()); n > lease.MaxClientNameBytes {
		return lease.OpenParams{}, fieldErrorf("client_name", "is %d bytes; at most %d are allowed", n, lease.MaxClientNameBytes)
	}
	return lease.OpenParams{Client: open.GetClientName(), Grace: grace, Resume: open.GetResumeLeaseId()}, nil
}

// checkedDuration returns d, which checkDuration must find valid; nil
// is 0.
func checkedDuration(field string, d *durationpb.Duration) (time.Duration, error) {
	if err := checkDuration(field, d); err != nil {
		return 0, err
	}
	return d.AsDuration(), nil
}

// requestError is err as a RequestError answer: the code, reason, message
// and metadata a unary call would carry in its status, from the same
// mapping.
func requestError(err error) *registryv1.RequestError {
	st, ok := status.FromError(err)
	if !ok {
		return toRequestError(err, handle.Object)
	}
	re := &registryv1.RequestError{Code: int32(st.Code()), Message: st.Message()}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			re.Reason, re.Metadata = info.GetReason(), info.GetMetadata()
			break
		}
	}
	return re
}

// ctxStatus is the handler's result when its stream's context ended: a
// cancelled or timed-out status, never a bare context error (which gRPC
// would log as Unknown).
func ctxStatus(err error) error {
	return toStatus(err, handle.Object)
}

// leaseRequest serves one request after open. done means the lease was
// closed and the stream should end after resp. An error other than
// lease.ErrEnded and lease.ErrTakenOver is the request's alone: it
// changed nothing.
func (s *registryService) leaseRequest(ctx context.Context, sess *lease.Session, req *registryv1.LeaseRequest) (resp *registryv1.LeaseResponse, done bool, err error) {
	if err := limitLeaseRequest(ctx); err != nil {
		return nil, false, err // before anything is done: the pins stay
	}
	resp = &registryv1.LeaseResponse{RequestId: req.GetRequestId()}
	switch k := req.GetKind().(type) {
	case *registryv1.LeaseRequest_Pin:
		if err := checkHandleCount(k.Pin.GetHandles()); err != nil {
			return nil, false, err
		}
		traced := s.traceResults(ctx, telemetry.SpanPin, telemetry.EventPinHandle, sess.ID(), len(k.Pin.GetHandles()))
		rs, err := sess.Pin(k.Pin.GetHandles())
		traced(rs, err)
		if err != nil {
			return nil, false, err
		}
		resp.Kind = &registryv1.LeaseResponse_Pinned{Pinned: resultsToProto(rs)}
	case *registryv1.LeaseRequest_Unpin:
		if err := checkHandleCount(k.Unpin.GetHandles()); err != nil {
			return nil, false, err
		}
		handoff, err := checkedDuration("handoff", k.Unpin.GetHandoff())
		if err != nil {
			return nil, false, err
		}
		traced := s.traceResults(ctx, telemetry.SpanUnpin, telemetry.EventUnpinHandle, sess.ID(), len(k.Unpin.GetHandles()))
		rs, err := sess.Unpin(k.Unpin.GetHandles(), min(handoff, s.limits.MaxLinger))
		traced(rs, err)
		if err != nil {
			return nil, false, err
		}
		resp.Kind = &registryv1.LeaseResponse_Unpinned{Unpinned: resultsToProto(rs)}
	case *registryv1.LeaseRequest_Close:
		handoff, err := checkedDuration("handoff", k.Close.GetHandoff())
		if err != nil {
			return nil, false, err
		}
		n, err := sess.Close(min(handoff, s.limits.MaxLinger))
		if err != nil {
			return nil, false, err
		}
		addEvent(ctx, telemetry.EventLeaseEnd, func() []attribute.KeyValue {
			return []attribute.KeyValue{telemetry.KeyLeaseID.String(sess.ID()), telemetry.KeyLeaseEnd.String(observe.EndName(lease.EndClosed)), telemetry.KeyReleased.Int(n)}
		})
		resp.Kind = &registryv1.LeaseResponse_Closed{Closed: &registryv1.LeaseClosed{Released: int32(n)}}
		return resp, true, nil
	case *registryv1.LeaseRequest_Open:
		return nil, false, toStatus(fmt.Errorf("lease %s: %w", sess.ID(), ErrLeaseAlreadyOpen), handle.Lease)
	default:
		return nil, false, toStatus(fmt.Errorf("%w: the lease request has no kind", ErrRequestEmpty), handle.Lease)
	}
	return resp, false, nil
}

func checkHandleCount(hs []string) error {
	if err := checkHandles(hs); err != nil {
		return toStatus(err, handle.Lease)
	}
	return nil
}

// revokedResponse says why the lease was ended from outside, and records
// the end on the stream's span.
func revokedResponse(ctx context.Context, sess *lease.Session) *registryv1.LeaseResponse {
	cause, reason, released := sess.Revocation()
	addEvent(ctx, telemetry.EventLeaseEnd, func() []attribute.KeyValue {
		return []attribute.KeyValue{telemetry.KeyLeaseID.String(sess.ID()), telemetry.KeyLeaseEnd.String(causeNames[cause]),
			telemetry.ReasonAttr(reason), telemetry.KeyReleased.Int(released)}
	})
	return &registryv1.LeaseResponse{Kind: &registryv1.LeaseResponse_Revoked{Revoked: &registryv1.LeaseRevoked{
		Cause:    causeToProto[cause],
		Reason:   reason,
		Released: int32(released),
	}}}
}

// causeNames name revocation causes in traces, as observe.EndName does
// lease ends.
var causeNames = map[lease.Cause]string{
	lease.CauseAdmin:     observe.EndName(lease.EndRevoked),
	lease.CauseTakenOver: "taken_over",
	lease.CauseShutdown:  observe.EndName(lease.EndShutdown),
}

// detach detaches the stream's lease when the handler ends, and says so
// on the stream's span: with a grace the lease waits to be resumed,
// without one it ended. After Close, revoke or take-over it does nothing.
func detach(ctx context.Context, sess *lease.Session, closed bool) {
	span := trace.SpanFromContext(ctx)
	if closed || !span.IsRecording() {
		sess.Detach()
		return
	}
	select {
	case <-sess.Done():
		sess.Detach() // ended from outside; streamEnd said how, if it could
		return
	default:
	}
	in := sess.Info()
	sess.Detach()
	if in.Grace > 0 {
		span.AddEvent(telemetry.EventLeaseDetach, trace.WithAttributes(telemetry.KeyLeaseID.String(in.ID),
			telemetry.KeyLeaseGrace.Float64(in.Grace.Seconds()), telemetry.KeyLeasePins.Int(in.Pins)))
		return
	}
	span.AddEvent(telemetry.EventLeaseEnd, trace.WithAttributes(telemetry.KeyLeaseID.String(in.ID),
		telemetry.KeyLeaseEnd.String(observe.EndName(lease.EndDropped)), telemetry.KeyReleased.Int(in.Pins)))
}

// endOfStream turns the receive side's end into the handler's result: a
// client that half-closes gets a clean end.
func endOfStream(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
