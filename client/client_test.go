package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

func dial(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPutResolveStatRoundTrip(t *testing.T) {
	s := newServer(t, time.Minute)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	keep := keeper(t, c) // any GC in this process may take a weak object
	data := []byte("the exact bytes")
	info, err := c.Put(ctx, data, client.ContentType("text/plain"), client.Labels(map[string]string{"team": "ml"}), client.PinnedBy(keep))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(info.Handle, "obj_") || info.Size != int64(len(data)) || info.State != client.StatePinned {
		t.Fatalf("Put info = %+v", info)
	}
	got, rinfo, err := c.Resolve(ctx, info.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) || rinfo.ContentType != "text/plain" || rinfo.Labels["team"] != "ml" {
		t.Fatalf("Resolve = %q, %+v", got, rinfo)
	}
	st, err := c.Stat(ctx, info.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if st.Handle != info.Handle || st.Created.IsZero() || st.State != client.StatePinned || st.PinCount != 1 {
		t.Fatalf("Stat = %+v", st)
	}
}

// keeper opens a lease that keeps a test's objects from the garbage
// collector, which any test in this process may run at any time.
func keeper(t *testing.T, c *client.Client) *client.Lease {
	t.Helper()
	l, err := c.Lease(ctxT(t), client.LeaseName("keeper"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

func TestErrorsMatchWithErrorsIs(t *testing.T) {
	s := newServer(t, time.Minute)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	collected, err := c.Put(ctx, []byte("soon gone"))
	if err != nil {
		t.Fatal(err)
	}
	s.collect(t)
	deleted, err := c.Put(ctx, []byte("deleted"), client.PinnedBy(keeper(t, c)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.admin.DeleteObject(ctx, &registryv1.DeleteObjectRequest{Handle: deleted.Handle, Force: true}); err != nil {
		t.Fatal(err)
	}
	// A handle minted by another registry (another key) is unknown here.
	other := newServerWithKey(t, time.Minute, "another-key-0123456789abcdef0123")
	foreign, err := dial(t, other.addr).Put(ctx, []byte("elsewhere"))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		call   func() error
		want   error
		reason string
		code   codes.Code
	}{
		{"malformed", func() error { _, _, err := c.Resolve(ctx, "obj_nope"); return err }, client.ErrMalformedHandle, "HANDLE_MALFORMED", codes.InvalidArgument},
		{"unknown", func() error { _, err := c.Stat(ctx, foreign.Handle); return err }, client.ErrUnknownHandle, "HANDLE_UNKNOWN", codes.NotFound},
		{"collected", func() error { _, _, err := c.Resolve(ctx, collected.Handle); return err }, client.ErrCollected, "OBJECT_COLLECTED", codes.NotFound},
		{"deleted", func() error { _, _, err := c.Resolve(ctx, deleted.Handle); return err }, client.ErrDeleted, "OBJECT_DELETED", codes.NotFound},
		{"empty payload", func() error { _, err := c.Put(ctx, nil); return err }, client.ErrInvalid, "PAYLOAD_EMPTY", codes.InvalidArgument},
		{"bad label", func() error {
			_, err := c.Put(ctx, []byte("x"), client.Labels(map[string]string{"": "v"}))
			return err
		}, client.ErrInvalid, "LABELS_INVALID", codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want errors.Is %v", err, tt.want)
			}
			var e *client.Error
			if !errors.As(err, &e) || e.Reason != tt.reason || e.Code != tt.code {
				t.Fatalf("err = %#v, want reason %s code %s", err, tt.reason, tt.code)
			}
			if status.Code(err) != tt.code {
				t.Errorf("status.Code(err) = %s, want %s", status.Code(err), tt.code)
			}
		})
	}
}

func TestUnreachableServerIsErrUnavailable(t *testing.T) {
	s := newServer(t, time.Minute)
	p := newProxy(t, s.addr)
	p.SetRefuse(true)
	c := dial(t, p.Addr())
	_, _, err := c.Resolve(ctxT(t), "obj_x")
	if !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
}

func TestPutPinnedByLeaseIsNeverWeak(t *testing.T) {
	s := newServer(t, time.Minute)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	l, err := c.Lease(ctx, client.LeaseName("test"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Put(ctx, []byte("pinned at birth"), client.PinnedBy(l))
	if err != nil {
		t.Fatal(err)
	}
	if info.State != client.StatePinned || info.PinCount != 1 {
		t.Fatalf("Put info = %+v, want pinned once", info)
	}
	s.collect(t)
	if _, _, err := c.Resolve(ctx, info.Handle); err != nil {
		t.Fatalf("pinned object: %v", err)
	}
	if n, err := l.Close(ctx); err != nil || n != 1 {
		t.Fatalf("Close = %d, %v; want 1 released", n, err)
	}
	if l.Err() != nil {
		t.Fatalf("Err after Close = %v", l.Err())
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	s.collect(t)
	if _, _, err := c.Resolve(ctx, info.Handle); !errors.Is(err, client.ErrCollected) {
		t.Fatalf("after Close and collection: %v, want ErrCollected", err)
	}
	if _, err := l.Pin(ctx, info.Handle); err == nil {
		t.Fatal("Pin on a closed lease succeeded")
	}
}

func TestPinAndUnpinReportPerHandle(t *testing.T) {
	s := newServer(t, time.Minute)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	_, _ = c.Put(ctx, []byte("a"))
	gone, _ := c.Put(ctx, []byte("gone"))
	s.collect(t) // both unpinned: both collected
	keep := keeper(t, c)
	a, err := c.Put(ctx, []byte("a"), client.PinnedBy(keep))
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	rs, err := l.Pin(ctx, a.Handle, a.Handle, gone.Handle, "junk")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		outcome client.PinOutcome
		err     error
	}{
		{client.OutcomePinned, nil},
		{client.OutcomeAlreadyPinned, nil},
		{client.OutcomeFailed, client.ErrCollected},
		{client.OutcomeFailed, client.ErrMalformedHandle},
	}
	for i, w := range want {
		if rs[i].Outcome != w.outcome || (w.err == nil) != (rs[i].Err == nil) || (w.err != nil && !errors.Is(rs[i].Err, w.err)) {
			t.Errorf("result %d = %+v, want %v %v", i, rs[i], w.outcome, w.err)
		}
	}
	rs, err = l.Unpin(ctx, a.Handle, a.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Outcome != client.OutcomeUnpinned || rs[1].Outcome != client.OutcomeNotPinned || rs[0].Info.PinCount != 1 {
		t.Errorf("unpin results = %+v", rs)
	}
}

// TestLeaseSurvivesConnectionDrop cuts the TCP connection under a lease:
// the lease resumes within its grace, and every pin is still held.
func TestLeaseSurvivesConnectionDrop(t *testing.T) {
	s := newServer(t, time.Minute)
	p := newProxy(t, s.addr)
	c := dial(t, p.Addr())
	ctx := ctxT(t)
	l, err := c.Lease(ctx, client.LeaseName("survivor"), client.Grace(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	var handles []string
	for i := range 3 {
		info, err := c.Put(ctx, []byte{byte(i), 1, 2, 3}, client.PinnedBy(l))
		if err != nil {
			t.Fatal(err)
		}
		handles = append(handles, info.Handle)
	}

	for round := 1; round <= 2; round++ {
		p.Drop()
		waitFor(t, "the lease to resume", func() bool { return l.Resumes() >= round })
		if err := l.Err(); err != nil {
			t.Fatalf("lease ended: %v", err)
		}
		s.collect(t)
		for i, h := range handles {
			got, info, err := c.Resolve(ctx, h)
			if err != nil || got[0] != byte(i) || info.State != client.StatePinned {
				t.Fatalf("round %d, object %d: %v %+v", round, i, err, info)
			}
		}
		leases, err := s.admin.ListObjects(ctx, &registryv1.ListObjectsRequest{LeaseId: l.ID()})
		if err != nil || len(leases.GetObjects()) != len(handles) {
			t.Fatalf("round %d: objects pinned by the lease = %d, %v; want %d", round, len(leases.GetObjects()), err, len(handles))
		}
	}
	// The resumed lease still works.
	extra, err := c.Put(ctx, []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	if rs, err := l.Pin(ctx, extra.Handle); err != nil || rs[0].Outcome != client.OutcomePinned {
		t.Fatalf("Pin after resume = %+v, %v", rs, err)
	}
	if n, err := l.Close(ctx); err != nil || n != 4 {
		t.Fatalf("Close = %d, %v; want 4 released", n, err)
	}
}

// TestLeaseCallDuringDropIsAnswered: a pin sent while the connection is
// down is sent again after the resume and answered.
func TestLeaseCallDuringDropIsAnswered(t *testing.T) {
	s := newServer(t, time.Minute)
	p := newProxy(t, s.addr)
	c := dial(t, p.Addr())
	ctx := ctxT(t)
	l, err := c.Lease(ctx, client.Grace(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	direct := dial(t, s.addr)
	keep := keeper(t, direct)
	info, err := direct.Put(ctx, []byte("x"), client.PinnedBy(keep))
	if err != nil {
		t.Fatal(err)
	}
	p.SetRefuse(true)
	p.Drop()
	done := make(chan error, 1)
	go func() {
		rs, err := l.Pin(ctx, info.Handle)
		if err == nil && rs[0].Outcome != client.OutcomePinned {
			err = errors.New("outcome " + rs[0].Outcome.String())
		}
		done <- err
	}()
	p.SetRefuse(false)
	if err := <-done; err != nil {
		t.Fatalf("Pin across the drop: %v", err)
	}
	if _, err := keep.Close(ctx); err != nil {
		t.Fatal(err)
	}
	s.collect(t)
	if _, _, err := direct.Resolve(ctx, info.Handle); err != nil {
		t.Fatalf("object pinned across the drop: %v", err)
	}
}

func TestLeaseLostWhenGraceRunsOut(t *testing.T) {
	s := newServer(t, time.Minute)
	p := newProxy(t, s.addr)
	c := dial(t, p.Addr())
	ctx := ctxT(t)
	ended := make(chan error, 1)
	l, err := c.Lease(ctx, client.Grace(300*time.Millisecond), client.OnEnd(func(err error) { ended <- err }))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Put(ctx, []byte("x"), client.PinnedBy(l))
	if err != nil {
		t.Fatal(err)
	}
	p.SetRefuse(true)
	p.Drop()
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("lease not reported lost")
	}
	if !errors.Is(l.Err(), client.ErrLeaseLost) {
		t.Fatalf("Err = %v, want ErrLeaseLost", l.Err())
	}
	if err := <-ended; !errors.Is(err, client.ErrLeaseLost) {
		t.Fatalf("OnEnd got %v", err)
	}
	if _, err := l.Pin(ctx, info.Handle); !errors.Is(err, client.ErrLeaseLost) {
		t.Fatalf("Pin on a lost lease: %v", err)
	}
	// The server let go of it too: the object is collectable.
	direct := dial(t, s.addr)
	defer func() {
		if t.Failed() {
			ls, err := s.admin.ListLeases(context.Background(), &registryv1.ListLeasesRequest{})
			t.Logf("leases on the server: %v %v; lease err %v", ls, err, l.Err())
		}
	}()
	waitFor(t, "the server to release the pin", func() bool {
		// Any GC in this process may take the object once it is weak.
		st, err := direct.Stat(ctx, info.Handle)
		return (err == nil && st.State == client.StateWeak) || errors.Is(err, client.ErrCollected)
	})
	s.collect(t)
	if _, _, err := direct.Resolve(ctx, info.Handle); !errors.Is(err, client.ErrCollected) {
		t.Fatalf("Resolve = %v, want ErrCollected", err)
	}
}

func TestLeaseWithoutGraceIsLostOnDrop(t *testing.T) {
	s := newServer(t, time.Minute)
	p := newProxy(t, s.addr)
	c := dial(t, p.Addr())
	l, err := c.Lease(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	p.Drop()
	<-l.Done()
	if !errors.Is(l.Err(), client.ErrLeaseLost) {
		t.Fatalf("Err = %v, want ErrLeaseLost", l.Err())
	}
}

func TestRevokeReachesTheClient(t *testing.T) {
	s := newServer(t, time.Minute)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	l, err := c.Lease(ctx, client.Grace(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, []byte("x"), client.PinnedBy(l)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.admin.RevokeLease(ctx, &registryv1.RevokeLeaseRequest{LeaseId: l.ID(), Reason: "maintenance window"}); err != nil {
		t.Fatal(err)
	}
	<-l.Done()
	err = l.Err()
	var le *client.LeaseError
	if !errors.Is(err, client.ErrLeaseRevoked) || !errors.As(err, &le) {
		t.Fatalf("Err = %v, want ErrLeaseRevoked", err)
	}
	if le.LeaseID != l.ID() || le.Cause != client.CauseAdmin || le.Reason != "maintenance window" || le.Released != 1 {
		t.Fatalf("LeaseError = %+v", le)
	}
	if _, err := l.Close(ctx); !errors.Is(err, client.ErrLeaseRevoked) {
		t.Fatalf("Close after revoke = %v", err)
	}
}

func TestWatchSeesTheLifecycle(t *testing.T) {
	s := newServer(t, time.Minute)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	l, err := c.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Put(ctx, []byte("watched"), client.PinnedBy(l))
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, info.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	s.collect(t)
	want := []client.EventKind{client.EventCurrent, client.EventUnpinned, client.EventWeak, client.EventCollected}
	var last uint64
	for i, k := range want {
		ev, err := w.Recv()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if ev.Kind != k || ev.Handle != info.Handle || (i > 0 && ev.Seq <= last) {
			t.Fatalf("event %d = %+v, want %v after seq %d", i, ev, k, last)
		}
		last = ev.Seq
	}
	if _, err := w.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after COLLECTED: %v, want io.EOF", err)
	}
}

func TestLeaseOpenRespectsContext(t *testing.T) {
	s := newServer(t, time.Minute)
	p := newProxy(t, s.addr)
	p.SetRefuse(true)
	c := dial(t, p.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Lease(ctx); err == nil {
		t.Fatal("Lease through a refusing proxy succeeded")
	}
}
