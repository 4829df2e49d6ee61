package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// leaseStream is one open lease: a Lease stream and the goroutine that
// reads it. Requests are sent one at a time and each waits for its answer,
// which is all a command line needs.
type leaseStream struct {
	stream registryv1.RegistryService_LeaseClient
	cancel context.CancelFunc
	msgs   chan *registryv1.LeaseResponse // closed after the stream ends
	err    error                          // why it ended; read after msgs is closed
	id     string
	grace  time.Duration
	nextID uint64
}

// defaultClientName names registryctl's leases in 'leases ls' and
// 'inspect' so an operator can tell whose they are.
func defaultClientName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("registryctl@%s[%d]", host, os.Getpid())
}

// openLease opens a lease on a stream of its own that lives until ctx
// ends or close is called. --timeout bounds the opening only.
func (a *app) openLease(ctx context.Context, name string, grace time.Duration) (*leaseStream, error) {
	rc, err := a.registry()
	if err != nil {
		return nil, err
	}
	// The stream outlives an interrupt of ctx, so that the lease can
	// still be closed cleanly after Ctrl-C; abort cuts it. Until the
	// lease is open, --timeout bounds it from the connection on: a server
	// that accepts connections but never answers would otherwise hold us
	// for gRPC's 20s connect timeout.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	expired := time.AfterFunc(a.timeout, cancel)
	fail := func(err error) (*leaseStream, error) {
		if !expired.Stop() {
			err = status.Errorf(codes.DeadlineExceeded, "lease not opened within %s", a.timeout)
		}
		cancel()
		return nil, err
	}
	stream, err := rc.Lease(sctx)
	if err != nil {
		return fail(err)
	}
	l := &leaseStream{stream: stream, cancel: cancel, msgs: make(chan *registryv1.LeaseResponse, 1)}
	go l.read()
	open := &registryv1.OpenLease{ClientName: name}
	if grace > 0 {
		open.Grace = durationpb.New(grace)
	}
	resp, err := l.call(ctx, a.timeout, &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Open{Open: open}})
	if err == nil && !expired.Stop() {
		err = status.Errorf(codes.DeadlineExceeded, "lease not opened within %s", a.timeout)
	}
	if err != nil {
		l.abort()
		return fail(err)
	}
	opened := resp.GetOpened()
	if opened == nil {
		l.abort()
		return nil, fmt.Errorf("registryd answered the lease's opening with %T", resp.GetKind())
	}
	l.id, l.grace = opened.GetLeaseId(), opened.GetGrace().AsDuration()
	return l, nil
}

func (l *leaseStream) read() {
	defer close(l.msgs)
	for {
		m, err := l.stream.Recv()
		if err != nil {
			l.err = err
			return
		}
		l.msgs <- m
	}
}

// call sends req and waits up to timeout for the answer with its id.
func (l *leaseStream) call(ctx context.Context, timeout time.Duration, req *registryv1.LeaseRequest) (*registryv1.LeaseResponse, error) {
	l.nextID++
	req.RequestId = l.nextID
	if err := l.stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err // io.EOF: the stream ended; read says why
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-l.msgs:
			if !ok {
				return nil, l.ended()
			}
			if rev := m.GetRevoked(); rev != nil {
				return nil, revokedError(l.id, rev)
			}
			if m.GetRequestId() == req.RequestId {
				return m, nil
			}
		case <-timer.C:
			// A status, so that it reads and exits as any call without
			// an answer does: "no answer from registryd ...", status 4.
			return nil, status.Errorf(codes.DeadlineExceeded, "registryd did not answer within %s", timeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// pin pins handles and returns a result per handle, in order.
func (l *leaseStream) pin(ctx context.Context, timeout time.Duration, handles []string) ([]*registryv1.PinResult, error) {
	resp, err := l.call(ctx, timeout, &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Pin{Pin: &registryv1.PinHandles{Handles: handles}}})
	if err != nil {
		return nil, err
	}
	return resp.GetPinned().GetResults(), nil
}

// hold blocks until ctx ends (an interrupt: nil) or the lease does (an
// error that says how).
func (l *leaseStream) hold(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-l.msgs:
			if !ok {
				return l.ended()
			}
			if rev := m.GetRevoked(); rev != nil {
				return revokedError(l.id, rev)
			}
		}
	}
}

// close ends the lease cleanly and returns how many pins it released.
func (l *leaseStream) close(timeout time.Duration) (int32, error) {
	defer l.abort()
	resp, err := l.call(context.Background(), timeout, &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Close{Close: &registryv1.CloseLease{}}})
	if err != nil {
		return 0, err
	}
	return resp.GetClosed().GetReleased(), nil
}

// abort cuts the stream without closing the lease: it stays, detached,
// for its grace.
func (l *leaseStream) abort() {
	l.cancel()
	for range l.msgs {
	}
}

// ended explains a stream that ended without being asked to.
func (l *leaseStream) ended() error {
	if l.err == nil || errors.Is(l.err, io.EOF) {
		return errors.New("registryd ended the lease stream")
	}
	if l.id == "" {
		return l.err
	}
	fate := "its pins were released with it"
	if l.grace > 0 {
		fate = fmt.Sprintf("it keeps its pins for its grace of %s, then releases them", l.grace)
	}
	return &cmdError{
		msg:  fmt.Sprintf("lost the stream of lease %s to registryd: %v; %s", l.id, l.err, fate),
		code: exitUnavailable,
	}
}

func revokedError(id string, rev *registryv1.LeaseRevoked) error {
	var why string
	code := exitError
	switch rev.GetCause() {
	case registryv1.RevokeCause_REVOKE_CAUSE_ADMIN:
		why = "an operator revoked it"
	case registryv1.RevokeCause_REVOKE_CAUSE_TAKEN_OVER:
		why = "another stream resumed it"
	case registryv1.RevokeCause_REVOKE_CAUSE_SHUTDOWN:
		why = "registryd is shutting down"
		code = exitUnavailable
	default:
		why = "registryd revoked it"
	}
	if rev.GetReason() != "" {
		why += fmt.Sprintf(" (%q)", rev.GetReason())
	}
	return &cmdError{
		msg:  fmt.Sprintf("lease %s ended: %s; %d pin%s released", id, why, rev.GetReleased(), plural(int(rev.GetReleased()))),
		code: code,
	}
}
