package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// usageError is a mistake in the command line: exit status 2. cmd is
// the command's path ("registryctl get"), for the pointer to its help;
// run fills it in when the error is returned.
type usageError struct {
	msg string
	cmd string
}

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// opError names what registryctl was doing when err happened, usually
// the handle or lease it was about.
type opError struct {
	op  string
	err error
}

func (e *opError) Error() string { return e.op + ": " + e.err.Error() }
func (e *opError) Unwrap() error { return e.err }

func opErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return &opError{op: op, err: err}
}

// cmdError carries a message and exit status decided by the command,
// such as a health check's answer or a partial hold.
type cmdError struct {
	msg  string
	code int
}

func (e *cmdError) Error() string { return e.msg }

// describe turns err into the one line registryctl prints and its exit
// status. A gRPC status is shown with its ErrorInfo reason, so users can
// look it up in the README's table of reasons; transport failures say
// which address was tried and what to check.
func (a *app) describe(err error) (string, int) {
	var (
		usage *usageError
		exit  *cmdError
		op    *opError
	)
	prefix := ""
	if errors.As(err, &op) {
		prefix = op.op + ": "
	}
	switch {
	case errors.As(err, &usage):
		path := usage.cmd
		if path == "" {
			path = "registryctl"
		}
		return usage.msg + "; see '" + path + " --help'", exitUsage
	case errors.As(err, &exit):
		return prefix + exit.msg, exit.code
	case errors.Is(err, context.Canceled):
		return prefix + "interrupted", exitError
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("%sno answer from registryd at %s within %s; check that it is running and that --addr names it, or raise --timeout",
			prefix, a.addr, a.timeout), exitUnavailable
	}
	var grpcErr interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &grpcErr) {
		return err.Error(), exitError
	}
	st := grpcErr.GRPCStatus()
	reason := reasonOf(st)
	switch {
	case st.Code() == codes.Unavailable && reason == "":
		return fmt.Sprintf("cannot reach registryd at %s: %s; %s",
			a.addr, transportCause(st.Message()), a.unreachableHint(st.Message())), exitUnavailable
	case st.Code() == codes.DeadlineExceeded && reason == "":
		return fmt.Sprintf("%sno answer from registryd at %s within %s; check that it is running and that --addr names it, or raise --timeout",
			prefix, a.addr, a.timeout), exitUnavailable
	case st.Code() == codes.Canceled:
		return prefix + "interrupted", exitError
	case st.Code() == codes.Unimplemented && reason == "":
		return fmt.Sprintf("%sthe server at %s does not serve this call; check that --addr names a registryd as new as this registryctl (%s)",
			prefix, a.addr, st.Message()), exitError
	case reason == registryv1.ErrorReason_CREDENTIALS_MISSING.String():
		return fmt.Sprintf("%sregistryd at %s requires credentials (%s): pass --token (or REGISTRYCTL_TOKEN), or --cert and --key", prefix, a.addr, reason), exitError
	case reason == registryv1.ErrorReason_CREDENTIALS_INVALID.String():
		return fmt.Sprintf("%sregistryd does not know this token (%s): check --token (or REGISTRYCTL_TOKEN); an operator may have rotated it", prefix, reason), exitError
	case reason == registryv1.ErrorReason_TRANSPORT_INSECURE.String():
		return fmt.Sprintf("%sregistryd refuses a token sent without TLS (%s): connect with --tls (or --cacert)", prefix, reason), exitError
	case reason == "" && (st.Code() == codes.Unauthenticated || st.Code() == codes.PermissionDenied):
		return fmt.Sprintf("%s%s: %s; check --token (or REGISTRYCTL_TOKEN)", prefix, st.Code(), st.Message()), exitError
	}
	msg := prefix + st.Message()
	if reason != "" {
		msg += " (" + reason + ")"
	} else {
		msg += " (" + st.Code().String() + ")"
	}
	if code, ok := reasonExits[reason]; ok {
		return msg, code
	}
	switch {
	case st.Code() == codes.NotFound:
		return msg, exitNotFound
	case st.Code() == codes.Unavailable:
		return msg, exitUnavailable
	}
	return msg, exitError
}

// exitCodes gives every reason of the API's ErrorReason enum registryctl's
// exit status for it: exitNotFound when what was named is not there (or no
// longer), exitUnavailable when registryd cannot serve, else exitError. A
// test fails when a reason is missing.
var exitCodes = map[registryv1.ErrorReason]int{
	registryv1.ErrorReason_HANDLE_MALFORMED:            exitError,
	registryv1.ErrorReason_HANDLE_UNKNOWN:              exitNotFound,
	registryv1.ErrorReason_HANDLE_FOREIGN_NODE:         exitNotFound,
	registryv1.ErrorReason_REGISTRY_RESTARTED:          exitNotFound,
	registryv1.ErrorReason_OBJECT_COLLECTED:            exitNotFound,
	registryv1.ErrorReason_OBJECT_DELETED:              exitNotFound,
	registryv1.ErrorReason_OBJECT_PINNED:               exitError,
	registryv1.ErrorReason_PAYLOAD_EMPTY:               exitError,
	registryv1.ErrorReason_LABELS_INVALID:              exitError,
	registryv1.ErrorReason_OBJECT_TOO_LARGE:            exitError,
	registryv1.ErrorReason_MESSAGE_TOO_LARGE:           exitError,
	registryv1.ErrorReason_PINNED_BYTES_LIMIT:          exitError,
	registryv1.ErrorReason_LEASE_PIN_LIMIT:             exitError,
	registryv1.ErrorReason_LEASE_LIMIT:                 exitError,
	registryv1.ErrorReason_WATCHER_LIMIT:               exitError,
	registryv1.ErrorReason_UPLOAD_BYTES_LIMIT:          exitError,
	registryv1.ErrorReason_LEASE_ID_MALFORMED:          exitError,
	registryv1.ErrorReason_LEASE_NOT_FOUND:             exitNotFound,
	registryv1.ErrorReason_LEASE_NOT_OPEN:              exitError,
	registryv1.ErrorReason_LEASE_ALREADY_OPEN:          exitError,
	registryv1.ErrorReason_LEASE_TAKEN_OVER:            exitError,
	registryv1.ErrorReason_REQUEST_EMPTY:               exitError,
	registryv1.ErrorReason_TOO_MANY_HANDLES:            exitError,
	registryv1.ErrorReason_PAGE_TOKEN_INVALID:          exitError,
	registryv1.ErrorReason_WATCH_TOO_SLOW:              exitError,
	registryv1.ErrorReason_WATCH_HISTORY_COMPACTED:     exitError,
	registryv1.ErrorReason_SHUTTING_DOWN:               exitUnavailable,
	registryv1.ErrorReason_UPLOAD_HEADER_MISSING:       exitError,
	registryv1.ErrorReason_UPLOAD_SIZE_MISMATCH:        exitError,
	registryv1.ErrorReason_UPLOAD_TRAILER_MISSING:      exitError,
	registryv1.ErrorReason_CHECKSUM_MISMATCH:           exitError,
	registryv1.ErrorReason_FIELD_INVALID:               exitError,
	registryv1.ErrorReason_REQUEST_MALFORMED:           exitError,
	registryv1.ErrorReason_REQUEST_CANCELLED:           exitError,
	registryv1.ErrorReason_STREAM_STALLED:              exitError,
	registryv1.ErrorReason_INTERNAL:                    exitError,
	registryv1.ErrorReason_CREDENTIALS_MISSING:         exitError,
	registryv1.ErrorReason_CREDENTIALS_INVALID:         exitError,
	registryv1.ErrorReason_TRANSPORT_INSECURE:          exitError,
	registryv1.ErrorReason_ROLE_FORBIDDEN:              exitError,
	registryv1.ErrorReason_LEASE_NOT_OWNED:             exitError,
	registryv1.ErrorReason_IDENTITY_LEASE_LIMIT:        exitError,
	registryv1.ErrorReason_IDENTITY_PINNED_BYTES_LIMIT: exitError,
	registryv1.ErrorReason_IDENTITY_UPLOAD_BYTES_LIMIT: exitError,
	registryv1.ErrorReason_IDENTITY_STREAM_LIMIT:       exitError,
	registryv1.ErrorReason_RATE_LIMITED:                exitError,
	registryv1.ErrorReason_RESPONSE_TOO_LARGE:          exitError,
	registryv1.ErrorReason_NODE_UNAVAILABLE:            exitUnavailable,
}

// reasonExits is exitCodes by the reason's name, as ErrorInfo carries it.
var reasonExits = func() map[string]int {
	m := make(map[string]int, len(exitCodes))
	for r, code := range exitCodes {
		m[r.String()] = code
	}
	return m
}()

// reasonOf returns the registry's ErrorInfo reason, or "".
func reasonOf(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// transportCause shortens gRPC's connection error to its cause: "dial
// tcp 127.0.0.1:7600: connect: connection refused" instead of the whole
// "connection error: desc = \"transport: Error while dialing: ...\"".
func transportCause(msg string) string {
	if i := strings.LastIndex(msg, "dial "); i >= 0 {
		return strings.TrimRight(msg[i:], `"`)
	}
	// A failed handshake: the cause is inside gRPC's description.
	if i := strings.Index(msg, `desc = "`); i >= 0 {
		msg = strings.TrimRight(msg[i+len(`desc = "`):], `"`)
		return strings.TrimPrefix(msg, "transport: authentication handshake failed: ")
	}
	return msg
}

// unreachableHint says what to check when no connection could be made: a
// failed TLS handshake points at the TLS flags, and a plaintext
// connection that the server dropped before its preface is most likely
// one to a registryd that serves TLS.
func (a *app) unreachableHint(msg string) string {
	switch {
	case strings.Contains(msg, "tls:") || strings.Contains(msg, "x509:"):
		return "the TLS handshake failed: check --cacert, and for mutual TLS --cert and --key"
	case !a.tls && strings.Contains(msg, "server preface"):
		return "if registryd serves TLS, add --tls or --cacert; else check that it is running and that --addr (or REGISTRYCTL_ADDR) names it"
	}
	return "check that it is running and that --addr (or REGISTRYCTL_ADDR) names it"
}
