package client_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/weakref/registry/client"
)

// TestCleanCallsEndTheirClientSpansOK: a call the server answered OK ends
// its client span OK (status Unset), whatever the client does next. A
// stream read up to the last message it expects but not to its end, or
// cancelled once the answer is in, ends CANCELLED and says ERROR in every
// trace of it, although nothing went wrong.
func TestCleanCallsEndTheirClientSpansOK(t *testing.T) {
	srv := newServer(t, 0)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })

	tests := []struct {
		name   string
		method string // the span's name
		run    func(t *testing.T, c *client.Client)
	}{
		{"download", "registry.v1.RegistryService/Download", func(t *testing.T, c *client.Client) {
			info, err := c.Put(ctxT(t), []byte("downloaded"), client.Linger(time.Minute)) // not collected before the download
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if _, err := c.Download(ctxT(t), info.Handle, &got); err != nil || got.String() != "downloaded" {
				t.Fatalf("Download = %q, %v", got.String(), err)
			}
		}},
		{"lease close", "registry.v1.RegistryService/Lease", func(t *testing.T, c *client.Client) {
			l, err := c.Lease(ctxT(t), client.LeaseName("trace-close"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := l.Close(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		}},
		{"put under a lease, then close", "registry.v1.RegistryService/Lease", func(t *testing.T, c *client.Client) {
			l, err := c.Lease(ctxT(t), client.LeaseName("trace-put"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Put(ctxT(t), []byte("held"), client.PinnedBy(l)); err != nil {
				t.Fatal(err)
			}
			if n, err := l.Close(ctxT(t)); err != nil || n != 1 {
				t.Fatalf("Close = %d, %v; want 1 released", n, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec.Reset()
			c, err := client.Dial(srv.addr, client.WithTracerProvider(tp))
			if err != nil {
				t.Fatal(err)
			}
			tt.run(t, c)
			// As registryctl does: the connection goes right after the
			// last answer.
			c.Close()
			var found bool
			for _, s := range rec.Ended() {
				if s.Name() == tt.method {
					found = true
				}
				if s.Status().Code == codes.Error {
					t.Errorf("client span %s ended %v %q, want OK; attributes %v", s.Name(), s.Status().Code, s.Status().Description, s.Attributes())
				}
			}
			if !found {
				t.Errorf("no client span %s ended; ended: %d spans", tt.method, len(rec.Ended()))
			}
		})
	}
}
