package server

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
)

// chain is registryd's own interceptors as one, outermost first: the
// request's log line, panic recovery, then authentication (mid, when
// on), then the limits per identity, the decode check and the error to
// status mapping, and the count of handlers running. gRPC's chaining
// allocates a closure per level per call; with authentication off and no
// telemetry this is the only interceptor, and a unary call passes it
// without allocating.
type chain struct {
	log    *requestLog // nil: no request lines
	recov  func(ctx context.Context, p any) error
	ids    *identityLimits
	decode *decodeCodec
	calls  *inflight
	auth   bool // an identity slot for the log line (identitySlot)
	// mid are the interceptors authentication adds, run between the log
	// and the limits, chained as gRPC chains them; nil: none.
	midUnary  grpc.UnaryServerInterceptor
	midStream grpc.StreamServerInterceptor
}

func (c *chain) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !c.log.wants(info.FullMethod) {
		return c.guarded(ctx, req, info, handler)
	}
	start := time.Now()
	if c.auth {
		ctx = context.WithValue(ctx, identitySlotKey{}, &identitySlot{})
	}
	resp, err := c.guarded(ctx, req, info, handler)
	c.log.finish(ctx, info.FullMethod, "unary", start, err)
	return resp, err
}

// guarded turns a panic below it into INTERNAL, logged with its stack.
func (c *chain) guarded(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, c.recov(ctx, p)
		}
	}()
	if c.midUnary == nil {
		return c.inner(ctx, req, info, handler)
	}
	return c.midUnary(ctx, req, info, func(ctx context.Context, req any) (any, error) {
		return c.inner(ctx, req, info, handler)
	})
}

// inner applies the limits per identity, answers a request that did not
// decode, and makes the handler's error a status.
func (c *chain) inner(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if c.ids.rate != nil && !exempt(info.FullMethod) {
		if err := c.ids.rate.Limit(ctx); err != nil {
			return nil, toStatus(err, handle.Object)
		}
	}
	if err := c.decode.failure(req); err != nil {
		return nil, err
	}
	c.calls.enter()
	defer c.calls.leave()
	resp, err := handler(ctx, req)
	return resp, asStatus(err)
}

func (c *chain) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !c.log.wants(info.FullMethod) {
		return c.guardedStream(srv, ss, info, handler)
	}
	start := time.Now()
	if c.auth {
		ss = &slotStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), identitySlotKey{}, &identitySlot{})}
	}
	err := c.guardedStream(srv, ss, info, handler)
	c.log.finish(ss.Context(), info.FullMethod, streamKind(info.IsClientStream, info.IsServerStream), start, err)
	return err
}

func (c *chain) guardedStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = c.recov(ss.Context(), p)
		}
	}()
	if c.midStream == nil {
		return c.innerStream(srv, ss, info, handler)
	}
	return c.midStream(srv, ss, info, func(srv any, ss grpc.ServerStream) error {
		return c.innerStream(srv, ss, info, handler)
	})
}

func (c *chain) innerStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return c.ids.stream(srv, ss, info, func(srv any, ss grpc.ServerStream) error {
		c.calls.enter()
		defer c.calls.leave()
		return asStatus(handler(srv, &decodeStream{ServerStream: ss, codec: c.decode}))
	})
}

// recoverer is chain.recov: the panic is logged with its stack, and the
// call answers INTERNAL.
func recoverer(log interface {
	ErrorContext(ctx context.Context, msg string, args ...any)
}) func(context.Context, any) error {
	return func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic serving a request", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return toStatus(errPanic, handle.Object)
	}
}

// chainUnary chains is as gRPC does, first outermost; nil for none.
func chainUnary(is []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	if len(is) == 0 {
		return nil
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return unaryAt(is, 0, ctx, req, info, handler)
	}
}

func unaryAt(is []grpc.UnaryServerInterceptor, i int, ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) { //nolint:revive // the index comes first, as in gRPC's own chain
	if i == len(is)-1 {
		return is[i](ctx, req, info, handler)
	}
	return is[i](ctx, req, info, func(ctx context.Context, req any) (any, error) {
		return unaryAt(is, i+1, ctx, req, info, handler)
	})
}

// chainStream is chainUnary for streams.
func chainStream(is []grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	if len(is) == 0 {
		return nil
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return streamAt(is, 0, srv, ss, info, handler)
	}
}

func streamAt(is []grpc.StreamServerInterceptor, i int, srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if i == len(is)-1 {
		return is[i](srv, ss, info, handler)
	}
	return is[i](srv, ss, info, func(srv any, ss grpc.ServerStream) error {
		return streamAt(is, i+1, srv, ss, info, handler)
	})
}

// anonymous reports whether ctx's call is the anonymous identity's.
func anonymous(ctx context.Context) bool { return auth.FromContext(ctx).Name == auth.AnonymousName }
