package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/authz"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/auth"
)

// testCA makes certificates in memory: no key is ever written.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// issue makes a leaf certificate for the SANs given.
func (ca *testCA) issue(t *testing.T, serial int64, uri string, dns []string, ips []net.IP, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: dns, IPAddresses: ips, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	if uri != "" {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// newMTLSEnv serves the registry's services over mutual TLS with the
// interceptors New installs (serverOptions), and returns a dialer that
// connects with a client certificate.
func newMTLSEnv(t *testing.T, ca *testCA, a *auth.Authenticator, policy *authz.FileWatcherInterceptor) func(cert *tls.Certificate) *env {
	t.Helper()
	base := newEnvWith(t, envOptions{})
	cfg := Config{Registry: base.reg, Leases: base.leases, Limits: testLimits, Logger: slog.New(slog.DiscardHandler), Auth: a, AuthzPolicy: policy}
	serverCert := ca.issue(t, 2, "", nil, []net.IP{net.IPv4(127, 0, 0, 1)}, x509.ExtKeyUsageServerAuth)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: ca.pool(), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13})
	gs := grpc.NewServer(append(serverOptions(cfg, newIdentityLimits(cfg.Limits), newInflight()), grpc.Creds(creds))...)
	registryv1.RegisterRegistryServiceServer(gs, &registryService{reg: base.reg, leases: base.leases, limits: testLimits, uploads: &byteBudget{}})
	registryv1.RegisterAdminServiceServer(gs, &adminService{reg: base.reg, leases: base.leases, limits: testLimits, uploads: &byteBudget{}})
	lis := loopbackListener(t)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return func(cert *tls.Certificate) *env {
		cc := &tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS13}
		if cert != nil {
			cc.Certificates = []tls.Certificate{*cert}
		}
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(cc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return &env{conn: conn, rs: registryv1.NewRegistryServiceClient(conn), admin: registryv1.NewAdminServiceClient(conn)}
	}
}

// TestClientCertificatesAreIdentities: over mutual TLS a verified
// certificate is its SPIFFE ID or first DNS SAN, with the role the auth
// file gives it; a token sent beside it wins; an authz policy on mTLS
// principals refuses with ROLE_FORBIDDEN.
func TestClientCertificatesAreIdentities(t *testing.T) {
	ca := newTestCA(t)
	file := filepath.Join(t.TempDir(), "auth")
	rules := "cert spiffe://example.org/ops admin\ncert db.example.org viewer\ntoken " + sha256Hex(clientToken) + " alice client\n"
	if err := os.WriteFile(file, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{File: file, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(t.TempDir(), "policy.json")
	policy := `{"name": "registry",
		"deny_rules": [{"name": "db-no-leases", "source": {"principals": ["db.example.org"]}, "request": {"paths": ["/registry.v1.AdminService/ListLeases"]}}],
		"allow_rules": [{"name": "the-roles-decide", "request": {"paths": ["*"]}}]}`
	if err := os.WriteFile(policyFile, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := authz.NewFileWatcher(policyFile, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pol.Close)
	connect := newMTLSEnv(t, ca, a, pol)

	ops := ca.issue(t, 10, "spiffe://example.org/ops", []string{"ops.example.org"}, nil, x509.ExtKeyUsageClientAuth)
	db := ca.issue(t, 11, "", []string{"db.example.org", "other.example.org"}, nil, x509.ExtKeyUsageClientAuth)
	stranger := ca.issue(t, 12, "", []string{"stranger.example.org"}, nil, x509.ExtKeyUsageClientAuth)

	wantRefused := func(t *testing.T, err error, code codes.Code, reason string, md map[string]string) {
		t.Helper()
		wantStatus(t, err, code, reason)
		if got := infoOf(status.Convert(err)).GetMetadata(); md != nil && !equalMaps(got, md) {
			t.Errorf("metadata %v, want %v", got, md)
		}
	}
	t.Run("SPIFFE admin", func(t *testing.T) {
		e := connect(&ops)
		if _, err := e.admin.Collect(ctxT(t), &registryv1.CollectRequest{}); err != nil {
			t.Errorf("Collect: %v", err)
		}
	})
	t.Run("DNS viewer", func(t *testing.T) {
		e := connect(&db)
		if _, err := e.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{}); err != nil {
			t.Errorf("GetStats: %v", err)
		}
		_, err := e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("x")})
		wantRefused(t, err, codes.PermissionDenied, ReasonRoleForbidden, map[string]string{"identity": "db.example.org", "role": "viewer", "method": "/registry.v1.RegistryService/Put"})
	})
	t.Run("authz policy denies a principal", func(t *testing.T) {
		e := connect(&db)
		_, err := e.admin.ListLeases(ctxT(t), &registryv1.ListLeasesRequest{})
		wantRefused(t, err, codes.PermissionDenied, ReasonRoleForbidden, map[string]string{"identity": "db.example.org", "role": "viewer", "method": "/registry.v1.AdminService/ListLeases"})
	})
	t.Run("certificate without a rule", func(t *testing.T) {
		e := connect(&stranger)
		_, err := e.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{})
		wantRefused(t, err, codes.PermissionDenied, ReasonRoleForbidden, map[string]string{"identity": "stranger.example.org", "role": "none", "method": "/registry.v1.AdminService/GetStats"})
	})
	t.Run("token wins over certificate", func(t *testing.T) {
		e := connect(&ops)
		if _, err := e.rs.Put(withToken(ctxT(t), clientToken), &registryv1.PutRequest{Data: []byte("x")}); err != nil {
			t.Errorf("Put as the token's client: %v", err)
		}
		_, err := e.admin.Collect(withToken(ctxT(t), clientToken), &registryv1.CollectRequest{})
		wantRefused(t, err, codes.PermissionDenied, ReasonRoleForbidden, map[string]string{"identity": "alice", "role": "client", "method": "/registry.v1.AdminService/Collect"})
		_, err = e.admin.Collect(withToken(ctxT(t), "guess"), &registryv1.CollectRequest{})
		wantRefused(t, err, codes.Unauthenticated, ReasonCredentialsInvalid, nil)
	})
}
