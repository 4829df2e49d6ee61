package auth

import (
	"errors"
	"fmt"
)

// The refusals of authentication. internal/server's statusOf maps each to
// its code and reason; this package builds no status.
var (
	// ErrCredentialsMissing: the call carried neither a bearer token nor a
	// verified client certificate. CREDENTIALS_MISSING.
	ErrCredentialsMissing = errors.New("this registryd requires credentials and the call carried none")
	// ErrCredentialsInvalid: the bearer token is not one the auth file
	// knows, or `authorization` is not `Bearer <token>`.
	// CREDENTIALS_INVALID.
	ErrCredentialsInvalid = errors.New("the bearer token is not one this registryd knows, or authorization is not \"Bearer <token>\"")
	// ErrTransportInsecure: a bearer token came over a connection without
	// TLS; it was not looked at. TRANSPORT_INSECURE.
	ErrTransportInsecure = errors.New("a bearer token was sent without TLS, where anyone on the path could read it; it was not looked at")
)

// RoleError reports a caller whose role may not call a method.
// ROLE_FORBIDDEN, metadata `identity`, `role` and `method`.
type RoleError struct {
	Identity Identity
	Method   string // the full method, /service/method
	// Policy: refused by the --authz-policy, not by the role.
	Policy bool
}

func (e *RoleError) Error() string {
	if e.Policy {
		return fmt.Sprintf("the authorization policy does not let %s call %s", e.Identity.Name, e.Method)
	}
	return fmt.Sprintf("%s has role %s, which may not call %s", e.Identity.Name, e.Identity.Role, e.Method)
}
