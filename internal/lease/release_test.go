package lease_test

import (
	"testing"

	"github.com/weakref/registry/internal/lease"
)

// BenchmarkCounts measures Counts with 10k live leases: it must not
// depend on how many there are.
func BenchmarkCounts(b *testing.B) {
	f := newFixture(b, lease.Config{})
	for range 10_000 {
		f.open(b, lease.OpenParams{Client: "bench"})
	}
	b.ReportAllocs()
	for b.Loop() {
		f.m.Counts()
	}
}
