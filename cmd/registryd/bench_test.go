package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// The daemon benchmarks wire registryd exactly as main does (parseConfig,
// newLogger, build) from the flags each sub-benchmark names, and call it
// over loopback TCP: what the server package's benchmarks cannot show,
// such as the cost of the default flags, shows here. The log goes to a
// file, as registryd's stderr does when redirected.
//
//	go test -run XXX -bench Daemon -benchmem ./cmd/registryd

// daemonFlags are the flag sets the daemon benchmarks compare.
var daemonFlags = []struct {
	name string
	args []string
}{
	{"defaults", nil},
	{"log=warn", []string{"--log-level=warn"}},
	{"log=warn,telemetry=off", []string{"--log-level=warn", "--telemetry=off"}},
	{"log=debug", []string{"--log-level=debug"}},
}

// startDaemon serves registryd built from args on a loopback port and
// returns a client of it.
func startDaemon(b *testing.B, args []string) registryv1.RegistryServiceClient {
	for _, k := range []string{"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		b.Setenv(k, "")
	}
	cfg, err := parseConfig(args)
	if err != nil {
		b.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(b.TempDir(), "registryd.log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { logFile.Close() })
	d, err := build(cfg, newLogger(cfg, logFile))
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go d.srv.Serve(lis)
	b.Cleanup(func() {
		d.srv.Shutdown(context.Background())
		d.flushTelemetry()
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return registryv1.NewRegistryServiceClient(conn)
}

var benchPayload = make([]byte, 100)

// BenchmarkDaemonResolve resolves one object pinned by a lease held
// throughout, from GOMAXPROCS callers on one connection.
func BenchmarkDaemonResolve(b *testing.B) {
	for _, f := range daemonFlags {
		b.Run(f.name, func(b *testing.B) {
			rs := startDaemon(b, f.args)
			ctx := b.Context()
			lease, err := rs.Lease(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := lease.Send(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Open{Open: &registryv1.OpenLease{ClientName: "bench"}}}); err != nil {
				b.Fatal(err)
			}
			opened, err := lease.Recv()
			if err != nil {
				b.Fatal(err)
			}
			put, err := rs.Put(ctx, &registryv1.PutRequest{Data: benchPayload, LeaseId: opened.GetOpened().GetLeaseId()})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req := &registryv1.ResolveRequest{Handle: put.GetHandle()}
				for pb.Next() {
					if _, err := rs.Resolve(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkDaemonPut puts 100-byte objects with no lease: each is weak
// at once, and collected by a later GC.
func BenchmarkDaemonPut(b *testing.B) {
	for _, f := range daemonFlags {
		b.Run(f.name, func(b *testing.B) {
			rs := startDaemon(b, f.args)
			ctx := b.Context()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req := &registryv1.PutRequest{Data: benchPayload}
				for pb.Next() {
					if _, err := rs.Put(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
