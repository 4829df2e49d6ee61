// Package tlsconfig builds registryd's server TLS from PEM files that it
// re-reads while serving: a certificate and key, and for mutual TLS the CA
// whose client certificates are accepted. It keeps file handling out of
// the gRPC server, which takes the credentials it returns.
//
// The files are watched by grpc-go's pemfile certificate provider, every
// Config.Refresh; Reload reads them at once (registryd calls it on SIGHUP).
// A file that is missing or broken after start-up keeps the last good
// material serving, so a half-written rotation never takes TLS down.
package tlsconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/tls/certprovider"
	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"
)

// Config names the files. CertFile and KeyFile are required; ClientCAFile
// turns mutual TLS on.
type Config struct {
	CertFile, KeyFile string
	// ClientCAFile holds the PEM certificates of the CAs that sign
	// client certificates. Set, every client must present a certificate
	// that one of them signed; empty, none is asked for.
	ClientCAFile string
	// Refresh is how often the files are re-read. Default 30s.
	Refresh time.Duration
	// Logger, if set, is told every Refresh when a file no longer loads
	// (the provider would keep the last good material without a word)
	// and when the certificate served changes. nil: nothing is logged.
	Logger *slog.Logger
}

// DefaultRefresh is Config.Refresh's default.
const DefaultRefresh = 30 * time.Second

// handshakeWait bounds how long a handshake waits for a provider's first
// material; New and Reload check the files first, so it is not reached
// unless a file breaks between the check and the provider's first read.
const handshakeWait = 5 * time.Second

// Source serves the current certificate, and client CAs, to TLS
// handshakes. It is safe for concurrent use.
type Source struct {
	cfg Config

	mu   sync.Mutex            // guards prov; held while a reload swaps it
	prov certprovider.Provider // the current watcher of cfg's files

	stop chan struct{} // closed by Close: ends watch
	done chan struct{} // closed when watch has returned
	once sync.Once     // Close's
}

// ErrClientCAWithoutCert is New's error for a client CA with no server
// certificate: mutual TLS needs TLS.
var ErrClientCAWithoutCert = errors.New("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS needs TLS)")

// New checks cfg's files, so that a mistake is reported at start-up in one
// line (missing file, key that does not match its certificate, CA file
// without a certificate), then starts watching them. The caller owes Close.
func New(cfg Config) (*Source, error) {
	if cfg.CertFile == "" && cfg.KeyFile == "" {
		if cfg.ClientCAFile != "" {
			return nil, ErrClientCAWithoutCert
		}
		return nil, errors.New("--tls-cert and --tls-key are required for TLS")
	}
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	s := &Source{cfg: cfg, stop: make(chan struct{}), done: make(chan struct{})}
	prov, err := s.start()
	if err != nil {
		return nil, err
	}
	s.prov = prov
	if cfg.Logger == nil {
		close(s.done)
		return s, nil
	}
	go s.watch()
	return s, nil
}

// watch tells the logger, every Refresh, of a file that does not load and
// of a new certificate being served.
func (s *Source) watch() {
	defer close(s.done)
	tick := time.NewTicker(s.cfg.Refresh)
	defer tick.Stop()
	var serial string
	if km, err := s.material(context.Background()); err == nil && km.Certs[0].Leaf != nil {
		serial = km.Certs[0].Leaf.SerialNumber.String()
	}
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		if err := s.cfg.check(); err != nil {
			s.cfg.Logger.Warn("TLS files do not load; the previous certificate stays in use", "err", err)
			continue
		}
		km, err := s.material(context.Background())
		if err != nil || km.Certs[0].Leaf == nil {
			continue
		}
		if leaf := km.Certs[0].Leaf; leaf.SerialNumber.String() != serial {
			serial = leaf.SerialNumber.String()
			s.cfg.Logger.Info("TLS certificate now served", "serial", serial, "not_after", leaf.NotAfter)
		}
	}
}

// check reads the files as the provider will and says in one line what is
// wrong with them.
func (c Config) check() error {
	pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return fmt.Errorf("--tls-cert %s / --tls-key %s: %w", c.CertFile, c.KeyFile, unwrapPath(err))
	}
	if len(pair.Certificate) == 0 {
		return fmt.Errorf("--tls-cert %s: no certificate in it", c.CertFile)
	}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return fmt.Errorf("--tls-client-ca: %w", unwrapPath(err))
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("--tls-client-ca %s: no PEM certificate in it", c.ClientCAFile)
		}
	}
	return nil
}

// unwrapPath drops an *os.PathError's repetition of the path the message
// already names.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s %s: %w", pe.Op, pe.Path, pe.Err)
	}
	return err
}

// start checks the files, starts a provider on them and waits for its
// first material, so that the provider it returns serves at once.
func (s *Source) start() (certprovider.Provider, error) {
	if err := s.cfg.check(); err != nil {
		return nil, err
	}
	opts := pemfile.Options{CertFile: s.cfg.CertFile, KeyFile: s.cfg.KeyFile, RootFile: s.cfg.ClientCAFile, RefreshDuration: s.cfg.Refresh}
	if filepath.Dir(opts.CertFile) != filepath.Dir(opts.KeyFile) {
		// pemfile insists, so that a rotation can swap both at once
		return nil, fmt.Errorf("--tls-cert %s and --tls-key %s must be in the same directory", opts.CertFile, opts.KeyFile)
	}
	prov, err := pemfile.NewProvider(opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), handshakeWait)
	defer cancel()
	if _, err := prov.KeyMaterial(ctx); err != nil {
		prov.Close()
		return nil, fmt.Errorf("reading --tls-cert %s: %w", s.cfg.CertFile, err)
	}
	return prov, nil
}

// Reload re-reads the files now. On an error the material served before
// stays in use.
func (s *Source) Reload() error {
	prov, err := s.start()
	if err != nil {
		return err
	}
	s.mu.Lock()
	old := s.prov
	s.prov = prov
	s.mu.Unlock()
	old.Close()
	return nil
}

// Close stops watching the files. Handshakes after it fail.
func (s *Source) Close() {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.mu.Lock()
		defer s.mu.Unlock()
		s.prov.Close()
	})
}

// MutualTLS reports whether client certificates are required.
func (s *Source) MutualTLS() bool { return s.cfg.ClientCAFile != "" }

// material returns the current certificate and roots.
func (s *Source) material(ctx context.Context) (*certprovider.KeyMaterial, error) {
	s.mu.Lock()
	prov := s.prov
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, handshakeWait)
	defer cancel()
	km, err := prov.KeyMaterial(ctx)
	if err != nil {
		return nil, err
	}
	if len(km.Certs) == 0 {
		return nil, errors.New("tlsconfig: no certificate loaded")
	}
	return km, nil
}

// base is the protocol policy every listener shares: TLS 1.2 at least,
// 1.3 preferred (Go negotiates the highest both sides speak), and for 1.2
// only forward-secret AEAD suites. TLS 1.3's suites are all strong and Go
// does not let them be configured.
func base() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}

// ServerConfig is the tls.Config of the gRPC listener: each handshake
// takes the current certificate and, with mutual TLS, requires a client
// certificate signed by one of the current client CAs.
func (s *Source) ServerConfig() *tls.Config {
	c := base()
	c.NextProtos = []string{"h2"}
	c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		km, err := s.material(hello.Context())
		if err != nil {
			return nil, err
		}
		cc := base()
		cc.NextProtos = []string{"h2"}
		cc.Certificates = km.Certs
		if s.MutualTLS() {
			cc.ClientAuth = tls.RequireAndVerifyClientCert
			cc.ClientCAs = km.Roots
		}
		return cc, nil
	}
	return c
}

// HTTPConfig is the tls.Config of the metrics and health listener: the
// same current certificate, and no client certificate asked for, so that
// a scraper or a probe needs only the CA.
func (s *Source) HTTPConfig() *tls.Config {
	c := base()
	c.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		km, err := s.material(hello.Context())
		if err != nil {
			return nil, err
		}
		return &km.Certs[0], nil
	}
	return c
}

// Credentials are the gRPC transport credentials of ServerConfig. The
// verified client certificate reaches handlers as credentials.TLSInfo in
// peer.AuthInfo.
func (s *Source) Credentials() credentials.TransportCredentials {
	return credentials.NewTLS(s.ServerConfig())
}
