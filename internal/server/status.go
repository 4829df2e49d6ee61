package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// Domain is the ErrorInfo domain of every error the registry returns.
const Domain = "registry"

// Reasons: the ErrorInfo reasons clients branch on, as strings. The API
// declares them, as the ErrorReason enum; these are its names, never
// spelled again here.
var (
	ReasonHandleMalformed          = registryv1.ErrorReason_HANDLE_MALFORMED.String()
	ReasonHandleUnknown            = registryv1.ErrorReason_HANDLE_UNKNOWN.String()
	ReasonHandleForeignNode        = registryv1.ErrorReason_HANDLE_FOREIGN_NODE.String()
	ReasonRestarted                = registryv1.ErrorReason_REGISTRY_RESTARTED.String()
	ReasonCollected                = registryv1.ErrorReason_OBJECT_COLLECTED.String()
	ReasonDeleted                  = registryv1.ErrorReason_OBJECT_DELETED.String()
	ReasonPinned                   = registryv1.ErrorReason_OBJECT_PINNED.String()
	ReasonPayloadEmpty             = registryv1.ErrorReason_PAYLOAD_EMPTY.String()
	ReasonLabelsInvalid            = registryv1.ErrorReason_LABELS_INVALID.String()
	ReasonObjectTooLarge           = registryv1.ErrorReason_OBJECT_TOO_LARGE.String()
	ReasonMessageTooLarge          = registryv1.ErrorReason_MESSAGE_TOO_LARGE.String()
	ReasonPinnedBytesLimit         = registryv1.ErrorReason_PINNED_BYTES_LIMIT.String()
	ReasonLeasePinLimit            = registryv1.ErrorReason_LEASE_PIN_LIMIT.String()
	ReasonLeaseLimit               = registryv1.ErrorReason_LEASE_LIMIT.String()
	ReasonWatcherLimit             = registryv1.ErrorReason_WATCHER_LIMIT.String()
	ReasonUploadBytesLimit         = registryv1.ErrorReason_UPLOAD_BYTES_LIMIT.String()
	ReasonLeaseMalformed           = registryv1.ErrorReason_LEASE_ID_MALFORMED.String()
	ReasonLeaseNotFound            = registryv1.ErrorReason_LEASE_NOT_FOUND.String()
	ReasonLeaseNotOpen             = registryv1.ErrorReason_LEASE_NOT_OPEN.String()
	ReasonLeaseAlreadyOpen         = registryv1.ErrorReason_LEASE_ALREADY_OPEN.String()
	ReasonLeaseTakenOver           = registryv1.ErrorReason_LEASE_TAKEN_OVER.String()
	ReasonRequestEmpty             = registryv1.ErrorReason_REQUEST_EMPTY.String()
	ReasonTooManyHandles           = registryv1.ErrorReason_TOO_MANY_HANDLES.String()
	ReasonPageToken                = registryv1.ErrorReason_PAGE_TOKEN_INVALID.String()
	ReasonWatchTooSlow             = registryv1.ErrorReason_WATCH_TOO_SLOW.String()
	ReasonWatchCompacted           = registryv1.ErrorReason_WATCH_HISTORY_COMPACTED.String()
	ReasonShuttingDown             = registryv1.ErrorReason_SHUTTING_DOWN.String()
	ReasonUploadNoHeader           = registryv1.ErrorReason_UPLOAD_HEADER_MISSING.String()
	ReasonUploadSize               = registryv1.ErrorReason_UPLOAD_SIZE_MISMATCH.String()
	ReasonUploadNoTrailer          = registryv1.ErrorReason_UPLOAD_TRAILER_MISSING.String()
	ReasonChecksum                 = registryv1.ErrorReason_CHECKSUM_MISMATCH.String()
	ReasonFieldInvalid             = registryv1.ErrorReason_FIELD_INVALID.String()
	ReasonRequestMalformed         = registryv1.ErrorReason_REQUEST_MALFORMED.String()
	ReasonRequestCancelled         = registryv1.ErrorReason_REQUEST_CANCELLED.String()
	ReasonStreamStalled            = registryv1.ErrorReason_STREAM_STALLED.String()
	ReasonInternal                 = registryv1.ErrorReason_INTERNAL.String()
	ReasonCredentialsMissing       = registryv1.ErrorReason_CREDENTIALS_MISSING.String()
	ReasonCredentialsInvalid       = registryv1.ErrorReason_CREDENTIALS_INVALID.String()
	ReasonTransportInsecure        = registryv1.ErrorReason_TRANSPORT_INSECURE.String()
	ReasonRoleForbidden            = registryv1.ErrorReason_ROLE_FORBIDDEN.String()
	ReasonLeaseNotOwned            = registryv1.ErrorReason_LEASE_NOT_OWNED.String()
	ReasonIdentityLeaseLimit       = registryv1.ErrorReason_IDENTITY_LEASE_LIMIT.String()
	ReasonIdentityPinnedBytesLimit = registryv1.ErrorReason_IDENTITY_PINNED_BYTES_LIMIT.String()
	ReasonIdentityUploadBytesLimit = registryv1.ErrorReason_IDENTITY_UPLOAD_BYTES_LIMIT.String()
	ReasonIdentityStreamLimit      = registryv1.ErrorReason_IDENTITY_STREAM_LIMIT.String()
	ReasonRateLimited              = registryv1.ErrorReason_RATE_LIMITED.String()
	ReasonResponseTooLarge         = registryv1.ErrorReason_RESPONSE_TOO_LARGE.String()
	ReasonNodeUnavailable          = registryv1.ErrorReason_NODE_UNAVAILABLE.String()
)

// reasonInfo is what the server says with a reason.
type reasonInfo struct {
	code codes.Code // the code the reason comes with
	hint string     // what a caller can do about it, after what happened; may be ""
}

// catalog gives every reason of the enum its code and hint; a test fails
// when a reason is missing. statusOf changes the code in two places only:
// a NOT_FOUND about a lease id (LEASE_NOT_FOUND, REGISTRY_RESTARTED,
// HANDLE_FOREIGN_NODE) is FAILED_PRECONDITION where a call needs a live
// lease, and a call past its deadline is DEADLINE_EXCEEDED.
var catalog = map[registryv1.ErrorReason]reasonInfo{
	registryv1.ErrorReason_HANDLE_MALFORMED:            {codes.InvalidArgument, "handles look like obj_ followed by 52 characters"},
	registryv1.ErrorReason_HANDLE_UNKNOWN:              {codes.NotFound, "it comes from another registry, or from a run with another key"},
	registryv1.ErrorReason_HANDLE_FOREIGN_NODE:         {codes.NotFound, "ask the node that issued it"},
	registryv1.ErrorReason_REGISTRY_RESTARTED:          {codes.NotFound, "what it named went with that run: put the object again, open a new lease, or watch anew"},
	registryv1.ErrorReason_OBJECT_COLLECTED:            {codes.NotFound, "no lease pinned it and the garbage collector took it; hold a lease on objects you still need"},
	registryv1.ErrorReason_OBJECT_DELETED:              {codes.NotFound, "an operator deleted it"},
	registryv1.ErrorReason_OBJECT_PINNED:               {codes.FailedPrecondition, "see who pins it with AdminService/InspectObject, or delete with force"},
	registryv1.ErrorReason_PAYLOAD_EMPTY:               {codes.InvalidArgument, ""},
	registryv1.ErrorReason_LABELS_INVALID:              {codes.InvalidArgument, ""},
	registryv1.ErrorReason_OBJECT_TOO_LARGE:            {codes.ResourceExhausted, ""},
	registryv1.ErrorReason_MESSAGE_TOO_LARGE:           {codes.ResourceExhausted, "use Download"},
	registryv1.ErrorReason_PINNED_BYTES_LIMIT:          {codes.ResourceExhausted, "release pins, or raise --max-pinned-bytes"},
	registryv1.ErrorReason_LEASE_PIN_LIMIT:             {codes.ResourceExhausted, ""},
	registryv1.ErrorReason_LEASE_LIMIT:                 {codes.ResourceExhausted, ""},
	registryv1.ErrorReason_WATCHER_LIMIT:               {codes.ResourceExhausted, "close a watch you no longer read, or raise --max-watchers"},
	registryv1.ErrorReason_UPLOAD_BYTES_LIMIT:          {codes.ResourceExhausted, "retry once other uploads have ended, or raise --max-upload-bytes"},
	registryv1.ErrorReason_LEASE_ID_MALFORMED:          {codes.InvalidArgument, "lease ids look like lse_ followed by 52 characters"},
	registryv1.ErrorReason_LEASE_NOT_FOUND:             {codes.NotFound, "it was never opened, has ended, or its grace ran out; open a new lease"},
	registryv1.ErrorReason_LEASE_NOT_OPEN:              {codes.FailedPrecondition, ""},
	registryv1.ErrorReason_LEASE_ALREADY_OPEN:          {codes.FailedPrecondition, ""},
	registryv1.ErrorReason_LEASE_TAKEN_OVER:            {codes.Aborted, ""},
	registryv1.ErrorReason_REQUEST_EMPTY:               {codes.InvalidArgument, ""},
	registryv1.ErrorReason_TOO_MANY_HANDLES:            {codes.InvalidArgument, "split the request"},
	registryv1.ErrorReason_PAGE_TOKEN_INVALID:          {codes.InvalidArgument, "start again from the first page"},
	registryv1.ErrorReason_WATCH_TOO_SLOW:              {codes.ResourceExhausted, "watch fewer handles or read faster"},
	registryv1.ErrorReason_WATCH_HISTORY_COMPACTED:     {codes.OutOfRange, "the events since are lost to this watcher: watch anew from 0 for the current states; --watch-history keeps more"},
	registryv1.ErrorReason_SHUTTING_DOWN:               {codes.Unavailable, "retry against a running registryd"},
	registryv1.ErrorReason_UPLOAD_HEADER_MISSING:       {codes.InvalidArgument, ""},
	registryv1.ErrorReason_UPLOAD_SIZE_MISMATCH:        {codes.InvalidArgument, ""},
	registryv1.ErrorReason_UPLOAD_TRAILER_MISSING:      {codes.InvalidArgument, ""},
	registryv1.ErrorReason_CHECKSUM_MISMATCH:           {codes.DataLoss, "upload it again"},
	registryv1.ErrorReason_FIELD_INVALID:               {codes.InvalidArgument, ""},
	registryv1.ErrorReason_REQUEST_MALFORMED:           {codes.InvalidArgument, "send the request's message encoded as protobuf, with UTF-8 strings"},
	registryv1.ErrorReason_REQUEST_CANCELLED:           {codes.Canceled, ""},
	registryv1.ErrorReason_STREAM_STALLED:              {codes.ResourceExhausted, "read the stream's answers"},
	registryv1.ErrorReason_INTERNAL:                    {codes.Internal, "a bug in registryd: see the server log, and please report it"},
	registryv1.ErrorReason_CREDENTIALS_MISSING:         {codes.Unauthenticated, "send a bearer token (authorization: Bearer <token>) or a client certificate"},
	registryv1.ErrorReason_CREDENTIALS_INVALID:         {codes.Unauthenticated, "check the token; an operator may have rotated it"},
	registryv1.ErrorReason_TRANSPORT_INSECURE:          {codes.Unauthenticated, "connect with TLS"},
	registryv1.ErrorReason_ROLE_FORBIDDEN:              {codes.PermissionDenied, "ask an operator for credentials with a role that may call it"},
	registryv1.ErrorReason_LEASE_NOT_OWNED:             {codes.PermissionDenied, "use a lease your identity opened"},
	registryv1.ErrorReason_IDENTITY_LEASE_LIMIT:        {codes.ResourceExhausted, "close leases you no longer need, or ask for a higher --identity-max-leases"},
	registryv1.ErrorReason_IDENTITY_PINNED_BYTES_LIMIT: {codes.ResourceExhausted, "release pins, or ask for a higher --identity-max-pinned-bytes"},
	registryv1.ErrorReason_IDENTITY_UPLOAD_BYTES_LIMIT: {codes.ResourceExhausted, "retry once your other uploads have ended, or ask for a higher --identity-max-upload-bytes"},
	registryv1.ErrorReason_IDENTITY_STREAM_LIMIT:       {codes.ResourceExhausted, "close streams you no longer need, or ask for a higher --identity-max-streams"},
	registryv1.ErrorReason_RATE_LIMITED:                {codes.ResourceExhausted, "slow down, and retry after the RetryInfo delay"},
	registryv1.ErrorReason_RESPONSE_TOO_LARGE:          {codes.ResourceExhausted, "resolve it alone, in a smaller batch, or with Download"},
	registryv1.ErrorReason_NODE_UNAVAILABLE:            {codes.Unavailable, "retry when it rejoins (its objects are not replicated)"},
}

// validUTF8 makes md's values UTF-8: metadata may echo client input, and
// a proto string must be UTF-8 or the whole message would be lost.
func validUTF8(md map[string]string) map[string]string {
	for k, v := range md {
		md[k] = strings.ToValidUTF8(v, "\uFFFD")
	}
	return md
}

// statusOf maps an error to its code, reason and metadata. kind says
// whether a handle parse error is about an object handle or a lease id.
// With toStatus it is the one place where errors become gRPC statuses:
// unary calls, streams and per-request answers on a stream all use it.
func statusOf(err error, kind handle.Kind) (codes.Code, string, map[string]string) {
	r, md := classify(err, kind)
	code := catalog[r].code
	var notLive *lease.NotLiveError
	switch {
	case errors.As(err, &notLive) && code == codes.NotFound:
		code = codes.FailedPrecondition // the request needs a live lease
	case r == registryv1.ErrorReason_REQUEST_CANCELLED && errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return code, r.String(), md
}

// classify names err's reason and metadata.
func classify(err error, kind handle.Kind) (registryv1.ErrorReason, map[string]string) {
	var (
		restarted *handle.RestartedError
		foreign   *handle.ForeignNodeError
		owner     *OwnerError
		gone      *NodeUnavailableError
		limit     *registry.LimitError
		label     *registry.LabelError
		notLive   *lease.NotLiveError
		notOwned  *lease.NotOwnedError
		compacted *registry.CompactedError
		field     *FieldError
		tooMany   *TooManyHandlesError
		tooLarge  *MessageTooLargeError
		response  *ResponseTooLargeError
		size      *UploadSizeError
		trailer   *UploadTrailerError
		checksum  *ChecksumError
		malformed *MalformedError
		stalled   *StreamStalledError
		role      *auth.RoleError
		limited   *RateLimitedError
	)
	switch {
	case errors.As(err, &notLive):
		return classify(notLive.Err, handle.Lease)
	case errors.As(err, &notOwned):
		return registryv1.ErrorReason_LEASE_NOT_OWNED, map[string]string{"lease_id": notOwned.LeaseID}
	case errors.Is(err, handle.ErrMalformed):
		if kind == handle.Lease {
			return registryv1.ErrorReason_LEASE_ID_MALFORMED, nil
		}
		return registryv1.ErrorReason_HANDLE_MALFORMED, nil
	case errors.Is(err, handle.ErrUnknown):
		if kind == handle.Lease {
			return registryv1.ErrorReason_LEASE_NOT_FOUND, nil
		}
		return registryv1.ErrorReason_HANDLE_UNKNOWN, nil
	case errors.As(err, &gone):
		return registryv1.ErrorReason_NODE_UNAVAILABLE, map[string]string{"node": strconv.Itoa(int(gone.Foreign.Node))}
	case errors.As(err, &owner):
		return registryv1.ErrorReason_HANDLE_FOREIGN_NODE, map[string]string{
			"node":       strconv.Itoa(int(owner.Foreign.Node)),
			"owner_addr": owner.Addr,
		}
	case errors.As(err, &restarted):
		return registryv1.ErrorReason_REGISTRY_RESTARTED, map[string]string{
			"handle_epoch":     strconv.FormatUint(restarted.Issued, 10),
			"current_epoch":    strconv.FormatUint(restarted.Current, 10),
			"epoch_start_time": time.UnixMilli(int64(restarted.Current)).UTC().Format(time.RFC3339Nano),
		}
	case errors.As(err, &foreign):
		return registryv1.ErrorReason_HANDLE_FOREIGN_NODE, map[string]string{"node": strconv.Itoa(int(foreign.Node))}
	case errors.Is(err, registry.ErrCollected):
		return registryv1.ErrorReason_OBJECT_COLLECTED, nil
	case errors.Is(err, registry.ErrDeleted):
		return registryv1.ErrorReason_OBJECT_DELETED, nil
	case errors.Is(err, registry.ErrPinned):
		return registryv1.ErrorReason_OBJECT_PINNED, nil
	case errors.Is(err, registry.ErrPayloadEmpty):
		return registryv1.ErrorReason_PAYLOAD_EMPTY, nil
	case errors.As(err, &label):
		return registryv1.ErrorReason_LABELS_INVALID, map[string]string{"key": label.Key}
	case errors.As(err, &limit):
		r, ok := registryv1.ErrorReason_value[limit.Limit]
		if !ok {
			return registryv1.ErrorReason_INTERNAL, map[string]string{"limit": limit.Limit}
		}
		md := maxWant(limit.Max, limit.Want)
		if limit.Identity != "" {
			md["identity"] = limit.Identity
		}
		return registryv1.ErrorReason(r), md
	case errors.As(err, &tooLarge):
		return registryv1.ErrorReason_MESSAGE_TOO_LARGE, maxWant(int64(tooLarge.Max), tooLarge.Size)
	case errors.As(err, &response):
		return registryv1.ErrorReason_RESPONSE_TOO_LARGE, maxWant(int64(response.Max), response.Want)
	case errors.As(err, &limited):
		return registryv1.ErrorReason_RATE_LIMITED, map[string]string{
			"identity": limited.Identity,
			"rate":     formatRate(limited.Rate),
			"burst":    strconv.Itoa(limited.Burst),
		}
	case errors.Is(err, registry.ErrPageToken):
		return registryv1.ErrorReason_PAGE_TOKEN_INVALID, nil
	case errors.Is(err, registry.ErrWatchTooSlow):
		return registryv1.ErrorReason_WATCH_TOO_SLOW, nil
	case errors.As(err, &compacted):
		return registryv1.ErrorReason_WATCH_HISTORY_COMPACTED, map[string]string{
			"oldest_sequence": strconv.FormatUint(compacted.Oldest, 10),
			"from_sequence":   strconv.FormatUint(compacted.From, 10),
		}
	case errors.Is(err, lease.ErrNotFound), errors.Is(err, lease.ErrEnded):
		return registryv1.ErrorReason_LEASE_NOT_FOUND, nil
	case errors.Is(err, lease.ErrTakenOver):
		return registryv1.ErrorReason_LEASE_TAKEN_OVER, nil
	case errors.Is(err, lease.ErrClosed), errors.Is(err, registry.ErrClosed):
		return registryv1.ErrorReason_SHUTTING_DOWN, nil
	case errors.As(err, &field):
		return registryv1.ErrorReason_FIELD_INVALID, map[string]string{"field": field.Field}
	case errors.As(err, &tooMany):
		return registryv1.ErrorReason_TOO_MANY_HANDLES, maxWant(int64(tooMany.Max), int64(tooMany.Want))
	case errors.Is(err, ErrRequestEmpty):
		return registryv1.ErrorReason_REQUEST_EMPTY, nil
	case errors.Is(err, ErrLeaseNotOpen):
		return registryv1.ErrorReason_LEASE_NOT_OPEN, nil
	case errors.Is(err, ErrLeaseAlreadyOpen):
		return registryv1.ErrorReason_LEASE_ALREADY_OPEN, nil
	case errors.Is(err, ErrUploadHeaderMissing):
		return registryv1.ErrorReason_UPLOAD_HEADER_MISSING, nil
	case errors.As(err, &size):
		return registryv1.ErrorReason_UPLOAD_SIZE_MISMATCH, map[string]string{
			"size":     strconv.FormatInt(size.Size, 10),
			"received": strconv.FormatInt(size.Received, 10),
		}
	case errors.As(err, &trailer):
		return registryv1.ErrorReason_UPLOAD_TRAILER_MISSING, nil
	case errors.As(err, &checksum):
		return registryv1.ErrorReason_CHECKSUM_MISMATCH, nil
	case errors.As(err, &malformed):
		return registryv1.ErrorReason_REQUEST_MALFORMED, nil
	case errors.As(err, &stalled):
		return registryv1.ErrorReason_STREAM_STALLED, map[string]string{"stall_timeout": stalled.Stall.String()}
	case errors.Is(err, auth.ErrCredentialsMissing):
		return registryv1.ErrorReason_CREDENTIALS_MISSING, nil
	case errors.Is(err, auth.ErrCredentialsInvalid):
		return registryv1.ErrorReason_CREDENTIALS_INVALID, nil
	case errors.Is(err, auth.ErrTransportInsecure):
		return registryv1.ErrorReason_TRANSPORT_INSECURE, nil
	case errors.As(err, &role):
		return registryv1.ErrorReason_ROLE_FORBIDDEN, map[string]string{
			"identity": role.Identity.Name,
			"role":     role.Identity.Role.String(),
			"method":   role.Method,
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return registryv1.ErrorReason_REQUEST_CANCELLED, nil
	}
	return registryv1.ErrorReason_INTERNAL, nil
}

func maxWant(limit, want int64) map[string]string {
	return map[string]string{"max": strconv.FormatInt(limit, 10), "want": strconv.FormatInt(want, 10)}
}

// hinter is an error that knows better what its caller can do than its
// reason's hint.
type hinter interface{ hint() string }

// message is err's text for people, with its hint.
func message(err error, reason string) string {
	msg := err.Error()
	h := catalog[registryv1.ErrorReason(registryv1.ErrorReason_value[reason])].hint
	var own hinter
	if errors.As(err, &own) {
		h = own.hint()
	}
	if h != "" {
		msg += ": " + h
	}
	return msg
}

// toRequestError returns err as a stream answers a request that failed as
// a whole while the stream goes on: what toStatus would say.
func toRequestError(err error, kind handle.Kind) *registryv1.RequestError {
	code, reason, md := statusOf(err, kind)
	msg := message(err, reason)
	re := &registryv1.RequestError{Code: int32(code), Reason: reason, Message: strings.ToValidUTF8(msg, "\uFFFD"), Metadata: validUTF8(md)}
	for _, d := range detailsOf(err, reason, msg) {
		if a, err := anypb.New(d); err == nil {
			re.Details = append(re.Details, a)
		}
	}
	return re
}

// toStatus returns err as a gRPC status error with an ErrorInfo and the
// details detailsOf gives it.
func toStatus(err error, kind handle.Kind) error {
	code, reason, md := statusOf(err, kind)
	msg := message(err, reason)
	var more []protoadapt.MessageV1
	for _, d := range detailsOf(err, reason, msg) {
		more = append(more, protoadapt.MessageV1Of(d))
	}
	return newStatus(code, reason, msg, md, more...)
}

// detailsOf returns what an error says beside its ErrorInfo, the same on
// a status and in a stream's RequestError: a google.rpc.BadRequest for a
// *FieldError, a google.rpc.QuotaFailure for a limit, and a
// google.rpc.RetryInfo too for a *RateLimitedError.
func detailsOf(err error, reason, msg string) []proto.Message {
	var (
		field    *FieldError
		limit    *registry.LimitError
		tooLarge *MessageTooLargeError
		response *ResponseTooLargeError
		limited  *RateLimitedError
	)
	switch {
	case errors.As(err, &field):
		return []proto.Message{&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{
			Field: field.Field, Description: field.Why, Reason: reason,
		}}}}
	case errors.As(err, &limit):
		return []proto.Message{quotaFailure(reason, limit.Identity, limit.Max, msg)}
	case errors.As(err, &tooLarge):
		return []proto.Message{quotaFailure(reason, "", int64(tooLarge.Max), msg)}
	case errors.As(err, &response):
		return []proto.Message{quotaFailure(reason, "", int64(response.Max), msg)}
	case errors.As(err, &limited):
		// The quota's value is the rate, rounded up to whole requests/s.
		return []proto.Message{
			&errdetails.RetryInfo{RetryDelay: durationpb.New(limited.Delay)},
			quotaFailure(reason, limited.Identity, int64(math.Ceil(float64(limited.Rate))), msg),
		}
	}
	return nil
}

// quotaFailure is the google.rpc.QuotaFailure a limit's refusal carries
// beside its ErrorInfo, as Google's APIs send: which quota (its reason),
// its value, and on whose account: "registryd" for a limit on all
// callers together, "identity:NAME" for one identity's.
func quotaFailure(reason, identity string, limit int64, msg string) *errdetails.QuotaFailure {
	subject := "registryd"
	if identity != "" {
		subject = "identity:" + identity
	}
	return &errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
		Subject:     subject,
		Description: msg,
		ApiService:  Domain,
		QuotaId:     reason,
		QuotaValue:  limit,
	}}}
}

// newStatus builds a status error carrying ErrorInfo{domain, reason} and
// any further details. Only toStatus and the panic handler, which has no
// error to map, call it.
func newStatus(code codes.Code, reason, msg string, md map[string]string, more ...protoadapt.MessageV1) error {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	st := status.New(code, msg)
	details := append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Domain: Domain, Reason: reason, Metadata: validUTF8(md)}}, more...)
	if withInfo, err := st.WithDetails(details...); err == nil {
		st = withInfo
	}
	return st.Err()
}

// asStatus returns err as a status with an ErrorInfo, mapped by statusOf:
// the innermost interceptors apply it to what every handler returns, so
// that a raw error, such as a context's, still answers with its reason,
// and logs, metrics and spans see the right code. A status gRPC made
// for a call its client cancelled, or whose deadline passed, is mapped as
// the context error it stands for; another status is left as it is.
func asStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return toStatus(err, handle.Object)
	}
	if hasInfo(st) {
		return err
	}
	var cause error
	switch st.Code() {
	case codes.Canceled:
		cause = context.Canceled
	case codes.DeadlineExceeded:
		cause = context.DeadlineExceeded
	default:
		return err
	}
	if st.Message() != cause.Error() {
		cause = fmt.Errorf("%s: %w", st.Message(), cause)
	}
	return toStatus(cause, handle.Object)
}

// policyStatus maps what the --authz-policy interceptor answered: gRPC's
// authz refuses with a bare PERMISSION_DENIED, which becomes a
// ROLE_FORBIDDEN with its ErrorInfo, so that clients branch on one reason
// whichever check refused them. Any other answer is the handler's, left
// as it is.
func policyStatus(err error, id auth.Identity, method string) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.PermissionDenied || hasInfo(st) {
		return err
	}
	return toStatus(&auth.RoleError{Identity: id, Method: method, Policy: true}, handle.Object)
}

func hasInfo(st *status.Status) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return true
		}
	}
	return false
}

// ctxErr is the result of a handler that stops because its call ended.
func ctxErr(ctx context.Context) error { return toStatus(ctx.Err(), handle.Object) }

// streamErr is the result of a handler whose Send or Recv failed: the
// call's own end when it ended, else what the stream said.
func streamErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctxErr(ctx)
	}
	return asStatus(err)
}
