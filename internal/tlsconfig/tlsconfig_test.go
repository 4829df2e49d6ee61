package tlsconfig_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weakref/registry/internal/testlog"
	"github.com/weakref/registry/internal/testpki"
	"github.com/weakref/registry/internal/tlsconfig"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serve accepts TLS connections with cfg on loopback, completing each
// handshake, until the test ends.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	var lc net.ListenConfig
	lis, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { lis.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(c, cfg)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			tc.Handshake() // the client sees its failure
			tc.Close()
		}
	}()
	return lis.Addr().String()
}

// handshake dials addr with cfg and returns the server certificate's
// serial, or the handshake's error.
func handshake(t *testing.T, addr string, cfg *tls.Config) (*big.Int, error) {
	t.Helper()
	d := tls.Dialer{Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	// A TLS 1.3 client learns of a refused certificate on its first read.
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tc.Read(make([]byte, 1)); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return tc.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

func TestStartupErrorsNameTheProblem(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	srv, other := ca.Server(t), ca.Server(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	tests := []struct {
		name string
		cfg  tlsconfig.Config
		want string
	}{
		{"client CA without a certificate", tlsconfig.Config{ClientCAFile: ca.CAFile}, "--tls-client-ca needs --tls-cert"},
		{"cert without key", tlsconfig.Config{CertFile: srv.CertFile}, "go together"},
		{"missing cert file", tlsconfig.Config{CertFile: srv.CertFile + ".gone", KeyFile: srv.KeyFile}, "no such file"},
		{"key of another certificate", tlsconfig.Config{CertFile: srv.CertFile, KeyFile: other.KeyFile}, "private key does not match public key"},
		{"client CA missing", tlsconfig.Config{CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientCAFile: ca.CAFile + ".gone"}, "--tls-client-ca: open"},
		{"client CA not PEM", tlsconfig.Config{CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientCAFile: garbage}, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tlsconfig.New(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("New(%+v) succeeded, want an error with %q", tt.cfg, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("New: %q, want one line with %q", err, tt.want)
			}
		})
	}
	if _, err := tlsconfig.New(tlsconfig.Config{ClientCAFile: ca.CAFile}); !errors.Is(err, tlsconfig.ErrClientCAWithoutCert) {
		t.Fatalf("New with only a client CA: %v, want ErrClientCAWithoutCert", err)
	}
}

func TestMutualTLSAcceptsOnlyCertificatesOfTheClientCA(t *testing.T) {
	ca, stranger := testpki.NewCA(t, "ca"), testpki.NewCA(t, "stranger")
	srv := ca.Server(t)
	s, err := tlsconfig.New(tlsconfig.Config{CertFile: srv.CertFile, KeyFile: srv.KeyFile, ClientCAFile: ca.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := serve(t, s.ServerConfig())
	good, foreign := ca.Client(t, "spiffe://example.org/app"), stranger.Client(t, "app.example.org")
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
			_, err := handshake(t, addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", Certificates: tt.certs})
			if (err == nil) != tt.ok {
				t.Fatalf("handshake: %v, want success %v", err, tt.ok)
			}
		})
	}
}

func TestOnlyTLS12WithAEADOrTLS13IsAccepted(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	srv := ca.Server(t)
	s, err := tlsconfig.New(tlsconfig.Config{CertFile: srv.CertFile, KeyFile: srv.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for name, cfg := range map[string]*tls.Config{"grpc": s.ServerConfig(), "http": s.HTTPConfig()} {
		addr := serve(t, cfg)
		if _, err := handshake(t, addr, &tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS11}); err == nil { //nolint:gosec // a weak client, which the server must refuse
			t.Errorf("%s: TLS 1.1 accepted", name)
		}
		weak := &tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}} //nolint:gosec // a weak client, which the server must refuse
		if _, err := handshake(t, addr, weak); err == nil {
			t.Errorf("%s: a CBC suite accepted", name)
		}
		strong12 := &tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}} //nolint:gosec // TLS 1.2 on purpose: the minimum the server must accept
		if _, err := handshake(t, addr, strong12); err != nil {
			t.Errorf("%s: TLS 1.2 with an AEAD suite refused: %v", name, err)
		}
		if _, err := handshake(t, addr, &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS13}); err != nil {
			t.Errorf("%s: TLS 1.3 refused: %v", name, err)
		}
	}
}

func TestReplacedCertificateIsServed(t *testing.T) {
	tests := []struct {
		name    string
		refresh time.Duration
		reload  bool // call Reload instead of waiting for the refresh
	}{
		{"by the periodic refresh", 50 * time.Millisecond, false},
		{"by Reload at once", time.Hour, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := testpki.NewCA(t, "ca")
			first, second := ca.Server(t), ca.Server(t)
			s, err := tlsconfig.New(tlsconfig.Config{CertFile: first.CertFile, KeyFile: first.KeyFile, Refresh: tt.refresh})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for name, cfg := range map[string]*tls.Config{"grpc": s.ServerConfig(), "http": s.HTTPConfig()} {
				addr := serve(t, cfg)
				client := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
				if got, err := handshake(t, addr, client); err != nil || got.Cmp(first.Cert.SerialNumber) != 0 {
					t.Fatalf("%s: first handshake: serial %v, %v; want %v", name, got, err, first.Cert.SerialNumber)
				}
				second.Install(t, first.CertFile, first.KeyFile)
				if tt.reload {
					if err := s.Reload(); err != nil {
						t.Fatal(err)
					}
				}
				deadline := time.Now().Add(5 * time.Second)
				for {
					got, err := handshake(t, addr, client)
					if err == nil && got.Cmp(second.Cert.SerialNumber) == 0 {
						break
					}
					if tt.reload || time.Now().After(deadline) {
						t.Fatalf("%s: after the replacement: serial %v, %v; want %v", name, got, err, second.Cert.SerialNumber)
					}
					time.Sleep(20 * time.Millisecond) // poll interval, bounded by the deadline
				}
				first.Install(t, first.CertFile, first.KeyFile) // back, for the next listener
				if err := s.Reload(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestBrokenFileKeepsTheLastGoodCertificate(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	srv := ca.Server(t)
	s, err := tlsconfig.New(tlsconfig.Config{CertFile: srv.CertFile, KeyFile: srv.KeyFile, Refresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addr := serve(t, s.ServerConfig())
	os.WriteFile(srv.CertFile, []byte("half a rotation"), 0o600)
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Fatalf("Reload of a broken file: %v, want an error naming --tls-cert", err)
	}
	got, err := handshake(t, addr, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil || got.Cmp(srv.Cert.SerialNumber) != 0 {
		t.Fatalf("after a failed reload: serial %v, %v; want the previous %v", got, err, srv.Cert.SerialNumber)
	}
}

func TestRefreshLogsABrokenFileAndANewCertificate(t *testing.T) {
	ca := testpki.NewCA(t, "ca")
	first, second := ca.Server(t), ca.Server(t)
	var logs testlog.Buffer
	s, err := tlsconfig.New(tlsconfig.Config{CertFile: first.CertFile, KeyFile: first.KeyFile, Refresh: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitLog := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(logs.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q logged within 5s:\n%s", want, logs.String())
			}
			time.Sleep(10 * time.Millisecond) // poll interval, bounded by the deadline
		}
	}
	os.WriteFile(first.CertFile, []byte("half a rotation"), 0o600)
	waitLog("TLS files do not load")
	second.Install(t, first.CertFile, first.KeyFile)
	waitLog("serial=" + second.Cert.SerialNumber.String())
}
