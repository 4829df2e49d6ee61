package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/netfault"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/server"
)

// exampleAddr is the address of the registryd the examples talk to: one
// started in process by TestMain, on loopback.
var exampleAddr string

func TestMain(m *testing.M) {
	srv, addr, err := serve(time.Minute, testKey)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	exampleAddr = addr
	code := m.Run()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	srv.Shutdown(ctx)
	cancel()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// serve starts an in-process registryd on a loopback port: the same
// server as cmd/registryd, over real TCP.
func serve(maxGrace time.Duration, key string) (*server.Server, string, error) {
	return serveWith(maxGrace, key, 4<<20)
}

func serveWith(maxGrace time.Duration, key string, maxMessage int) (*server.Server, string, error) {
	return serveCodec(maxGrace, handle.Config{Key: []byte(key)}, maxMessage)
}

// serveCodec is serveWith with the handles of hc: a node tag and an
// epoch of its own, for a cluster's nodes.
func serveCodec(maxGrace time.Duration, hc handle.Config, maxMessage int) (*server.Server, string, error) {
	codec, err := handle.NewCodec(hc)
	if err != nil {
		return nil, "", err
	}
	reg := registry.New(registry.Config{Codec: codec, MaxObjectBytes: 64 << 20})
	leases := lease.New(lease.Config{Codec: codec, Registry: reg, MaxGrace: maxGrace})
	srv := server.New(server.Config{
		Registry: reg,
		Leases:   leases,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		// Small message and linger limits, so that tests reach them.
		Limits: server.Limits{MaxGrace: maxGrace, MaxMessageBytes: maxMessage, MaxObjectBytes: 64 << 20, MaxLinger: time.Minute},
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	go srv.Serve(lis)
	return srv, lis.Addr().String(), nil
}

// testServer is a registryd of a test's own, and an admin client to it.
type testServer struct {
	addr  string
	admin registryv1.AdminServiceClient
	stop  func() // shuts the server down, once
}

// testKey is the MAC key of the test servers: handles from one are
// known to another, as from a restart; newServerWithKey makes strangers.
const testKey = "client-tests-key-0123456789abcdef"

func newServer(t *testing.T, maxGrace time.Duration) *testServer {
	return newServerWithKey(t, maxGrace, testKey)
}

func newServerWithKey(t *testing.T, maxGrace time.Duration, key string) *testServer {
	t.Helper()
	return startServer(t, maxGrace, key, 4<<20)
}

// newServerWithLimits starts a test server whose gRPC message limit is
// maxMessage bytes.
func newServerWithLimits(t *testing.T, maxMessage int) *testServer {
	t.Helper()
	return startServer(t, 0, testKey, maxMessage)
}

func startServer(t *testing.T, maxGrace time.Duration, key string, maxMessage int) *testServer {
	t.Helper()
	return startServerCodec(t, maxGrace, handle.Config{Key: []byte(key)}, maxMessage)
}

func startServerCodec(t testing.TB, maxGrace time.Duration, hc handle.Config, maxMessage int) *testServer {
	t.Helper()
	srv, addr, err := serveCodec(maxGrace, hc, maxMessage)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	stop := sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	t.Cleanup(func() {
		conn.Close()
		stop()
	})
	return &testServer{addr: addr, admin: registryv1.NewAdminServiceClient(conn), stop: stop}
}

// collect forces a collection on the server.
func (s *testServer) collect(t *testing.T) {
	t.Helper()
	if _, err := s.admin.Collect(ctxT(t), &registryv1.CollectRequest{}); err != nil {
		t.Fatal(err)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proxy plays network failures between a client and a registryd.
type proxy = netfault.Proxy

func newProxy(t *testing.T, upstream string) *proxy { return netfault.New(t, upstream) }

// forceCollection runs a collection on the examples' registryd, as
// 'registryctl gc' does.
func forceCollection() {
	conn, err := grpc.NewClient(exampleAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := registryv1.NewAdminServiceClient(conn).Collect(ctx, &registryv1.CollectRequest{}); err != nil {
		panic(err)
	}
}
