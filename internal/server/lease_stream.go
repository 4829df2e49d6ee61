package server

import (
	"context"
	"errors"
	"fmt"
	"io"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/observe"
	"github.com/weakref/registry/internal/telemetry"
)

type leaseStream = grpc.BidiStreamingServer[registryv1.LeaseRequest, registryv1.LeaseResponse]

// Lease serves one lease stream. One goroutine receives; this one decides
// and sends, so that a revoke can interrupt a stream that sends nothing.
func (s *registryService) Lease(stream leaseStream) error {
	ctx := stream.Context()
	reqs := make(chan *registryv1.LeaseRequest)
	recvErr := make(chan error, 1)
	go func() {
		// Ends when Recv fails, which it does once this handler returns.
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	var first *registryv1.LeaseRequest
	select {
	case first = <-reqs:
	case err := <-recvErr:
		return endOfStream(err)
	case <-ctx.Done():
		return ctx.Err()
	}
	open := first.GetOpen()
	if open == nil {
		if first.GetKind() == nil {
			return toStatus(fmt.Errorf("%w: the lease request has no kind; send open first", ErrRequestEmpty), handle.Lease)
		}
		return toStatus(ErrLeaseNotOpen, handle.Lease)
	}
	params := lease.OpenParams{
		Client: open.GetClientName(),
		Grace:  max(open.GetGrace().AsDuration(), 0),
		Resume: open.GetResumeLeaseId(),
	}
	if p, ok := peer.FromContext(ctx); ok {
		params.Peer = p.Addr.String()
	}
	sess, err := s.leases.Open(params)
	if err != nil {
		return toStatus(err, handle.Lease)
	}
	// However this handler ends, a lease it still holds is detached:
	// released now, or kept for its grace. After Close, revoke or
	// take-over it does nothing.
	closed := false // by the client, with close
	defer func() { detach(ctx, sess, closed) }()

	info := sess.Info()
	if err := stream.Send(&registryv1.LeaseResponse{
		RequestId: first.GetRequestId(),
		Kind: &registryv1.LeaseResponse_Opened{Opened: &registryv1.LeaseOpened{
			LeaseId:  sess.ID(),
			Grace:    durationpb.New(info.Grace),
			Resumed:  sess.Resumed(),
			PinCount: int32(info.Pins),
		}},
	}); err != nil {
		return err
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

	for {
		select {
		case req := <-reqs:
			resp, done, err := s.leaseRequest(ctx, sess, req)
			if errors.Is(err, lease.ErrEnded) || errors.Is(err, lease.ErrTakenOver) {
				select { // ended from outside: say why
				case <-sess.Done():
					return sendRevoked(stream, sess)
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if err != nil {
				return err
			}
			closed = done
			if err := stream.Send(resp); err != nil {
				return err
			}
			if done {
				return nil
			}
		case <-sess.Done():
			return sendRevoked(stream, sess)
		case err := <-recvErr:
			return endOfStream(err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// leaseRequest serves one request after open. done means the lease was
// closed and the stream should end after resp.
func (s *registryService) leaseRequest(ctx context.Context, sess *lease.Session, req *registryv1.LeaseRequest) (resp *registryv1.LeaseResponse, done bool, err error) {
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
		traced := s.traceResults(ctx, telemetry.SpanUnpin, telemetry.EventUnpinHandle, sess.ID(), len(k.Unpin.GetHandles()))
		rs, err := sess.Unpin(k.Unpin.GetHandles(), s.linger(k.Unpin.GetHandoff()))
		traced(rs, err)
		if err != nil {
			return nil, false, err
		}
		resp.Kind = &registryv1.LeaseResponse_Unpinned{Unpinned: resultsToProto(rs)}
	case *registryv1.LeaseRequest_Close:
		n, err := sess.Close(s.linger(k.Close.GetHandoff()))
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

// sendRevoked tells the client why its lease was ended from outside, then
// ends the stream.
func sendRevoked(stream leaseStream, sess *lease.Session) error {
	cause, reason, released := sess.Revocation()
	addEvent(stream.Context(), telemetry.EventLeaseEnd, func() []attribute.KeyValue {
		return []attribute.KeyValue{telemetry.KeyLeaseID.String(sess.ID()), telemetry.KeyLeaseEnd.String(causeNames[cause]),
			telemetry.ReasonAttr(reason), telemetry.KeyReleased.Int(released)}
	})
	return stream.Send(&registryv1.LeaseResponse{Kind: &registryv1.LeaseResponse_Revoked{Revoked: &registryv1.LeaseRevoked{
		Cause:    causeToProto[cause],
		Reason:   reason,
		Released: int32(released),
	}}})
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
		sess.Detach() // ended from outside; sendRevoked said how, if it could
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
