package client

import (
	"testing"

	"google.golang.org/grpc/codes"
)

// TestWatchResumesAfterTheServerDropsIt: the watch breaks the server makes
// for a watcher that fell behind or stopped reading are mended by a
// resume; a refusal is not.
func TestWatchResumesAfterTheServerDropsIt(t *testing.T) {
	for _, c := range []struct {
		err  *Error
		want bool
	}{
		{&Error{Code: codes.Unavailable}, true},
		{&Error{Code: codes.ResourceExhausted, Reason: reasonWatchTooSlow}, true},
		{&Error{Code: codes.ResourceExhausted, Reason: reasonStreamStalled}, true},
		{&Error{Code: codes.InvalidArgument, Reason: "HANDLE_MALFORMED"}, false},
		{&Error{Code: codes.OutOfRange, Reason: reasonWatchCompacted}, false},
	} {
		if got := resumable(c.err); got != c.want {
			t.Errorf("resumable(%v %s) = %v, want %v", c.err.Code, c.err.Reason, got, c.want)
		}
	}
}
