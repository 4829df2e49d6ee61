package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

func withReason(code codes.Code, reason, msg string) error {
	st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Domain: "registry", Reason: reason})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func TestDescribeGivesOneLineAndExitCode(t *testing.T) {
	a := &app{addr: "127.0.0.1:7600", timeout: 5 * time.Second}
	tests := []struct {
		name     string
		err      error
		wantMsg  string
		wantCode int
	}{
		{"usage", usagef("want one HANDLE"), "want one HANDLE; see 'registryctl --help'", exitUsage},
		{"usage names its command", &usageError{msg: "bad", cmd: "registryctl get"}, "bad; see 'registryctl get --help'", exitUsage},
		{"collected is not found",
			opErr("obj_x", withReason(codes.NotFound, "OBJECT_COLLECTED", "object was collected: hold a lease")),
			"obj_x: object was collected: hold a lease (OBJECT_COLLECTED)", exitNotFound},
		{"restarted is not found",
			withReason(codes.NotFound, "REGISTRY_RESTARTED", "the registry restarted"),
			"the registry restarted (REGISTRY_RESTARTED)", exitNotFound},
		{"pinned is an error",
			withReason(codes.FailedPrecondition, "OBJECT_PINNED", "object is pinned"),
			"object is pinned (OBJECT_PINNED)", exitError},
		{"shutting down is unavailable",
			withReason(codes.Unavailable, "SHUTTING_DOWN", "registry is closed"),
			"registry is closed (SHUTTING_DOWN)", exitUnavailable},
		{"connection refused",
			status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:7600: connect: connection refused"`),
			"cannot reach registryd at 127.0.0.1:7600: dial tcp 127.0.0.1:7600: connect: connection refused; check that it is running and that --addr (or REGISTRYCTL_ADDR) names it",
			exitUnavailable},
		{"unknown CA",
			status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"`),
			"cannot reach registryd at 127.0.0.1:7600: tls: failed to verify certificate: x509: certificate signed by unknown authority; the TLS handshake failed: check --cacert, and for mutual TLS --cert and --key",
			exitUnavailable},
		{"plaintext to TLS",
			status.Error(codes.Unavailable, `connection error: desc = "error reading server preface: EOF"`),
			"cannot reach registryd at 127.0.0.1:7600: error reading server preface: EOF; if registryd serves TLS, add --tls or --cacert; else check that it is running and that --addr (or REGISTRYCTL_ADDR) names it",
			exitUnavailable},
		{"no answer",
			opErr("stats", status.Error(codes.DeadlineExceeded, "context deadline exceeded")),
			"stats: no answer from registryd at 127.0.0.1:7600 within 5s; check that it is running and that --addr names it, or raise --timeout",
			exitUnavailable},
		{"unimplemented", status.Error(codes.Unimplemented, "unknown service"),
			"the server at 127.0.0.1:7600 does not serve this call; check that --addr names a registryd as new as this registryctl (unknown service)",
			exitError},
		{"credentials missing names both kinds",
			opErr("stats", withReason(codes.Unauthenticated, "CREDENTIALS_MISSING", "this registryd requires credentials")),
			"stats: registryd at 127.0.0.1:7600 requires credentials (CREDENTIALS_MISSING): pass --token (or REGISTRYCTL_TOKEN), or --cert and --key", exitError},
		{"credentials invalid points at the token",
			withReason(codes.Unauthenticated, "CREDENTIALS_INVALID", "unknown token"),
			"registryd does not know this token (CREDENTIALS_INVALID): check --token (or REGISTRYCTL_TOKEN); an operator may have rotated it", exitError},
		{"transport insecure points at TLS, not the token",
			withReason(codes.Unauthenticated, "TRANSPORT_INSECURE", "a bearer token was sent without TLS"),
			"registryd refuses a token sent without TLS (TRANSPORT_INSECURE): connect with --tls (or --cacert)", exitError},
		{"role forbidden says the server's message",
			withReason(codes.PermissionDenied, "ROLE_FORBIDDEN", "alice has role client, which may not call /registry.v1.AdminService/Collect: ask an operator"),
			"alice has role client, which may not call /registry.v1.AdminService/Collect: ask an operator (ROLE_FORBIDDEN)", exitError},
		{"lease not owned is about the lease, not the token",
			withReason(codes.PermissionDenied, "LEASE_NOT_OWNED", "the lease belongs to another identity"),
			"the lease belongs to another identity (LEASE_NOT_OWNED)", exitError},
		{"status without reason", status.Error(codes.ResourceExhausted, "grpc: received message larger than max"),
			"grpc: received message larger than max (ResourceExhausted)", exitError},
		{"command's own verdict", &cmdError{msg: "registryd at x is NOT_SERVING", code: exitUnavailable},
			"registryd at x is NOT_SERVING", exitUnavailable},
		{"interrupted", fmt.Errorf("pin: %w", context.Canceled), "interrupted", exitError},
		{"plain error", errors.New("x.bin is empty"), "x.bin is empty", exitError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, code := a.describe(tt.err)
			if msg != tt.wantMsg || code != tt.wantCode {
				t.Errorf("describe() = %q, %d\nwant        %q, %d", msg, code, tt.wantMsg, tt.wantCode)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("message has more than one line: %q", msg)
			}
		})
	}
}

// TestEveryReasonHasAnExitCode: every reason of the API's enum has its
// exit status, and describe gives it.
func TestEveryReasonHasAnExitCode(t *testing.T) {
	a := &app{addr: "127.0.0.1:7600", timeout: time.Second}
	for v, name := range registryv1.ErrorReason_name {
		if v == 0 {
			continue
		}
		want, ok := exitCodes[registryv1.ErrorReason(v)]
		if !ok {
			t.Errorf("reason %s has no exit code", name)
			continue
		}
		if want != exitError && want != exitNotFound && want != exitUnavailable {
			t.Errorf("reason %s exits %d, not one of 1, 3 or 4", name, want)
		}
		// Whatever code it comes with, the reason decides.
		if _, got := a.describe(withReason(codes.FailedPrecondition, name, "x")); got != want {
			t.Errorf("describe(%s) exits %d, want %d", name, got, want)
		}
	}
}
