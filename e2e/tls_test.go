package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"math/big"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	regclient "github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/testpki"
)

// metricsTLSAddr finds the metrics listener's address in registryd's log.
var metricsTLSAddr = regexp.MustCompile(`msg="metrics serving" addr=(127\.0\.0\.1:[0-9]+) scheme=https`)

// tlsPutResolve dials addr with the Go client over TLS with cfg and checks a
// Put and a Resolve, or returns the Put's error.
func tlsPutResolve(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	c, err := regclient.Dial(addr, regclient.WithTLS(cfg), regclient.WithoutTracing())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := rpcCtx(t)
	info, err := c.Put(ctx, []byte("over TLS"), regclient.Linger(time.Minute)) // not collected before the Resolve
	if err != nil {
		return err
	}
	data, _, err := c.Resolve(ctx, info.Handle)
	if err != nil || string(data) != "over TLS" {
		t.Fatalf("Resolve over TLS: %q, %v", data, err)
	}
	return nil
}

// servedSerial opens a fresh TLS connection to addr (ALPN h2, as gRPC
// does) and returns the serial of the certificate served.
func servedSerial(t *testing.T, addr string, ca *testpki.CA) (*big.Int, error) {
	t.Helper()
	d := tls.Dialer{Config: &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", NextProtos: []string{"h2"}}}
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// wantRefused checks that a Put failed in the handshake: UNAVAILABLE,
// and the Go client's ErrUnavailable.
func wantRefused(t *testing.T, err error, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: Put succeeded, want it refused", what)
	}
	if !errors.Is(err, regclient.ErrUnavailable) || status.Code(err) != codes.Unavailable {
		t.Fatalf("%s: %v (code %v), want UNAVAILABLE from the handshake", what, err, status.Code(err))
	}
}

func TestTLSServesTheGoClientAndRegistryctl(t *testing.T) {
	ca := testpki.NewCA(t, "e2e CA")
	srv := ca.Server(t)
	d := startDaemon(t, "--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile)
	if err := tlsPutResolve(t, d.Addr, &tls.Config{RootCAs: ca.Pool()}); err != nil {
		t.Fatalf("Put over TLS: %v", err)
	}
	r := ctl(t, d.Addr, "--tls", "--cacert", ca.CAFile, "health")
	wantSuccess(t, r)
	if strings.TrimSpace(r.stdout) != "SERVING" {
		t.Fatalf("registryctl health over TLS: %q, want SERVING", r.stdout)
	}
	r = runCtl(t, ctlOpts{addr: d.Addr, stdin: []byte("from registryctl")}, "--cacert", ca.CAFile, "put", "-")
	wantSuccess(t, r)
	if h := strings.TrimSpace(r.stdout); !handleRE.MatchString(h) {
		t.Fatalf("registryctl put over TLS printed %q, want a handle", r.stdout)
	}

	// A client that does not trust the CA, or speaks plaintext, gets nowhere.
	wantRefused(t, tlsPutResolve(t, d.Addr, &tls.Config{}), "client without the CA")
	c := dial(t, d.Addr)
	if _, err := c.admin.GetStats(rpcCtx(t), &registryv1.GetStatsRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext call to a TLS registryd: %v, want UNAVAILABLE", err)
	}
	wantErrLine(t, ctl(t, d.Addr, "--timeout", "1s", "health"), ctlUnavailable, "add --tls or --cacert")
	wantErrLine(t, ctl(t, d.Addr, "--timeout", "1s", "--tls", "health"), ctlUnavailable, "x509: certificate signed by unknown authority", "check --cacert")
}

func TestMutualTLSRefusesClientsWithoutACertificateOfTheClientCA(t *testing.T) {
	ca, stranger := testpki.NewCA(t, "e2e CA"), testpki.NewCA(t, "another CA")
	srv := ca.Server(t)
	good := ca.Client(t, "spiffe://registry.test/app")
	foreign := stranger.Client(t, "spiffe://registry.test/app") // same name, wrong signer
	d := startDaemon(t, "--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--tls-client-ca", ca.CAFile)

	tests := []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"certificate of the client CA", []tls.Certificate{good.TLSCertificate(t)}, true},
		{"no certificate", nil, false},
		{"certificate of another CA", []tls.Certificate{foreign.TLSCertificate(t)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tlsPutResolve(t, d.Addr, &tls.Config{RootCAs: ca.Pool(), Certificates: tt.certs})
			if tt.ok {
				if err != nil {
					t.Fatalf("Put with a good client certificate: %v", err)
				}
				return
			}
			wantRefused(t, err, tt.name)
		})
	}

	t.Run("registryctl", func(t *testing.T) {
		r := ctl(t, d.Addr, "--tls", "--cacert", ca.CAFile, "--cert", good.CertFile, "--key", good.KeyFile, "health")
		wantSuccess(t, r)
		r = runCtl(t, ctlOpts{addr: d.Addr, stdin: []byte("mtls")}, "--cacert", ca.CAFile, "--cert", good.CertFile, "--key", good.KeyFile, "put", "-")
		wantSuccess(t, r)
		// With TLS 1.3 the client may see the server's alert or only the
		// closed connection (broken pipe), so only the exit status is sure.
		wantExit(t, ctl(t, d.Addr, "--timeout", "1s", "--cacert", ca.CAFile, "health"), ctlUnavailable)
		wantExit(t, ctl(t, d.Addr, "--timeout", "1s", "--cacert", ca.CAFile, "--cert", foreign.CertFile, "--key", foreign.KeyFile, "health"), ctlUnavailable)
	})
}

func TestReplacedCertificateIsServedWithoutARestart(t *testing.T) {
	tests := []struct {
		name   string
		reload string // --reload-interval
		hup    bool   // send SIGHUP after the replacement
	}{
		{"by the reload interval", "100ms", false},
		{"on SIGHUP", "1h", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := testpki.NewCA(t, "e2e CA")
			first, second := ca.Server(t), ca.Server(t)
			d := startDaemon(t, "--tls-cert", first.CertFile, "--tls-key", first.KeyFile, "--reload-interval", tt.reload,
				"--metrics-addr", "127.0.0.1:0")
			m := metricsTLSAddr.FindStringSubmatch(d.Stderr())
			if m == nil {
				t.Fatalf("no https metrics line in:\n%s", d.Stderr())
			}
			for _, addr := range []string{d.Addr, m[1]} {
				if got, err := servedSerial(t, addr, ca); err != nil || got.Cmp(first.Cert.SerialNumber) != 0 {
					t.Fatalf("%s serves serial %v (%v), want the first certificate's %v", addr, got, err, first.Cert.SerialNumber)
				}
			}
			lease := openLease(t, dialTLS(t, d.Addr, ca), nil) // a connection made before the rotation
			second.Install(t, first.CertFile, first.KeyFile)
			if tt.hup {
				d.cmd.Process.Signal(syscall.SIGHUP)
			}
			for _, addr := range []string{d.Addr, m[1]} {
				poll(t, waitTimeout, "the new certificate on "+addr, func() bool {
					got, err := servedSerial(t, addr, ca)
					return err == nil && got.Cmp(second.Cert.SerialNumber) == 0
				})
			}
			if tt.hup && !strings.Contains(d.Stderr(), "TLS files reloaded") {
				t.Fatalf("no reload logged after SIGHUP:\n%s", d.Stderr())
			}
			if err := tlsPutResolve(t, d.Addr, &tls.Config{RootCAs: ca.Pool()}); err != nil {
				t.Fatalf("Put after the rotation: %v", err)
			}
			lease.close(t, 0) // the old connection lived through it
			resp, err := httpsGet(t, "https://"+m[1]+"/healthz", ca)
			if err != nil || resp != http.StatusOK {
				t.Fatalf("GET /healthz over HTTPS: %d, %v", resp, err)
			}
		})
	}
}

// dialTLS is dial over TLS trusting ca.
func dialTLS(t *testing.T, addr string, ca *testpki.CA) *client {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool()})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{conn: conn, reg: registryv1.NewRegistryServiceClient(conn), admin: registryv1.NewAdminServiceClient(conn)}
}

// httpsGet GETs url trusting ca and returns the status code.
func httpsGet(t *testing.T, url string, ca *testpki.CA) (int, error) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}, Timeout: rpcTimeout}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(rpcCtx(t), http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestTLSStartupMistakesExitWithOneLine(t *testing.T) {
	ca := testpki.NewCA(t, "e2e CA")
	srv, other := ca.Server(t), ca.Server(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing certificate", []string{"--tls-cert", srv.CertFile + ".gone", "--tls-key", srv.KeyFile}, "no such file"},
		{"key of another certificate", []string{"--tls-cert", srv.CertFile, "--tls-key", other.KeyFile}, "private key does not match"},
		{"client CA without TLS", []string{"--tls-client-ca", ca.CAFile}, "--tls-client-ca (REGISTRYD_TLS_CLIENT_CA) needs --tls-cert"},
		{"certificate without key", []string{"--tls-cert", srv.CertFile}, "go together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := launch(t, append([]string{"--addr", "127.0.0.1:0"}, tt.args...), nil)
			d.watchStderr(nil)
			if code := d.waitExit(t, startTimeout); code != 1 {
				t.Fatalf("exit %d, want 1\n%s", code, d.Stderr())
			}
			lines := strings.Split(strings.TrimSpace(d.Stderr()), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "registryd: ") || !strings.Contains(last, tt.want) {
				t.Fatalf("last line %q, want registryd: ... %q\n%s", last, tt.want, d.Stderr())
			}
		})
	}
}
