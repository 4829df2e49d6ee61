package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/authz"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/testlog"
)

// The tokens of the auth file the tests run with.
const (
	viewerToken = "viewer-token"
	clientToken = "client-token"
	adminToken  = "admin-token"
)

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// testAuthFile is an auth file granting each role one token.
func testAuthFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "auth")
	text := "token " + sha256Hex(viewerToken) + " grafana viewer\n" +
		"token " + sha256Hex(clientToken) + " alice client\n" +
		"token " + sha256Hex(adminToken) + " ops admin\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newTestAuthenticator(t testing.TB, plaintext bool) *auth.Authenticator {
	t.Helper()
	a, err := auth.New(auth.Config{File: testAuthFile(t), AllowPlaintext: plaintext, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// loopbackListener listens on 127.0.0.1, where --auth-allow-plaintext
// lets tokens in without TLS.
func loopbackListener(t testing.TB) net.Listener {
	t.Helper()
	var lc net.ListenConfig
	lis, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// withToken is ctx sending token as its bearer.
func withToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// method is one RPC of the server, called with an empty request.
type method struct {
	name   string // full method name
	stream *grpc.StreamDesc
}

// everyMethod lists every RPC registryd serves: both services',
// reflection's and health's.
func everyMethod() []method {
	var ms []method
	for _, sd := range []grpc.ServiceDesc{registryv1.RegistryService_ServiceDesc, registryv1.AdminService_ServiceDesc, reflectionpb.ServerReflection_ServiceDesc, healthpb.Health_ServiceDesc} {
		for _, m := range sd.Methods {
			ms = append(ms, method{name: "/" + sd.ServiceName + "/" + m.MethodName})
		}
		for _, s := range sd.Streams {
			ms = append(ms, method{name: "/" + sd.ServiceName + "/" + s.StreamName, stream: &grpc.StreamDesc{ServerStreams: s.ServerStreams, ClientStreams: s.ClientStreams}})
		}
	}
	return ms
}

// call calls m with an empty request and returns its first answer's
// error: nil for a message, or the status the call ended with. A call
// that authentication let through may wait for what never comes (a
// watch): it is cut after a short while, DEADLINE_EXCEEDED.
func (m method) call(ctx context.Context, conn *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	return m.send(ctx, conn, []byte{})
}

// send calls m with body as its request's bytes, as they go on the wire,
// and returns its first answer's error, as call does.
func (m method) send(ctx context.Context, conn *grpc.ClientConn, body []byte) error {
	raw := grpc.ForceCodecV2(rawCodec{})
	var out []byte
	if m.stream == nil {
		return conn.Invoke(ctx, m.name, body, &out, raw)
	}
	st, err := conn.NewStream(ctx, m.stream, m.name, raw)
	if err != nil {
		return err
	}
	// io.EOF: the server has ended the stream already; RecvMsg says how.
	if err := st.SendMsg(body); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if err := st.CloseSend(); err != nil {
		return err
	}
	return st.RecvMsg(&out)
}

// serviceMethods lists the RPCs of registryd's own two services.
func serviceMethods() []method {
	var ms []method
	for _, m := range everyMethod() {
		if strings.HasPrefix(m.name, "/registry.v1.") {
			ms = append(ms, m)
		}
	}
	return ms
}

func isHealth(name string) bool {
	return strings.HasPrefix(name, "/"+healthpb.Health_ServiceDesc.ServiceName+"/")
}

// refusedByAuth reports whether err is one of authentication's or the
// role's refusals.
func refusedByAuth(err error) bool {
	st := status.Convert(err)
	switch reasonOf(st) {
	case ReasonCredentialsMissing, ReasonCredentialsInvalid, ReasonTransportInsecure, ReasonRoleForbidden:
		return true
	}
	return st.Code() == codes.Unauthenticated || st.Code() == codes.PermissionDenied
}

func TestEveryRPCButHealthRefusesCallsWithoutRightCredentials(t *testing.T) {
	for _, tt := range []struct {
		name      string
		plaintext bool // --auth-allow-plaintext
		loopback  bool // a TCP listener on 127.0.0.1, else bufconn (no address)
		token     string
		code      codes.Code
		reason    string
	}{
		{"anonymous", true, true, "", codes.Unauthenticated, ReasonCredentialsMissing},
		{"anonymous on bufconn", false, false, "", codes.Unauthenticated, ReasonCredentialsMissing},
		{"bad token", true, true, "guess", codes.Unauthenticated, ReasonCredentialsInvalid},
		{"token over plaintext without --auth-allow-plaintext", false, true, adminToken, codes.Unauthenticated, ReasonTransportInsecure},
		{"token over plaintext from no loopback address", true, false, adminToken, codes.Unauthenticated, ReasonTransportInsecure},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := envOptions{auth: newTestAuthenticator(t, tt.plaintext)}
			if tt.loopback {
				o.lis = loopbackListener(t)
			}
			e := newEnvWith(t, o)
			ctx := withToken(ctxT(t), tt.token)
			for _, m := range everyMethod() {
				err := m.call(ctx, e.conn)
				if isHealth(m.name) {
					if refusedByAuth(err) {
						t.Errorf("%s: %v; health is open to all", m.name, err)
					}
					continue
				}
				st := status.Convert(err)
				if st.Code() != tt.code || reasonOf(st) != tt.reason {
					t.Errorf("%s: %v %q (%s), want %v %s", m.name, st.Code(), reasonOf(st), st.Message(), tt.code, tt.reason)
				}
			}
			// Nothing was done on anyone's behalf.
			var n int64
			for _, c := range e.reg.Stats().Objects {
				n += c
			}
			if n != 0 || len(e.leases.List()) != 0 {
				t.Errorf("refused calls left %d objects and %d leases", n, len(e.leases.List()))
			}
		})
	}
}

func TestEachRoleMayCallItsMethodsOnly(t *testing.T) {
	e := newEnvWith(t, envOptions{auth: newTestAuthenticator(t, true), lis: loopbackListener(t)})
	for _, tt := range []struct {
		token string
		id    auth.Identity
	}{
		{viewerToken, auth.Identity{Name: "grafana", Role: auth.RoleViewer}},
		{clientToken, auth.Identity{Name: "alice", Role: auth.RoleClient}},
		{adminToken, auth.Identity{Name: "ops", Role: auth.RoleAdmin}},
	} {
		ctx := withToken(ctxT(t), tt.token)
		for _, m := range everyMethod() {
			err := m.call(ctx, e.conn)
			allowed := mayCall(tt.id.Role, m.name)
			if allowed {
				if refusedByAuth(err) {
					t.Errorf("%s on %s: %v, want it let through", tt.id.Role, m.name, err)
				}
				continue
			}
			st := status.Convert(err)
			if st.Code() != codes.PermissionDenied || reasonOf(st) != ReasonRoleForbidden {
				t.Errorf("%s on %s: %v %q, want PERMISSION_DENIED ROLE_FORBIDDEN", tt.id.Role, m.name, st.Code(), reasonOf(st))
				continue
			}
			want := map[string]string{"identity": tt.id.Name, "role": tt.id.Role.String(), "method": m.name}
			if got := infoOf(st).GetMetadata(); !equalMaps(got, want) {
				t.Errorf("%s on %s: metadata %v, want %v", tt.id.Role, m.name, got, want)
			}
		}
	}
}

// mayCall is the roles table, as the README says it: health for all;
// reflection for every role; RegistryService for clients; GetStats and
// ListLeases for viewers; all for admins (and so a client on any
// AdminService method, Collect among them, is refused).
func mayCall(role auth.Role, name string) bool {
	service, m, _ := strings.Cut(strings.TrimPrefix(name, "/"), "/")
	switch {
	case service == healthpb.Health_ServiceDesc.ServiceName, role == auth.RoleAdmin:
		return true
	case service == reflectionpb.ServerReflection_ServiceDesc.ServiceName:
		return role != auth.RoleNone
	case service == registryv1.RegistryService_ServiceDesc.ServiceName:
		return role == auth.RoleClient
	case service == registryv1.AdminService_ServiceDesc.ServiceName:
		return role == auth.RoleViewer && (m == "GetStats" || m == "ListLeases")
	}
	return false
}

func infoOf(st *status.Status) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestRequestLogLineNamesTheIdentity: a request's log line names the
// caller's identity, also when its role was refused.
func TestRequestLogLineNamesTheIdentity(t *testing.T) {
	var buf testlog.Buffer
	e := newEnvWith(t, envOptions{auth: newTestAuthenticator(t, true), lis: loopbackListener(t), logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if _, err := e.admin.GetStats(withToken(ctxT(t), viewerToken), &registryv1.GetStatsRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Collect(withToken(ctxT(t), viewerToken), &registryv1.CollectRequest{}); err == nil {
		t.Fatal("a viewer's Collect succeeded")
	}
	if _, err := e.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{}); err == nil {
		t.Fatal("anonymous GetStats succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(buf.String(), "\n") < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // the line is written as the call ends, maybe after the client has its answer
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	// Lines may reach the log in any order: each is written as its call
	// ends, maybe after its client has the answer.
	if len(lines) != 3 || strings.Count(buf.String(), "identity=grafana") != 2 || strings.Count(buf.String(), "identity=") != 2 {
		t.Errorf("want the viewer's lines, allowed and refused, with identity=grafana, and the anonymous one without:\n%s", buf.String())
	}
}

// TestAuthzPolicyRefusesWithRoleForbidden: an --authz-policy that denies
// a method to some callers refuses them after their role let them, with
// ROLE_FORBIDDEN's ErrorInfo rather than gRPC authz's bare status.
func TestAuthzPolicyRefusesWithRoleForbidden(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.json")
	policy := `{
		"name": "registry",
		"deny_rules": [{"name": "no-batch-collect", "request": {
			"paths": ["/registry.v1.AdminService/Collect"],
			"headers": [{"key": "x-team", "values": ["batch"]}]}}],
		"allow_rules": [{"name": "the-roles-decide", "request": {"paths": ["*"]}}]
	}`
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := authz.NewFileWatcher(path, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pol.Close)
	e := newEnvWith(t, envOptions{auth: newTestAuthenticator(t, true), authz: pol, lis: loopbackListener(t)})
	ctx := withToken(ctxT(t), adminToken)
	if _, err := e.admin.Collect(ctx, &registryv1.CollectRequest{}); err != nil {
		t.Fatalf("Collect by another team: %v", err)
	}
	batch := metadata.AppendToOutgoingContext(ctx, "x-team", "batch")
	_, err = e.admin.Collect(batch, &registryv1.CollectRequest{})
	wantStatus(t, err, codes.PermissionDenied, ReasonRoleForbidden)
	want := map[string]string{"identity": "ops", "role": "admin", "method": "/registry.v1.AdminService/Collect"}
	if got := infoOf(status.Convert(err)).GetMetadata(); !equalMaps(got, want) {
		t.Errorf("metadata %v, want %v", got, want)
	}
	if _, err := e.admin.GetStats(batch, &registryv1.GetStatsRequest{}); err != nil {
		t.Errorf("GetStats, which the policy does not deny: %v", err)
	}
}

// everyRPCWithAuth calls every method but health's on a registryd of its
// own with authentication on (the world it is given has none), sending
// token, and returns their common answer, or the first that differs.
// Token "role" sends, on each method, a token whose role may not call it.
func everyRPCWithAuth(plaintext, loopback bool, token string) provoker {
	return func(t *testing.T, _ *world) answer {
		o := envOptions{auth: newTestAuthenticator(t, plaintext)}
		if loopback {
			o.lis = loopbackListener(t)
		}
		e := newEnvWith(t, o)
		var first *answer
		for _, m := range everyMethod() {
			if isHealth(m.name) {
				continue
			}
			tok := token
			if token == "role" {
				tok = viewerToken
				if mayCall(auth.RoleViewer, m.name) {
					tok = clientToken
				}
				if mayCall(auth.RoleClient, m.name) && mayCall(auth.RoleViewer, m.name) {
					continue // reflection: every role may
				}
			}
			got := errAnswer(m.call(withToken(ctxT(t), tok), e.conn))
			if first == nil {
				first = &got
			}
			if got != *first {
				t.Errorf("%s answered %v, the first %v", m.name, got, *first)
			}
		}
		return *first
	}
}
