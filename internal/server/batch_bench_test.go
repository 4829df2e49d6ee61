package server

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"

	"github.com/weakref/registry/internal/bufpool"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// batchEnv is an env and the address it serves on.
type batchEnv struct {
	*env
	addr string
}

// batchBenchEnv is a server whose one lease may pin a thousand objects,
// on TCP loopback or bufconn.
func batchBenchEnv(b *testing.B, loopback bool) batchEnv {
	l := testLimits
	l.MaxPinsPerLease = MaxHandlesPerRequest
	o := envOptions{limits: &l}
	if loopback {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		o.lis = lis
		return batchEnv{newEnvWith(b, o), lis.Addr().String()}
	}
	return batchEnv{env: newEnvWith(b, o)}
}

// BenchmarkGRPCBatchResolve resolves batches of 100-byte objects over TCP
// loopback, client and server in this process, and reports the cost per
// object: the figure to set against Redis's pipelined GET.
func BenchmarkGRPCBatchResolve(b *testing.B) {
	for _, n := range []int{16, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			e := batchBenchEnv(b, true)
			lc := e.openLease(b, "bench", 0)
			hs := make([]string, n)
			for i := range hs {
				hs[i] = e.put(b, string(make([]byte, 100)), lc.id)
			}
			req := &registryv1.BatchResolveRequest{Handles: hs}
			ctx := ctxT(b)
			// As the Go client dials (see internal/bufpool).
			conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.ForceCodecV2(bufpool.Codec{})), experimental.WithBufferPool(bufpool.Default))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			rs := registryv1.NewRegistryServiceClient(conn)
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := rs.BatchResolve(ctx, req); err != nil {
						b.Error(err)
						return
					}
				}
			})
			objects := float64(b.N) * float64(n)
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/objects, "ns/object")
			// CPU, client and server together: what a loaded machine's
			// wall clock cannot show.
			b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/objects, "cpu-ns/object")
			b.ReportMetric(objects/time.Since(start).Seconds(), "objects/s")
		})
	}
}

// cpuTime is the CPU this process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBatchResolveHandler is the handler alone, without gRPC: the
// registry's lookups and the answer's build.
func BenchmarkBatchResolveHandler(b *testing.B) {
	e := batchBenchEnv(b, false)
	lc := e.openLease(b, "bench", 0)
	hs := make([]string, 1000)
	for i := range hs {
		hs[i] = e.put(b, string(make([]byte, 100)), lc.id)
	}
	svc := &registryService{reg: e.reg, leases: e.leases, limits: testLimits}
	req := &registryv1.BatchResolveRequest{Handles: hs}
	ctx := ctxT(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := svc.BatchResolve(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(hs)), "ns/object")
}
