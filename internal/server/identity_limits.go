package server

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
)

// Limit names of the limits per identity kept here, as in stats and as
// their refusals' reasons.
var (
	LimitIdentityUploadBytes = registryv1.ErrorReason_IDENTITY_UPLOAD_BYTES_LIMIT.String()
	LimitIdentityStreams     = registryv1.ErrorReason_IDENTITY_STREAM_LIMIT.String()
	LimitRate                = registryv1.ErrorReason_RATE_LIMITED.String()
)

// identityLimits are the limits the server keeps per identity, beside the
// global ones: so that one identity's flood leaves the others their share.
// They run after authentication, which says who calls, and before a
// request is decoded or served. None applies to the anonymous identity.
type identityLimits struct {
	uploads *identityBudget // bytes of uploads in flight
	streams *identityBudget // open Lease, Watch, WatchEvents, Upload, Download streams
	rate    *rateLimiter
}

func newIdentityLimits(l Limits) *identityLimits {
	return &identityLimits{
		uploads: newIdentityBudget(LimitIdentityUploadBytes, l.IdentityMaxUploadBytes),
		streams: newIdentityBudget(LimitIdentityStreams, int64(l.IdentityMaxStreams)),
		rate:    newRateLimiter(l.IdentityRate, l.IdentityBurst),
	}
}

// reserveUpload takes n bytes of the budget of ctx's identity for an
// upload's chunks; see identityBudget.reserve. A nil identityLimits
// bounds nothing.
func (l *identityLimits) reserveUpload(ctx context.Context, n int64) (release func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	return l.uploads.reserve(ctx, n)
}

// exempt reports whether a method is outside the limits: health, which
// probes must always reach.
func exempt(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/"+healthpb.Health_ServiceDesc.ServiceName+"/")
}

// A unary call is counted against its identity's rate by chain.inner.

// stream counts a stream's start against its identity's rate, and the
// stream against its identity's open streams until the handler returns.
// A Lease stream's later messages are counted by the handler, through
// limitLeaseRequest, so that a refused one is answered and the lease goes
// on.
func (l *identityLimits) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if exempt(info.FullMethod) {
		return handler(srv, ss)
	}
	ctx := ss.Context()
	if err := l.rate.Limit(ctx); err != nil {
		return toStatus(err, handle.Object)
	}
	release, err := l.streams.reserve(ctx, 1)
	if err != nil {
		return toStatus(err, handle.Object)
	}
	defer release()
	if l.rate != nil && !anonymous(ctx) { // the anonymous identity is never limited
		ss = &limitedStream{ServerStream: ss, ctx: context.WithValue(ctx, rateKey{}, l.rate)}
	}
	return handler(srv, ss)
}

type rateKey struct{}

// limitedStream carries the rate limiter to the handler in its context.
type limitedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *limitedStream) Context() context.Context { return s.ctx }

// limitLeaseRequest counts one request received on a lease stream after
// its open against the identity's rate: nil, or the *RateLimitedError its
// answer carries.
func limitLeaseRequest(ctx context.Context) error {
	l, _ := ctx.Value(rateKey{}).(*rateLimiter)
	return l.Limit(ctx)
}
