package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// Errors only the adapter can see: the shape of a request or a stream,
// rather than what the registry holds. statusOf maps each, with the
// domain's, to its code, reason and metadata.
var (
	// ErrRequestEmpty: a request that says nothing, such as a lease request
	// with no kind or a Watch of no handle. REQUEST_EMPTY.
	ErrRequestEmpty = errors.New("the request is empty")
	// ErrLeaseNotOpen: a lease stream whose first message is not open.
	// LEASE_NOT_OPEN.
	ErrLeaseNotOpen = errors.New("the first message on a lease stream must be open")
	// ErrLeaseAlreadyOpen: a second open on a stream that holds a lease.
	// LEASE_ALREADY_OPEN.
	ErrLeaseAlreadyOpen = errors.New("this stream already holds a lease; open a new stream for another lease")
	// ErrUploadHeaderMissing: an Upload whose first message is not its
	// header, or with a second header. UPLOAD_HEADER_MISSING.
	ErrUploadHeaderMissing = errors.New("an upload sends one header, first; nothing was stored")
)

// TooManyHandlesError reports more handles in one request than it may carry.
// TOO_MANY_HANDLES, metadata `max` and `want`.
type TooManyHandlesError struct {
	Max, Want int
}

func (e *TooManyHandlesError) Error() string {
	return fmt.Sprintf("%d handles in one request, more than the %d allowed", e.Want, e.Max)
}

// checkHandles refuses a request naming more than MaxHandlesPerRequest
// handles.
func checkHandles(hs []string) error {
	if len(hs) > MaxHandlesPerRequest {
		return &TooManyHandlesError{Max: MaxHandlesPerRequest, Want: len(hs)}
	}
	return nil
}

// StreamStalledError reports that a client stopped reading its stream, so an answer
// waited Stall for room and the stream was ended. STREAM_STALLED, metadata
// `stall_timeout`.
type StreamStalledError struct {
	Stall time.Duration
	// Sending: the client stopped sending (an upload it began), rather
	// than reading.
	Sending bool
}

func (e *StreamStalledError) Error() string {
	if e.Sending {
		return "the client sent nothing on its upload for " + e.Stall.String() + "; the stream was ended and nothing was stored"
	}
	return "the client did not read its stream for " + e.Stall.String() + "; the stream was ended (a lease stream's lease is detached)"
}

// MessageTooLargeError reports an answer larger than one gRPC message may carry.
// MESSAGE_TOO_LARGE, metadata `max` and `want`.
type MessageTooLargeError struct {
	Size int64 // the object's size
	Max  int   // --max-message-bytes
}

func (e *MessageTooLargeError) Error() string {
	return fmt.Sprintf("object is %d bytes, more than one message may carry (--max-message-bytes %d)", e.Size, e.Max)
}

// WatchEpochError reports that a watch resumed from a sequence of another run of
// registryd. Sequences start again with every run, so the same number
// names another event here. It is a REGISTRY_RESTARTED like a handle's,
// with the same metadata.
type WatchEpochError struct {
	handle.RestartedError // Issued: the watch's epoch
}

func (e *WatchEpochError) Error() string {
	return fmt.Sprintf("the sequence to resume from belongs to another run of registryd (epoch %d, now %d)", e.Issued, e.Current)
}

func (e *WatchEpochError) Unwrap() error { return &e.RestartedError }

func (e *WatchEpochError) hint() string { return "watch anew, without from_sequence" }

// UploadSizeError reports that an Upload carried more or fewer bytes than its header
// said. UPLOAD_SIZE_MISMATCH, metadata `size` and `received`.
type UploadSizeError struct {
	Size, Received int64
}

func (e *UploadSizeError) Error() string {
	more := "more"
	if e.Received < e.Size {
		more = "fewer"
	}
	return fmt.Sprintf("the upload carried %s bytes than its header's %d (%d); nothing was stored", more, e.Size, e.Received)
}

// UploadTrailerError reports that an Upload ended without its trailer.
// UPLOAD_TRAILER_MISSING.
type UploadTrailerError struct {
	Size, Received int64
}

func (e *UploadTrailerError) Error() string {
	return fmt.Sprintf("the upload ended after %d of %d bytes without its trailer; nothing was stored", e.Received, e.Size)
}

// ChecksumError reports that an Upload's bytes do not match its trailer's CRC-32C.
// CHECKSUM_MISMATCH.
type ChecksumError struct {
	Got, Want uint32
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("the bytes received have CRC-32C %08x, the trailer says %08x; nothing was stored", e.Got, e.Want)
}

// MalformedError reports that the request's bytes do not decode as its message.
// REQUEST_MALFORMED.
type MalformedError struct {
	Message string // the message's full name
	Err     error  // why protobuf refused it
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("the request does not decode as %s: %v", e.Message, e.Err)
}

func (e *MalformedError) Unwrap() error { return e.Err }
