package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/weakref/registry/client"
)

// BenchmarkResolve is one Resolve of a small object from a registryd of
// one address on loopback: the client's path to compare across changes
// (a cluster's client takes another branch).
func BenchmarkResolve(b *testing.B) {
	srv, addr, err := serve(0, testKey)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	c, err := client.Dial(addr, client.WithoutTracing())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	benchResolve(b, c)
}

func benchResolve(b *testing.B, c *client.Client) {
	ctx := context.Background()
	info, err := c.Put(ctx, make([]byte, 64), client.Linger(time.Minute))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := c.Resolve(ctx, info.Handle); err != nil {
			b.Fatal(err)
		}
	}
}
