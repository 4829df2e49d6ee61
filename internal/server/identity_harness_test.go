package server

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// withTestIdentity stands in for authentication where it runs: a call
// with an x-test-identity header is that identity (testIdentity); one
// without is anonymous, as with auth off.
func withTestIdentity() interceptorSet {
	return interceptorSet{
		unary: []grpc.UnaryServerInterceptor{func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(testIdentity(ctx), req)
		}},
		stream: []grpc.StreamServerInterceptor{func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, &limitedStream{ServerStream: ss, ctx: testIdentity(ss.Context())})
		}},
	}
}

// as returns ctx whose calls claim identity name.
func as(ctx context.Context, name string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, testIdentityHeader, name)
}

// testAuthOf is the test identity's stand-in, unless real authentication
// runs.
func testAuthOf(on bool) interceptorSet {
	if !on {
		return interceptorSet{}
	}
	return withTestIdentity()
}
