package server

import (
	"context"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/authz"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
)

// identityAttribute is the server span's attribute naming the caller.
const identityAttribute = "registry.identity"

// authInterceptors authenticate every call but health's and check its
// role, then apply the --authz-policy if any: go-grpc-middleware's auth
// interceptor with authFunc, under a selector that lets health through.
// A call refused answers with the reason statusOf gives the refusal.
func authInterceptors(a *auth.Authenticator, policy *authz.FileWatcherInterceptor) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
	fn := authFunc(a)
	notHealth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service != auth.HealthService
	})
	unary := []grpc.UnaryServerInterceptor{selector.UnaryServerInterceptor(grpcauth.UnaryServerInterceptor(fn), notHealth)}
	stream := []grpc.StreamServerInterceptor{selector.StreamServerInterceptor(grpcauth.StreamServerInterceptor(fn), notHealth)}
	if policy != nil {
		unary = append(unary, selector.UnaryServerInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			resp, err := policy.UnaryInterceptor(ctx, req, info, handler)
			return resp, policyStatus(err, auth.FromContext(ctx), info.FullMethod)
		}, notHealth))
		stream = append(stream, selector.StreamServerInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			return policyStatus(policy.StreamInterceptor(srv, ss, info, handler), auth.FromContext(ss.Context()), info.FullMethod)
		}, notHealth))
	}
	return unary, stream
}

// authFunc says who the call is from, and refuses it unless that
// identity's role may call its method. The identity goes into the
// context for the handlers, onto the server span, and into the request's
// log line.
func authFunc(a *auth.Authenticator) grpcauth.AuthFunc {
	return func(ctx context.Context) (context.Context, error) {
		method, _ := grpc.Method(ctx)
		id, err := a.Authenticate(ctx)
		if err != nil {
			return nil, toStatus(err, handle.Object)
		}
		// Known, whether or not its role may: a refusal's line and span
		// say whom it refused.
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			span.SetAttributes(attribute.String(identityAttribute, id.Name))
		}
		if slot, ok := ctx.Value(identitySlotKey{}).(*identitySlot); ok {
			slot.name = id.Name
		}
		if err := auth.Authorize(id, method); err != nil {
			return nil, toStatus(err, handle.Object)
		}
		return auth.NewContext(ctx, id), nil
	}
}

// identitySlot carries the caller's name out to the request's log line:
// the request log (chain) runs outside authentication, so it cannot see
// the context authentication returns; it puts the slot in the context
// and reads it when the call finishes instead.
type identitySlot struct{ name string }

type identitySlotKey struct{}

type slotStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *slotStream) Context() context.Context { return s.ctx }

// identityLogFields is the request log line's `identity` field.
func identityLogFields(ctx context.Context) []any {
	if slot, ok := ctx.Value(identitySlotKey{}).(*identitySlot); ok && slot.name != "" {
		return []any{"identity", slot.name}
	}
	return nil
}
