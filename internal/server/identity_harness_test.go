package server

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/weakref/registry/internal/auth"
)

// testIdentityHeader names the identity a test's call claims, until
// internal/auth authenticates calls in this package's servers.
const testIdentityHeader = "x-test-identity"

// withTestIdentity stands in for authentication: a call with an
// x-test-identity header is that identity, role client; one without is
// anonymous, as with auth off.
func withTestIdentity() interceptorSet {
	identify := func(ctx context.Context) context.Context {
		md, _ := metadata.FromIncomingContext(ctx)
		if v := md.Get(testIdentityHeader); len(v) > 0 {
			return auth.NewContext(ctx, auth.Identity{Name: v[0], Role: auth.RoleClient})
		}
		return ctx
	}
	return interceptorSet{
		unary: []grpc.UnaryServerInterceptor{func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(identify(ctx), req)
		}},
		stream: []grpc.StreamServerInterceptor{func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, &limitedStream{ServerStream: ss, ctx: identify(ss.Context())})
		}},
	}
}

// as returns ctx whose calls claim identity name.
func as(ctx context.Context, name string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, testIdentityHeader, name)
}

func testAuthOf(on bool) interceptorSet {
	if !on {
		return interceptorSet{}
	}
	return withTestIdentity()
}
