package server

import (
	"fmt"
	"runtime/debug"
	"testing"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// BenchmarkGetStatsAtScale: a GetStats over gRPC while the registry holds
// n objects, half pinned by leases and half WEAK and old enough to be
// judged for leaks (registryd's default --leak-gc-cycles=3). It must not
// grow with n: every figure is kept as states change.
func BenchmarkGetStatsAtScale(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			old := debug.SetGCPercent(-1)
			defer debug.SetGCPercent(old)
			limits := testLimits
			limits.MaxPinsPerLease, limits.MaxPinnedBytes = 0, 0 // no limit
			e := newEnvWith(b, envOptions{leakCycles: 3, limits: &limits})
			fillAtScale(b, e.reg, e.leases, n)
			ctx := ctxT(b)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.admin.GetStats(ctx, &registryv1.GetStatsRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// fillAtScale puts n objects: every other one pinned by one of a hundred
// leases, the rest WEAK. The collector is off until the benchmark ends, so
// that the weak ones stay for it to count.
func fillAtScale(b *testing.B, reg *registry.Registry, leases *lease.Manager, n int) {
	b.Helper()
	var sessions []*lease.Session
	for i := range 100 {
		s, err := leases.Open(lease.OpenParams{Client: fmt.Sprintf("bench-%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		sessions = append(sessions, s)
	}
	data := make([]byte, 100)
	for i := range n {
		if i%2 == 0 {
			if _, err := leases.Put(auth.Anonymous, sessions[i%len(sessions)].ID(), data, registry.Meta{}); err != nil {
				b.Fatal(err)
			}
		} else if _, err := reg.Put(data, registry.Meta{}, nil); err != nil {
			b.Fatal(err)
		}
	}
	if st := reg.Stats(); st.Objects[registry.Weak] < int64(n/4) {
		b.Fatalf("only %d objects are WEAK", st.Objects[registry.Weak])
	}
	b.Cleanup(func() {
		for _, s := range sessions {
			s.Close(0)
		}
	})
}
