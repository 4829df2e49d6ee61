package server

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// deafClient opens a lease over its own connection, pins one object, then
// floods the stream with pins of a thousand handles each and never reads
// again: the server's answers (~100 KiB each) fill the flow-control window
// (kept at 64 KiB, without growth) and its Send blocks. Each pin also pins
// one new object, so that the lease's pin count tells how many pins the
// server has served.
type deafClient struct {
	id      string
	handle  string
	cancel  context.CancelFunc
	flooded sync.WaitGroup
}

func newDeafClient(t *testing.T, e *env, addr string) *deafClient {
	t.Helper()
	conn := deafConn(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	keeper := e.openLease(t, "keeper", 0) // so that the GC takes none of them
	d := &deafClient{handle: e.put(t, "deaf", keeper.id), cancel: cancel}
	stream, err := registryv1.NewRegistryServiceClient(conn).Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(openReq("")); err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	d.id = m.GetOpened().GetLeaseId()
	if err := stream.Send(pinReq(d.handle)); err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.GetPinned().GetResults()[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_PINNED {
		t.Fatalf("pin: %v, %v", m, err)
	}
	const flood = 4 * outboxSize // far more answers than fit
	fresh := make([]string, flood)
	for i := range fresh {
		fresh[i] = e.put(t, "fresh", keeper.id)
	}
	d.flooded.Add(1)
	go func() {
		defer d.flooded.Done()
		for i := range flood {
			hs := make([]string, MaxHandlesPerRequest)
			hs[0] = fresh[i]
			for j := 1; j < len(hs); j++ {
				hs[j] = d.handle
			}
			if stream.Send(pinReq(hs...)) != nil {
				return
			}
		}
	}()
	t.Cleanup(d.stop)
	// Once the server has served more pins than its outbox holds, answers
	// are waiting behind a Send that cannot complete.
	waitFor(t, 10*time.Second, "answers piling up", func() bool {
		in, err := e.leases.Lookup(d.id)
		return err != nil || in.Pins >= 1+outboxSize+2
	})
	return d
}

// deafConn dials addr with flow-control windows that stay at 64 KiB, so
// that a client that does not read blocks the server's sends soon.
func deafConn(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (d *deafClient) stop() {
	d.cancel()
	d.flooded.Wait()
}

func stallEnv(t *testing.T, stall time.Duration) (*env, string) {
	return stallEnvWith(t, envOptions{stall: stall})
}

// stallEnvWith starts a server on loopback TCP with options o.
func stallEnvWith(t *testing.T, o envOptions) (*env, string) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.lis = lis
	return newEnvWith(t, o), lis.Addr().String()
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDeafClientIsStalledOut: a client that stops reading has its stream
// ended after the stall timeout, and its lease (no grace) released.
func TestDeafClientIsStalledOut(t *testing.T) {
	e, addr := stallEnv(t, 200*time.Millisecond)
	d := newDeafClient(t, e, addr)
	waitFor(t, 10*time.Second, "lease released", func() bool {
		_, err := e.leases.Lookup(d.id)
		return errors.Is(err, lease.ErrNotFound)
	})
	waitFor(t, 10*time.Second, "handler ended", func() bool { return e.srv.calls.running() == 1 }) // the keeper's
	st, err := e.rs.Stat(ctxT(t), &registryv1.StatRequest{Handle: d.handle})
	if err != nil || st.GetInfo().GetPinCount() != 1 { // the keeper's
		t.Fatalf("the deaf client's object: %v, %v; want the keeper's pin alone", st, err)
	}
}

// TestRevokeEndsADeafClientsStream: revoking the lease of a client that
// stopped reading ends its handler at once, with its pins released; the
// stall timeout is never waited for.
func TestRevokeEndsADeafClientsStream(t *testing.T) {
	e, addr := stallEnv(t, time.Hour)
	d := newDeafClient(t, e, addr)
	if _, err := e.admin.RevokeLease(ctxT(t), &registryv1.RevokeLeaseRequest{LeaseId: d.id}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "handler ended", func() bool { return e.srv.calls.running() == 1 }) // the keeper's
	st, err := e.rs.Stat(ctxT(t), &registryv1.StatRequest{Handle: d.handle})
	if err != nil || st.GetInfo().GetPinCount() != 1 { // the keeper's
		t.Fatalf("the deaf client's object: %v, %v; want the keeper's pin alone", st, err)
	}
}

// TestShutdownDoesNotWaitForADeafClient: Shutdown ends a deaf client's
// lease and returns without running out its timeout.
func TestShutdownDoesNotWaitForADeafClient(t *testing.T) {
	e, addr := stallEnv(t, time.Hour)
	d := newDeafClient(t, e, addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v, want it to finish before its timeout", err)
	}
	if _, err := e.leases.Lookup(d.id); !errors.Is(err, lease.ErrNotFound) {
		t.Fatalf("lease after shutdown: %v", err)
	}
}

// TestStalledStatus: the status a stalled stream ends with.
func TestStalledStatus(t *testing.T) {
	o := &outbox[*registryv1.LeaseResponse]{stall: time.Second}
	err := o.stalledStatus()
	wantStatus(t, err, codes.ResourceExhausted, registryv1.ErrorReason_STREAM_STALLED.String())
	if status.Convert(err).Message() == "" {
		t.Fatal("no message")
	}
}

// deafWatcher starts a watch of every event over a connection whose client
// never reads, and makes n events.
func deafWatcher(t *testing.T, e *env, addr string, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := registryv1.NewAdminServiceClient(deafConn(t, addr)).WatchEvents(ctx, &registryv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil { // in place
		t.Fatal(err)
	}
	for range n { // ~100 bytes an event: far more than the window holds
		if _, err := e.reg.Put([]byte("an event"), registry.Meta{}, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeafWatcherIsStalledOut: a watch whose client does not read ends
// after the stall timeout, though the registry still keeps up with it.
func TestDeafWatcherIsStalledOut(t *testing.T) {
	e, addr := stallEnvWith(t, envOptions{stall: 200 * time.Millisecond, watchBuffer: 1 << 16})
	deafWatcher(t, e, addr, 3000)
	waitFor(t, 10*time.Second, "handler ended", func() bool { return e.srv.calls.running() == 0 })
}

// TestShutdownDoesNotWaitForADeafWatcher: Shutdown ends a watch whose
// client does not read, and returns before its timeout.
func TestShutdownDoesNotWaitForADeafWatcher(t *testing.T) {
	e, addr := stallEnvWith(t, envOptions{stall: time.Hour, watchBuffer: 1 << 16})
	deafWatcher(t, e, addr, 3000)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v, want it to finish before its timeout", err)
	}
}
