package auth

import "strings"

// roles is a set of roles.
type roles uint8

func setOf(rs ...Role) roles {
	var s roles
	for _, r := range rs {
		s |= 1 << r
	}
	return s
}

func (s roles) has(r Role) bool { return s&(1<<r) != 0 }

// Who may call what: a method named in byMethod is open to its roles,
// else its service's in byService, else to admins only, so that a service
// registered later is closed until it is named here. Roles are not a
// ladder: a client has no AdminService method, not even a viewer's.
var (
	byMethod = map[string]roles{
		"/registry.v1.AdminService/GetStats":   setOf(RoleViewer, RoleAdmin),
		"/registry.v1.AdminService/ListLeases": setOf(RoleViewer, RoleAdmin),
	}
	byService = map[string]roles{
		"registry.v1.RegistryService": setOf(RoleClient, RoleAdmin),
		"registry.v1.AdminService":    setOf(RoleAdmin),
		// Reflection describes the API, not what the registry holds.
		"grpc.reflection.v1.ServerReflection":      setOf(RoleViewer, RoleClient, RoleAdmin),
		"grpc.reflection.v1alpha.ServerReflection": setOf(RoleViewer, RoleClient, RoleAdmin),
	}
)

// HealthService is the one service open to every caller, authenticated
// or not: load balancers and probes carry no credentials.
const HealthService = "grpc.health.v1.Health"

// Allowed reports whether role may call fullMethod (/service/method).
func Allowed(role Role, fullMethod string) bool {
	if s, ok := byMethod[fullMethod]; ok {
		return s.has(role)
	}
	service, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if s, ok := byService[service]; ok {
		return s.has(role)
	}
	return role == RoleAdmin
}

// Authorize returns a *RoleError unless id may call fullMethod.
func Authorize(id Identity, fullMethod string) error {
	if Allowed(id.Role, fullMethod) {
		return nil
	}
	return &RoleError{Identity: id, Method: fullMethod}
}
