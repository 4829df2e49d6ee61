package client

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func statusWith(code codes.Code, reason string) error {
	st, err := status.New(code, "msg").WithDetails(&errdetails.ErrorInfo{Domain: "registry", Reason: reason})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

// TestErrorsMatchTheirKind: an error from the server matches the
// sentinel of its reason, and a cancelled call its context error.
func TestErrorsMatchTheirKind(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want error
	}{
		{statusWith(codes.InvalidArgument, "FIELD_INVALID"), ErrInvalid},
		{statusWith(codes.InvalidArgument, "REQUEST_MALFORMED"), ErrInvalid},
		{statusWith(codes.ResourceExhausted, "STREAM_STALLED"), ErrTooSlow},
		{statusWith(codes.ResourceExhausted, "MESSAGE_TOO_LARGE"), ErrLimit},
		{statusWith(codes.Internal, "INTERNAL"), ErrInternal},
		{statusWith(codes.DataLoss, "CHECKSUM_MISMATCH"), ErrChecksum},
		{statusWith(codes.Canceled, "REQUEST_CANCELLED"), context.Canceled},
		{statusWith(codes.DeadlineExceeded, "REQUEST_CANCELLED"), context.DeadlineExceeded},
		{status.Error(codes.Canceled, "context canceled"), context.Canceled},
	} {
		if err := fromStatus(tt.err); !errors.Is(err, tt.want) {
			t.Errorf("%v does not match %v", err, tt.want)
		}
	}
	if err := fromStatus(statusWith(codes.DeadlineExceeded, "REQUEST_CANCELLED")); errors.Is(err, context.Canceled) {
		t.Errorf("%v matches context.Canceled", err)
	}
}
