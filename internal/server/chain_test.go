package server

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// TestUnaryChainAllocatesNothing: with authentication off, a unary call
// that ends OK sooner than the slow-call threshold passes registryd's
// interceptors (the request log, recovery, the limits per identity, the
// decode check, the count of running handlers) without allocating.
func TestUnaryChainAllocatesNothing(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil)) // info, as registryd's default
	c := &chain{
		log:    &requestLog{log: log, slow: time.Hour},
		recov:  recoverer(log),
		ids:    newIdentityLimits(Limits{IdentityRate: 1000, IdentityBurst: 2000, IdentityMaxStreams: 256}),
		decode: newDecodeCodec(),
		calls:  newInflight(),
	}
	req := &registryv1.ResolveRequest{Handle: "obj_x"}
	resp := &registryv1.ResolveResponse{}
	info := &grpc.UnaryServerInfo{FullMethod: registryv1.RegistryService_Resolve_FullMethodName}
	var handler grpc.UnaryHandler = func(context.Context, any) (any, error) { return resp, nil }
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() {
		if _, err := c.unary(ctx, req, info, handler); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a unary call allocates %v times in the interceptors, want 0", n)
	}
}
