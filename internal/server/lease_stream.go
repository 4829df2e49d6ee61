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
// So neither ever goes deep. The receiver only receives, the bytes alone
// (see receiveFunc). This goroutine, under gRPC's frames and the
// interceptor chain (2.1 KiB of stack by default), only waits, on one
// channel (inbox.wake), and allocates nothing in its loop: the decoding,
// the open, every request and every send run on goroutines of a pool
// that every stream shares (see pool). Both so keep 4 KiB stacks, which
// hold at most 3.1 KiB before they grow: each frame below here counts.
// (With more interceptors, as --metrics-addr adds, the handler's is 8.)
func (s *registryService) Lease(stream leaseStream) error {
	return s.newLeaseServer(stream).run(stream)
}

// newLeaseServer makes a lease stream's handler and starts its receiver.
func (s *registryService) newLeaseServer(stream leaseStream) *leaseServer {
	ctx := stream.Context()
	ls := &leaseServer{s: s, ctx: ctx, w: newWorker(&s.work), hw: newWorker(&s.work)}
	ls.send1 = func() { ls.sentEnd, ls.sentErr = ls.send(ls.pending) }
	ls.in = receive(ctx, stream, ls.serveOnWorker)
	return ls
}

// run is the handler: it waits for the open, has the lease opened, then
// serves. Its frame is under every wait of an idle stream: keep it small.
func (ls *leaseServer) run(stream leaseStream) error {
	ok, err := ls.firstMessage()
	if !ok {
		return err // no lease exists yet: ending the stream loses nothing
	}
	first, err := ls.start(stream)
	if first == nil {
		return err // no lease exists yet: ending the stream loses nothing
	}
	// However this handler ends, a lease it still holds is detached:
	// released now, or kept for its grace. After Close, revoke or
	// take-over it does nothing.
	defer ls.detach()
	defer ls.out.abandon()
	if err != nil {
		return err
	}
	return ls.serve()
}

// start opens the lease the first message asks for and answers it, on
// the handler's worker. It returns the request once a lease exists, with
// the error the handler then ends with, if any. It is not inlined: its
// frame would stay under run's waits.
//
//go:noinline
func (ls *leaseServer) start(stream leaseStream) (first *registryv1.LeaseRequest, err error) {
	ls.hw.do(func() { first, err = ls.openLease(ls.first) })
	ls.first = received{} // nor its bytes
	if first == nil {
		return nil, err
	}
	ls.out = newOutbox(stream.Send, ls.s.stall)
	ls.out.pool = &ls.s.work
	ls.out.onFail = ls.in.wakeUp
	ls.hw.do(func() { err = ls.opened(first) })
	close(ls.in.start)
	return first, err
}

// detach detaches the lease as the handler ends (see detach).
func (ls *leaseServer) detach() { detach(ls.ctx, ls.sess, ls.closed) }

// leaseServer is one lease stream's handler. s, ctx, w, hw, in and send1
// never change; sess is set before start is closed, and the receiver
// reads it only after; the rest are the handler's, or its worker's while
// the handler waits for it.
type leaseServer struct {
	s      *registryService
	ctx    context.Context
	w      *worker // runs each request for the receiver (see pool)
	hw     *worker // runs the open and the sends for the handler
	sess   *lease.Session
	in     *inbox
	out    *outbox[*registryv1.LeaseResponse]
	closed bool // by the client, with close: nothing to detach

	first   received // the first message, as it came
	pending served   // the answer send1 sends
	send1   func()   // sends pending on hw: made once, so that the loop allocates nothing
	sentEnd bool     // what send1 returned
	sentErr error    // what send1 returned
}

// inbox is what a lease stream's receiver goroutine delivers. The handler
// waits on wake alone: one channel, so that its frame, under gRPC's and
// the interceptor chain's, stays small enough for a 4 KiB stack (see
// Lease); everything that has news for it (the receiver, the lease's end,
// the outbox's failure) puts it where it goes, then wakes it.
type inbox struct {
	wake    chan struct{} // buffered 1: see wakeUp
	first   chan received // buffered 1: the first message, as it came
	start   chan struct{} // closed once the lease is open: serve what follows
	answers chan served   // buffered 1: the receiver serves a request or two ahead at most
	errs    chan error    // buffered 1: why the receiver ended (Recv failed for good, or the stream's context)
}

// wakeUp tells the handler to look: never blocks, and several wake it
// once.
func (in *inbox) wakeUp() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// fail says why the receiver ends; it ends right after.
func (in *inbox) fail(err error) {
	in.errs <- err
	in.wakeUp()
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
	in := &inbox{wake: make(chan struct{}, 1), first: make(chan received, 1), start: make(chan struct{}), answers: make(chan served, 1), errs: make(chan error, 1)}
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
			in.fail(r.err)
			return
		}
		if first {
			first = false
			in.first <- r
			in.wakeUp()
			select {
			case <-in.start:
			case <-ctx.Done():
				in.fail(ctx.Err())
				return
			}
			continue
		}
		a := serve(r)
		select {
		case in.answers <- a:
			in.wakeUp()
		case <-ctx.Done():
			in.fail(ctx.Err())
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

// firstMessage waits for the stream's first message and keeps it in
// ls.first: ok is false, with the handler's result, if the stream ended
// first (nil when the client half-closed).
func (ls *leaseServer) firstMessage() (ok bool, err error) {
	for {
		<-ls.in.wake
		select {
		case ls.first = <-ls.in.first:
			return true, nil
		default:
		}
		select {
		case err := <-ls.in.errs:
			if ls.ctx.Err() != nil {
				return false, ctxStatus(ls.ctx.Err())
			}
			return false, endOfStream(err)
		default:
		}
	}
}

// openLease opens or resumes the lease r asks for, which must be open,
// on the handler's worker. It returns that request, or nil and why the
// handler should end.
func (ls *leaseServer) openLease(r received) (*registryv1.LeaseRequest, error) {
	ctx := ls.ctx
	first, err := r.decoded()
	if err != nil {
		return nil, err
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
	params.OnEnd = ls.in.wakeUp
	sess, err := ls.s.leases.Open(params)
	if err != nil {
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
// where an idle stream's handler waits, on wake alone.
func (ls *leaseServer) serve() error {
	for {
		<-ls.in.wake
		if end, err := ls.step(); end {
			return err
		}
	}
}

// step handles what is ready, and says whether the handler should end,
// with what: answers first, in order (what is owed goes out before the
// end), then a stalled or failed send, the lease ended from outside, the
// receiver's end.
func (ls *leaseServer) step() (end bool, err error) {
	for {
		select {
		case ls.pending = <-ls.in.answers:
			// Sending goes deeper than the handler may: on the worker.
			ls.hw.do(ls.send1)
			ls.pending = served{} // an idle stream keeps no answer alive
			if ls.sentEnd {
				return true, ls.sentErr
			}
			continue
		default:
		}
		select {
		case <-ls.out.stalled:
			return true, ls.out.stalledStatus()
		default:
		}
		select {
		case <-ls.out.exited:
			return true, ls.out.err
		default:
		}
		select {
		case <-ls.sess.Done():
			return true, ls.s.streamEnd(ls.ctx, ls.out, ls.sess, errEndedOutside)
		default:
		}
		select {
		case err := <-ls.in.errs:
			if ls.ctx.Err() != nil {
				return true, ctxStatus(ls.ctx.Err())
			}
			return true, ls.endOfRequests(err)
		default:
		}
		return false, nil
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
