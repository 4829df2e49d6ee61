package server

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// Domain is the ErrorInfo domain of every error the registry returns.
const Domain = "registry"

// Reasons: the ErrorInfo reasons clients branch on. README.md lists them
// all with their codes; keep the two in step.
const (
	ReasonHandleMalformed   = "HANDLE_MALFORMED"
	ReasonHandleUnknown     = "HANDLE_UNKNOWN"
	ReasonHandleForeignNode = "HANDLE_FOREIGN_NODE"
	ReasonRestarted         = "REGISTRY_RESTARTED"
	ReasonCollected         = "OBJECT_COLLECTED"
	ReasonDeleted           = "OBJECT_DELETED"
	ReasonPinned            = "OBJECT_PINNED"
	ReasonPayloadEmpty      = "PAYLOAD_EMPTY"
	ReasonLabelsInvalid     = "LABELS_INVALID"
	ReasonLeaseMalformed    = "LEASE_ID_MALFORMED"
	ReasonLeaseNotFound     = "LEASE_NOT_FOUND"
	ReasonLeaseNotOpen      = "LEASE_NOT_OPEN"
	ReasonLeaseAlreadyOpen  = "LEASE_ALREADY_OPEN"
	ReasonLeaseTakenOver    = "LEASE_TAKEN_OVER"
	ReasonRequestEmpty      = "REQUEST_EMPTY"
	ReasonTooManyHandles    = "TOO_MANY_HANDLES"
	ReasonPageToken         = "PAGE_TOKEN_INVALID"
	ReasonWatchTooSlow      = "WATCH_TOO_SLOW"
	ReasonWatchCompacted    = "WATCH_HISTORY_COMPACTED"
	ReasonShuttingDown      = "SHUTTING_DOWN"
	ReasonMessageTooLarge   = "MESSAGE_TOO_LARGE"
	ReasonUploadNoHeader    = "UPLOAD_HEADER_MISSING"
	ReasonUploadSize        = "UPLOAD_SIZE_MISMATCH"
	ReasonUploadNoTrailer   = "UPLOAD_TRAILER_MISSING"
	ReasonChecksum          = "CHECKSUM_MISMATCH"
	ReasonInternal          = "INTERNAL"
)

// statusOf maps a domain error to its code, reason and metadata. kind
// says whether a handle parse error is about an object handle or a lease
// id. This function is the one place where domain errors become gRPC
// codes.
func statusOf(err error, kind handle.Kind) (codes.Code, string, map[string]string) {
	var (
		restarted *handle.RestartedError
		foreign   *handle.ForeignNodeError
		limit     *registry.LimitError
		label     *registry.LabelError
		notLive   *lease.NotLiveError
		compacted *registry.CompactedError
	)
	switch {
	case errors.As(err, &notLive):
		code, reason, md := statusOf(notLive.Err, handle.Lease)
		if code == codes.NotFound {
			code = codes.FailedPrecondition // the request needs a live lease
		}
		return code, reason, md
	case errors.Is(err, handle.ErrMalformed):
		if kind == handle.Lease {
			return codes.InvalidArgument, ReasonLeaseMalformed, nil
		}
		return codes.InvalidArgument, ReasonHandleMalformed, nil
	case errors.Is(err, handle.ErrUnknown):
		if kind == handle.Lease {
			return codes.NotFound, ReasonLeaseNotFound, nil
		}
		return codes.NotFound, ReasonHandleUnknown, nil
	case errors.As(err, &restarted):
		return codes.NotFound, ReasonRestarted, map[string]string{
			"handle_epoch":     strconv.FormatUint(restarted.Issued, 10),
			"current_epoch":    strconv.FormatUint(restarted.Current, 10),
			"epoch_start_time": time.UnixMilli(int64(restarted.Current)).UTC().Format(time.RFC3339Nano),
		}
	case errors.As(err, &foreign):
		return codes.NotFound, ReasonHandleForeignNode, map[string]string{"node": strconv.Itoa(int(foreign.Node))}
	case errors.Is(err, registry.ErrCollected):
		return codes.NotFound, ReasonCollected, nil
	case errors.Is(err, registry.ErrDeleted):
		return codes.NotFound, ReasonDeleted, nil
	case errors.Is(err, registry.ErrPinned):
		return codes.FailedPrecondition, ReasonPinned, nil
	case errors.Is(err, registry.ErrPayloadEmpty):
		return codes.InvalidArgument, ReasonPayloadEmpty, nil
	case errors.As(err, &label):
		return codes.InvalidArgument, ReasonLabelsInvalid, map[string]string{"key": label.Key}
	case errors.As(err, &limit):
		return codes.ResourceExhausted, limit.Limit, map[string]string{
			"max":  strconv.FormatInt(limit.Max, 10),
			"want": strconv.FormatInt(limit.Want, 10),
		}
	case errors.Is(err, registry.ErrPageToken):
		return codes.InvalidArgument, ReasonPageToken, nil
	case errors.Is(err, registry.ErrWatchTooSlow):
		return codes.ResourceExhausted, ReasonWatchTooSlow, nil
	case errors.As(err, &compacted):
		return codes.OutOfRange, ReasonWatchCompacted, map[string]string{
			"oldest_sequence": strconv.FormatUint(compacted.Oldest, 10),
			"from_sequence":   strconv.FormatUint(compacted.From, 10),
		}
	case errors.Is(err, lease.ErrNotFound), errors.Is(err, lease.ErrEnded):
		return codes.NotFound, ReasonLeaseNotFound, nil
	case errors.Is(err, lease.ErrTakenOver):
		return codes.Aborted, ReasonLeaseTakenOver, nil
	case errors.Is(err, lease.ErrClosed), errors.Is(err, registry.ErrClosed):
		return codes.Unavailable, ReasonShuttingDown, nil
	}
	return codes.Internal, ReasonInternal, nil
}

// hints say what a caller can do about an error, after what happened.
var hints = map[string]string{
	ReasonHandleMalformed:   "handles look like obj_ followed by 52 characters",
	ReasonHandleUnknown:     "it comes from another registry, or from a run with another key",
	ReasonRestarted:         "the object went with that run; put it again",
	ReasonHandleForeignNode: "ask the node that issued it",
	ReasonCollected:         "no lease pinned it and the garbage collector took it; hold a lease on objects you still need",
	ReasonDeleted:           "an operator deleted it",
	ReasonPinned:            "see who pins it with AdminService/InspectObject, or delete with force",
	ReasonLeaseMalformed:    "lease ids look like lse_ followed by 52 characters",
	ReasonLeaseNotFound:     "it was never opened, has ended, or its grace ran out; open a new lease",
	ReasonWatchCompacted:    "the events since are lost to this watcher: watch anew from 0 for the current states; --watch-history keeps more",
}

// toStatus returns err as a gRPC status error with an ErrorInfo.
func toStatus(err error, kind handle.Kind) error {
	code, reason, md := statusOf(err, kind)
	msg := err.Error()
	if h := hints[reason]; h != "" {
		msg += ": " + h
	}
	return newStatus(code, reason, msg, md)
}

// newStatus builds a status error carrying ErrorInfo{domain, reason}.
func newStatus(code codes.Code, reason, msg string, md map[string]string) error {
	for k, v := range md {
		// Metadata may echo client input, and a proto string must be
		// UTF-8 or the whole ErrorInfo would be lost.
		md[k] = strings.ToValidUTF8(v, "\uFFFD")
	}
	st := status.New(code, msg)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Domain: Domain, Reason: reason, Metadata: md}); err == nil {
		st = withInfo
	}
	return st.Err()
}
