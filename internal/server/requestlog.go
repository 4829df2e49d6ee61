package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/weakref/registry/internal/telemetry"
)

// requestLog writes a call's line when it ends. A call that ended OK in
// less than slow is a debug line, so that at the default level (info) a
// busy server does not write a line, and format its fields, per call:
// that cost a third of a Resolve's throughput. A call that failed, or
// took slow or longer, is logged at the level its code gives (logLevel).
// Health checks are never logged: probes would drown the log.
//
// The line has the fields, and the order, of go-grpc-middleware's
// logging interceptor, which registryd used before, so that what reads
// the log reads it as it did.
type requestLog struct {
	log     *slog.Logger
	slow    time.Duration // 0: every call is slow
	tracing bool          // add the span's trace_id and span_id
	auth    bool          // add the caller's identity (identitySlot)
}

// wants reports whether a call of fullMethod may be logged at all.
func (l *requestLog) wants(fullMethod string) bool {
	return l != nil && !strings.HasPrefix(fullMethod, healthPrefix)
}

var healthPrefix = "/" + healthpb.Health_ServiceDesc.ServiceName + "/"

// level is the level of the line of a call that ended with code after
// took, and whether it is logged at all.
func (l *requestLog) level(ctx context.Context, code codes.Code, took time.Duration) (slog.Level, bool) {
	lvl := slog.LevelDebug
	if code != codes.OK || took >= l.slow {
		lvl = slog.Level(logLevel(code))
	}
	return lvl, l.log.Enabled(ctx, lvl)
}

// finish logs the call of fullMethod, of type kind ("unary",
// "server_stream"...), that began at start and ended with err.
func (l *requestLog) finish(ctx context.Context, fullMethod, kind string, start time.Time, err error) {
	took := time.Since(start)
	if errors.Is(err, io.EOF) {
		err = nil // as go-grpc-middleware: a stream's end, not a failure
	}
	code := status.Code(err)
	lvl, ok := l.level(ctx, code, took)
	if !ok {
		return
	}
	service, method := splitMethod(fullMethod)
	attrs := make([]slog.Attr, 0, 16)
	if l.tracing {
		if f := telemetry.LogFields(ctx); len(f) == 4 {
			attrs = append(attrs, slog.Any(f[0].(string), f[1]), slog.Any(f[2].(string), f[3]))
		}
	}
	if l.auth {
		if f := identityLogFields(ctx); len(f) == 2 {
			attrs = append(attrs, slog.Any(f[0].(string), f[1]))
		}
	}
	attrs = append(attrs,
		slog.String("protocol", "grpc"),
		slog.String("grpc.component", "server"),
		slog.String("grpc.service", service),
		slog.String("grpc.method", method),
		slog.String("grpc.method_type", kind),
	)
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer.address", p.Addr.String()))
	}
	attrs = append(attrs, slog.String("grpc.start_time", start.Format(time.RFC3339)))
	if d, ok := ctx.Deadline(); ok {
		attrs = append(attrs, slog.String("grpc.request.deadline", d.Format(time.RFC3339)))
	}
	attrs = append(attrs, slog.String("grpc.code", code.String()))
	if err != nil {
		attrs = append(attrs, slog.String("grpc.error", err.Error()))
	}
	attrs = append(attrs, slog.String("grpc.time_ms", strconv.FormatFloat(float64(took.Microseconds())/1000, 'f', -1, 64)))
	l.log.LogAttrs(ctx, lvl, "finished call", attrs...)
}

// splitMethod splits "/pkg.Service/Method".
func splitMethod(fullMethod string) (service, method string) {
	s, m, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return "unknown", "unknown"
	}
	return s, m
}

// streamKind names a stream's type as go-grpc-middleware does.
func streamKind(client, server bool) string {
	switch {
	case client && server:
		return "bidi_stream"
	case client:
		return "client_stream"
	case server:
		return "server_stream"
	}
	return "unary"
}
