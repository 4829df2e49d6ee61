// Package auth says who is calling registryd and what they may do: the
// caller's identity (from a client certificate or a bearer token), its
// role, and the interceptors that refuse calls without credentials or
// with the wrong role.
package auth

import (
	"context"
	"fmt"
)

// Role is what an identity may call.
type Role uint8

const (
	// RoleNone may call nothing but health.
	RoleNone Role = iota
	// RoleViewer may read the registry's figures: AdminService GetStats
	// and ListLeases, which show no handles.
	RoleViewer
	// RoleClient may call RegistryService: its own leases, and the objects
	// whose handles it holds.
	RoleClient
	// RoleAdmin may call everything, on everyone's leases and objects.
	RoleAdmin
)

// String returns the role's name as it is written in the token file.
func (r Role) String() string {
	switch r {
	case RoleViewer:
		return "viewer"
	case RoleClient:
		return "client"
	case RoleAdmin:
		return "admin"
	}
	return "none"
}

// ParseRole reads a role's name.
func ParseRole(s string) (Role, error) {
	for _, r := range []Role{RoleViewer, RoleClient, RoleAdmin} {
		if s == r.String() {
			return r, nil
		}
	}
	return RoleNone, fmt.Errorf("unknown role %q: want viewer, client or admin", s)
}

// Identity is a caller, authenticated.
type Identity struct {
	// Name is who: a token's identity from the token file, or a client
	// certificate's SPIFFE ID or DNS name. Leases and objects are owned by
	// it, and limits per identity are kept by it.
	Name string
	// Role is what Name may call.
	Role Role
}

// AnonymousName is the one identity every caller has when authentication
// is off.
const AnonymousName = "anonymous"

// Anonymous is every caller when authentication is off: one identity,
// with every right, as a registryd on a developer's machine needs.
var Anonymous = Identity{Name: AnonymousName, Role: RoleAdmin}

// Admin reports whether id may act on other identities' leases and
// objects.
func (id Identity) Admin() bool { return id.Role == RoleAdmin }

type identityKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity of the call ctx belongs to: Anonymous
// when no authentication put one there (authentication off).
func FromContext(ctx context.Context) Identity {
	if id, ok := ctx.Value(identityKey{}).(Identity); ok {
		return id
	}
	return Anonymous
}
