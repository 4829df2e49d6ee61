package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

var reasonCancelled = registryv1.ErrorReason_REQUEST_CANCELLED.String()

// Errors to branch on with errors.Is. Every error the server returns is an
// *Error; those with a registry reason also match one of these.
var (
	// ErrMalformedHandle: the string is not a handle at all.
	ErrMalformedHandle = errors.New("registry: handle is malformed")
	// ErrUnknownHandle: a well-formed handle this registry never issued.
	ErrUnknownHandle = errors.New("registry: handle is unknown")
	// ErrForeignNode: a handle issued by another node. In a cluster its
	// Metadata["owner_addr"] is the owner's address; a cluster's Client
	// never gets it, since it routes each handle to its node.
	ErrForeignNode = errors.New("registry: handle is from another node")
	// ErrRestarted: a handle or lease id from an earlier run of registryd;
	// what it named went with that run.
	ErrRestarted = errors.New("registry: registryd restarted since the handle was issued")
	// ErrCollected: nothing pinned the object and the garbage collector
	// took it. Final: the handle never resolves again.
	ErrCollected = errors.New("registry: object was collected")
	// ErrDeleted: an operator deleted the object.
	ErrDeleted = errors.New("registry: object was deleted")
	// ErrPinned: the operation needs the object unpinned.
	ErrPinned = errors.New("registry: object is pinned")
	// ErrLimit: a configured limit (object size, pinned bytes, leases,
	// pins per lease) would be exceeded; Error.Reason names it.
	ErrLimit = errors.New("registry: limit exceeded")
	// ErrInvalid: the request itself is wrong (empty payload, bad labels, a
	// field out of range, bytes that do not decode).
	ErrInvalid = errors.New("registry: invalid request")
	// ErrLeaseNotFound: no live lease has that id.
	ErrLeaseNotFound = errors.New("registry: lease not found")
	// ErrLeaseLost: the lease ended without Close: its connection dropped
	// and it could not be resumed within its grace.
	ErrLeaseLost = errors.New("registry: lease lost")
	// ErrLeaseRevoked: an operator revoked the lease, another stream took
	// it over, or registryd shut down; LeaseError.Reason says more.
	ErrLeaseRevoked = errors.New("registry: lease revoked")
	// ErrUnavailable: registryd cannot be reached, or is shutting down.
	ErrUnavailable = errors.New("registry: registryd unavailable")
	// ErrNodeUnavailable: the handle belongs to a node of the cluster that
	// is not a live member now. Its objects are not replicated: they answer
	// again if the node comes back in the same run, and REGISTRY_RESTARTED
	// if it restarted.
	ErrNodeUnavailable = errors.New("registry: the handle's node is unavailable")
	// ErrTooSlow: the server ended a stream this client did not read fast
	// enough (a watch that fell behind its events, a stream whose answers
	// went unread).
	ErrTooSlow = errors.New("registry: stream read too slowly")
	// ErrInternal: a bug in registryd; its log says more.
	ErrInternal = errors.New("registry: internal error in registryd")
	// ErrUnauthenticated: registryd requires credentials and the call
	// carried none, or ones it does not accept.
	ErrUnauthenticated = errors.New("registry: not authenticated")
	// ErrPermissionDenied: the caller's identity may not do this: its role
	// does not allow the call, or the lease is another identity's.
	ErrPermissionDenied = errors.New("registry: permission denied")
)

// reasonKinds gives every reason of the API's ErrorReason enum the error
// above that it matches; a test fails when one is missing.
var reasonKinds = map[registryv1.ErrorReason]error{
	registryv1.ErrorReason_HANDLE_MALFORMED:            ErrMalformedHandle,
	registryv1.ErrorReason_HANDLE_UNKNOWN:              ErrUnknownHandle,
	registryv1.ErrorReason_HANDLE_FOREIGN_NODE:         ErrForeignNode,
	registryv1.ErrorReason_REGISTRY_RESTARTED:          ErrRestarted,
	registryv1.ErrorReason_OBJECT_COLLECTED:            ErrCollected,
	registryv1.ErrorReason_OBJECT_DELETED:              ErrDeleted,
	registryv1.ErrorReason_OBJECT_PINNED:               ErrPinned,
	registryv1.ErrorReason_PAYLOAD_EMPTY:               ErrInvalid,
	registryv1.ErrorReason_LABELS_INVALID:              ErrInvalid,
	registryv1.ErrorReason_OBJECT_TOO_LARGE:            ErrLimit,
	registryv1.ErrorReason_MESSAGE_TOO_LARGE:           ErrLimit,
	registryv1.ErrorReason_PINNED_BYTES_LIMIT:          ErrLimit,
	registryv1.ErrorReason_LEASE_PIN_LIMIT:             ErrLimit,
	registryv1.ErrorReason_LEASE_LIMIT:                 ErrLimit,
	registryv1.ErrorReason_WATCHER_LIMIT:               ErrLimit,
	registryv1.ErrorReason_UPLOAD_BYTES_LIMIT:          ErrLimit,
	registryv1.ErrorReason_LEASE_ID_MALFORMED:          ErrLeaseNotFound,
	registryv1.ErrorReason_LEASE_NOT_FOUND:             ErrLeaseNotFound,
	registryv1.ErrorReason_LEASE_NOT_OPEN:              ErrInvalid,
	registryv1.ErrorReason_LEASE_ALREADY_OPEN:          ErrInvalid,
	registryv1.ErrorReason_LEASE_TAKEN_OVER:            ErrLeaseRevoked,
	registryv1.ErrorReason_REQUEST_EMPTY:               ErrInvalid,
	registryv1.ErrorReason_TOO_MANY_HANDLES:            ErrInvalid,
	registryv1.ErrorReason_PAGE_TOKEN_INVALID:          ErrInvalid,
	registryv1.ErrorReason_WATCH_TOO_SLOW:              ErrTooSlow,
	registryv1.ErrorReason_WATCH_HISTORY_COMPACTED:     ErrWatchCompacted,
	registryv1.ErrorReason_SHUTTING_DOWN:               ErrUnavailable,
	registryv1.ErrorReason_UPLOAD_HEADER_MISSING:       ErrInvalid,
	registryv1.ErrorReason_UPLOAD_SIZE_MISMATCH:        ErrInvalid,
	registryv1.ErrorReason_UPLOAD_TRAILER_MISSING:      ErrInvalid,
	registryv1.ErrorReason_CHECKSUM_MISMATCH:           ErrChecksum,
	registryv1.ErrorReason_FIELD_INVALID:               ErrInvalid,
	registryv1.ErrorReason_REQUEST_MALFORMED:           ErrInvalid,
	registryv1.ErrorReason_REQUEST_CANCELLED:           context.Canceled, // context.DeadlineExceeded with that code
	registryv1.ErrorReason_STREAM_STALLED:              ErrTooSlow,
	registryv1.ErrorReason_INTERNAL:                    ErrInternal,
	registryv1.ErrorReason_CREDENTIALS_MISSING:         ErrUnauthenticated,
	registryv1.ErrorReason_CREDENTIALS_INVALID:         ErrUnauthenticated,
	registryv1.ErrorReason_TRANSPORT_INSECURE:          ErrUnauthenticated,
	registryv1.ErrorReason_ROLE_FORBIDDEN:              ErrPermissionDenied,
	registryv1.ErrorReason_LEASE_NOT_OWNED:             ErrPermissionDenied,
	registryv1.ErrorReason_IDENTITY_LEASE_LIMIT:        ErrLimit,
	registryv1.ErrorReason_IDENTITY_PINNED_BYTES_LIMIT: ErrLimit,
	registryv1.ErrorReason_IDENTITY_UPLOAD_BYTES_LIMIT: ErrLimit,
	registryv1.ErrorReason_IDENTITY_STREAM_LIMIT:       ErrLimit,
	registryv1.ErrorReason_RATE_LIMITED:                ErrLimit,
	registryv1.ErrorReason_RESPONSE_TOO_LARGE:          ErrLimit,
	registryv1.ErrorReason_NODE_UNAVAILABLE:            ErrNodeUnavailable,
}

// reasons is reasonKinds by the reason's name, as ErrorInfo carries it.
var reasons = func() map[string]error {
	m := make(map[string]error, len(reasonKinds))
	for r, kind := range reasonKinds {
		m[r.String()] = kind
	}
	return m
}()

// Error is an error returned by registryd: its gRPC code, and the
// registry's reason and metadata when it gave them.
type Error struct {
	Code     codes.Code
	Reason   string            // e.g. "OBJECT_COLLECTED"; "" for a transport error
	Message  string            // the server's message, with its hint
	Metadata map[string]string // e.g. "handle_epoch" for REGISTRY_RESTARTED
	kind     error             // the sentinel it matches, or nil
	status   *status.Status
}

func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("registry: %s (%s)", e.Message, e.Reason)
	}
	return fmt.Sprintf("registry: %s (%s)", e.Message, e.Code)
}

// Is reports whether e is of the kind target names (ErrCollected, ...).
// A call cut short by its context also matches context.Canceled or
// context.DeadlineExceeded.
func (e *Error) Is(target error) bool {
	switch {
	case e.kind != nil && target == e.kind:
		return true
	case target == context.Canceled:
		return e.Code == codes.Canceled && (e.Reason == "" || e.Reason == reasonCancelled)
	case target == context.DeadlineExceeded:
		return e.Code == codes.DeadlineExceeded && (e.Reason == "" || e.Reason == reasonCancelled)
	}
	return false
}

// GRPCStatus returns the status the server sent, so that status.Code and
// status.FromError see through to it.
func (e *Error) GRPCStatus() *status.Status {
	if e.status != nil {
		return e.status
	}
	st := status.New(e.Code, e.Message)
	if e.Reason != "" {
		if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Domain: "registry", Reason: e.Reason, Metadata: e.Metadata}); err == nil {
			st = withInfo
		}
	}
	return st
}

// fromStatus turns an error from a gRPC call into an *Error; context
// errors and nil pass through unchanged.
func fromStatus(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			e.Reason, e.Metadata = info.GetReason(), info.GetMetadata()
			break
		}
	}
	switch {
	case e.Reason == reasonCancelled:
		// Is matches the context error by the code.
	case reasons[e.Reason] != nil:
		e.kind = reasons[e.Reason]
	case e.Code == codes.ResourceExhausted && e.Reason != "":
		e.kind = ErrLimit
	case e.Code == codes.Unavailable:
		e.kind = ErrUnavailable
	}
	return e
}

// LeaseError says why a lease ended without Close. It matches
// ErrLeaseLost, ErrLeaseRevoked or ErrRestarted with errors.Is, and the
// underlying error, if any, with errors.As.
type LeaseError struct {
	LeaseID string
	Kind    error // ErrLeaseLost, ErrLeaseRevoked or ErrRestarted
	// Cause says who revoked the lease, for ErrLeaseRevoked.
	Cause RevokeCause
	// Reason is the operator's reason for a revoke, if they gave one.
	Reason string
	// Released is how many pins the server released, when it said.
	Released int
	// Err is the error that ended it, if any.
	Err error
	// GraceEnded is when a lost lease's grace ran out.
	GraceEnded time.Time
}

// RevokeCause says who ended a revoked lease.
type RevokeCause int

// The causes of a revocation; CauseUnknown is the zero value, for a cause
// this client does not know.
const (
	CauseUnknown   RevokeCause = iota
	CauseAdmin                 // an operator revoked it
	CauseTakenOver             // another stream resumed it
	CauseShutdown              // registryd is shutting down
)

func (c RevokeCause) String() string {
	switch c {
	case CauseAdmin:
		return "revoked by an operator"
	case CauseTakenOver:
		return "taken over by another stream"
	case CauseShutdown:
		return "registryd is shutting down"
	}
	return "revoked"
}

func (e *LeaseError) Error() string {
	msg := fmt.Sprintf("lease %s: %v", e.LeaseID, e.Kind)
	if errors.Is(e.Kind, ErrLeaseRevoked) {
		msg += ": " + e.Cause.String()
	}
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *LeaseError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}
