// Package etcdtest runs a real etcd server inside a test process, on
// loopback, for the tests of the cluster code: etcd's own server
// (go.etcd.io/etcd/server/v3/embed), not a mock, so membership, leases,
// transactions and watches behave as they do in production. The Go module
// proxy brings it with the module, so `go test ./...` needs no etcd
// installed.
//
// A Server can be stopped and started again on the same ports and data, so
// a test can take etcd away for a while and bring it back.
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startTimeout bounds one start of the server; an embedded single member
// is ready in well under a second on an idle machine.
const startTimeout = 60 * time.Second

// Server is one single-member etcd cluster on 127.0.0.1.
type Server struct {
	dir       string
	clientURL url.URL
	peerURL   url.URL
	mu        sync.Mutex
	etcd      *embed.Etcd // nil while stopped
}

// Start runs a new etcd server for tb, with its data in a directory of
// tb's, and stops it when tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{
		dir:       tb.TempDir(),
		clientURL: url.URL{Scheme: "http", Host: freeAddr(tb)},
		peerURL:   url.URL{Scheme: "http", Host: freeAddr(tb)},
	}
	if err := s.start(); err != nil {
		tb.Fatalf("etcdtest: %v", err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Endpoint is the client URL, such as "http://127.0.0.1:40123", for
// clientv3.Config.Endpoints or registryd --etcd-endpoints.
func (s *Server) Endpoint() string { return s.clientURL.String() }

// Endpoints is Endpoint as a list.
func (s *Server) Endpoints() []string { return []string{s.Endpoint()} }

// Client returns an etcd client of s, closed when tb ends.
func (s *Server) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   s.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		tb.Fatalf("etcdtest: client: %v", err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop stops the server and keeps its data. It is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.etcd != nil {
		s.etcd.Close()
		s.etcd = nil
	}
}

// Restart starts a stopped server again, on the same ports and with the
// same data: its keys survive, and leases whose TTL has not run out in the
// meantime too (etcd extends every lease by its TTL when a leader is
// elected).
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	if err := s.start(); err != nil {
		tb.Fatalf("etcdtest: restart: %v", err)
	}
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.etcd != nil {
		return errors.New("already running")
	}
	cfg := embed.NewConfig()
	cfg.Name = "etcdtest"
	cfg.Dir = s.dir
	cfg.ListenClientUrls = []url.URL{s.clientURL}
	cfg.AdvertiseClientUrls = []url.URL{s.clientURL}
	cfg.ListenPeerUrls = []url.URL{s.peerURL}
	cfg.AdvertisePeerUrls = []url.URL{s.peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Tests lose nothing to a crash of the test process; fsync would make
	// every write wait on the disk of a machine running many tests.
	cfg.UnsafeNoFsync = true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return err
	case <-time.After(startTimeout):
		e.Close()
		return fmt.Errorf("not ready within %s", startTimeout)
	}
	s.etcd = e
	return s.waitServing()
}

// waitServing waits until the client port answers a read, so that a test
// that starts right after sees a working server.
func (s *Server) waitServing() error {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.clientURL.String()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	_, err = c.Get(ctx, "etcdtest-ready")
	return err
}

// freeAddr returns a loopback address with a port free right now. The
// server is given addresses rather than listeners so that Restart can bind
// the same ports again.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	var lc net.ListenConfig
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("etcdtest: %v", err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}
