package observe

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"testing"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/telemetry"
)

// BenchmarkScrapeAtScale: one GET /metrics while the registry holds n
// objects, half pinned and half WEAK, judged for leaks as registryd's
// default --leak-gc-cycles=3 asks. A scrape reads counters kept as states
// change, so it must not grow with n.
func BenchmarkScrapeAtScale(b *testing.B) {
	for _, k := range otelVars {
		b.Setenv(k, "")
	}
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			// The collector is off so that the weak objects stay to be
			// counted.
			defer debug.SetGCPercent(debug.SetGCPercent(-1))
			f := newFixtureWith(b, telemetry.Config{Metrics: true, Logger: slog.New(slog.DiscardHandler)}, registry.Config{LeakGCCycles: 3})
			reg, leases, tel := f.reg, f.leases, f.tel
			s, err := leases.Open(lease.OpenParams{Client: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			data := make([]byte, 100)
			for i := range n {
				if i%2 == 0 {
					_, err = leases.Put(auth.Anonymous, s.ID(), data, registry.Meta{})
				} else {
					_, err = reg.Put(data, registry.Meta{}, nil)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			srv := httptest.NewServer(tel.Handler(func() bool { return true }))
			defer srv.Close()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := http.Get(srv.URL + "/metrics")
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("/metrics: %s", resp.Status)
				}
			}
		})
	}
}
