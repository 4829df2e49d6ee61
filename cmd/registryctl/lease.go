package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// Leases are the Go client's: one that was opened with a grace survives a
// dropped connection by resuming, as any application's would.

// defaultClientName names registryctl's leases in 'leases ls' and
// 'inspect' so an operator can tell whose they are.
func defaultClientName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("registryctl@%s[%d]", host, os.Getpid())
}

// openLease opens a lease; --timeout bounds the opening, from the
// connection on. The lease lives until closed, not until ctx ends, so that
// an interrupt can still close it cleanly.
func (a *app) openLease(ctx context.Context, name string, grace time.Duration) (*client.Lease, error) {
	cl, err := a.client()
	if err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	l, err := cl.Lease(octx, client.LeaseName(name), client.Grace(grace))
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		// A status, so that it reads and exits as any call without an
		// answer does: "no answer from registryd ...", status 4.
		return nil, status.Errorf(codes.DeadlineExceeded, "lease not opened within %s", a.timeout)
	}
	return l, err
}

// pin pins handles under l, waiting at most --timeout for the answer.
func (a *app) pin(ctx context.Context, l *client.Lease, handles []string) ([]client.PinResult, error) {
	pctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	rs, err := l.Pin(pctx, handles...)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, status.Errorf(codes.DeadlineExceeded, "registryd did not answer within %s", a.timeout)
	}
	if err != nil {
		return nil, a.leaseEnded(l, err)
	}
	return rs, nil
}

// closeLease closes l, with a hand-off, and returns how many pins it
// released.
func (a *app) closeLease(l *client.Lease, handoff time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
	defer cancel()
	n, err := l.CloseWithHandoff(ctx, handoff)
	if err != nil {
		return 0, a.leaseEnded(l, err)
	}
	return n, nil
}

// holdUntilInterrupted keeps l open until an interrupt, then closes it
// with the hand-off.
func (a *app) holdUntilInterrupted(ctx context.Context, l *client.Lease, handoff time.Duration) error {
	select {
	case <-ctx.Done():
	case <-l.Done():
		return a.leaseEnded(l, l.Err())
	}
	released, err := a.closeLease(l, handoff)
	if err != nil {
		return opErr("close lease "+l.ID(), err)
	}
	fmt.Fprintf(a.stderr, "closed lease %s; released %d pin%s\n", l.ID(), released, plural(released))
	if handoff > 0 && released > 0 {
		fmt.Fprintf(a.stderr, "handed off: the objects stay held up to %s (the server caps it) for another process to pin\n", handoff)
	}
	return nil
}

// leaseEnded explains a lease that ended without registryctl closing it,
// with the exit status that says how.
func (a *app) leaseEnded(l *client.Lease, err error) error {
	var le *client.LeaseError
	if !errors.As(err, &le) {
		return err
	}
	switch {
	case errors.Is(le, client.ErrLeaseRevoked):
		why, code := "registryd revoked it", exitError
		switch le.Cause {
		case client.CauseAdmin:
			why = "an operator revoked it"
		case client.CauseTakenOver:
			why = "another stream resumed it"
		case client.CauseShutdown:
			why, code = "registryd is shutting down", exitUnavailable
		}
		if le.Reason != "" {
			why += fmt.Sprintf(" (%q)", le.Reason)
		}
		return &cmdError{
			msg:  fmt.Sprintf("lease %s ended: %s; %d pin%s released", l.ID(), why, le.Released, plural(le.Released)),
			code: code,
		}
	case errors.Is(le, client.ErrRestarted):
		return &cmdError{msg: fmt.Sprintf("lease %s ended: registryd restarted, and its objects went with it", l.ID()), code: exitNotFound}
	}
	fate := "its pins were released with it"
	if g := l.GraceGranted(); g > 0 {
		fate = fmt.Sprintf("it was not resumed within its grace of %s, and its pins were released", g)
	}
	return &cmdError{
		msg:  fmt.Sprintf("lost lease %s: the connection to registryd dropped (%v); %s", l.ID(), le.Err, fate),
		code: exitUnavailable,
	}
}

// pinResultsProto renders the client's results as the API's message, for
// -w json and yaml. The conversion loses nothing.
func pinResultsProto(rs []client.PinResult) *registryv1.PinResults {
	out := &registryv1.PinResults{Results: make([]*registryv1.PinResult, len(rs))}
	for i, r := range rs {
		pr := &registryv1.PinResult{Handle: r.Handle, Outcome: registryv1.PinOutcome(r.Outcome)}
		var e *client.Error
		if errors.As(r.Err, &e) {
			pr.Error = &registryv1.HandleError{Code: int32(e.Code), Reason: e.Reason, Message: e.Message}
		}
		if r.Info.Handle != "" {
			pr.Info = infoProto(r.Info)
		}
		out.Results[i] = pr
	}
	return out
}

func infoProto(in client.Info) *registryv1.ObjectInfo {
	ts := func(t time.Time) *timestamppb.Timestamp {
		if t.IsZero() {
			return nil
		}
		return timestamppb.New(t)
	}
	out := &registryv1.ObjectInfo{
		Handle:      in.Handle,
		Size:        in.Size,
		ContentType: in.ContentType,
		Labels:      in.Labels,
		State:       registryv1.ObjectState(in.State),
		PinCount:    int32(in.PinCount),
		CreateTime:  ts(in.Created),
		AccessTime:  ts(in.Accessed),
		StateTime:   ts(in.StateSince),
		LingerUntil: ts(in.LingerUntil),
		SoftCached:  in.SoftCached,

		WeakGcCycles:  in.WeakGCCycles,
		SuspectedLeak: in.SuspectedLeak,
	}
	if in.Linger > 0 {
		out.Linger = durationpb.New(in.Linger)
	}
	return out
}

// release closes l if a command returns without having closed it: on an
// error after the lease opened. A lease that has ended needs nothing.
func (a *app) release(l *client.Lease) {
	select {
	case <-l.Done():
	default:
		// The command's own error is the one to report.
		_, _ = a.closeLease(l, 0)
	}
}
