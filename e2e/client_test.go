package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"maps"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	regclient "github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// The tests of the Go client (package client) against the real registryd
// binary: each starts a registryd of its own, and runs in parallel with
// the others.

// clientTimeout bounds one client test's calls together.
const clientTimeout = 30 * time.Second

// dialClient returns a Go client of the registryd at addr, closed when the
// test ends.
func dialClient(t testing.TB, addr string) *regclient.Client {
	t.Helper()
	c, err := regclient.Dial(addr)
	if err != nil {
		t.Fatalf("client.Dial(%s): %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testCtx returns a context for a whole client test.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	t.Cleanup(cancel)
	return ctx
}

// openClientLease opens a lease and closes it, if it is still open, when
// the test ends.
func openClientLease(t testing.TB, ctx context.Context, c *regclient.Client, opts ...regclient.LeaseOption) *regclient.Lease {
	t.Helper()
	l, err := c.Lease(ctx, opts...)
	if err != nil {
		t.Fatalf("Lease: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		l.Close(ctx)
	})
	return l
}

// waitDone waits for the lease to end, failing the test after timeout.
func waitDone(t testing.TB, l *regclient.Lease, timeout time.Duration) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(timeout):
		t.Fatalf("lease %s did not end within %v (Err %v)", l.ID(), timeout, l.Err())
	}
}

// wantClientResolves checks that h resolves, through c, to exactly data.
func wantClientResolves(t testing.TB, ctx context.Context, c *regclient.Client, h string, data []byte) regclient.Info {
	t.Helper()
	got, info, err := c.Resolve(ctx, h)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", h, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("Resolve(%s) returned %d bytes that differ from the %d put", h, len(got), len(data))
	}
	if info.Handle != h || info.Size != int64(len(data)) {
		t.Fatalf("Resolve(%s) info = %+v, want that handle and size %d", h, info, len(data))
	}
	return info
}

// wantClientErr checks that err matches want with errors.Is, and is a
// *client.Error with the server's code and reason.
func wantClientErr(t testing.TB, err, want error, code codes.Code, reason string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want errors.Is %v", err, want)
	}
	var e *regclient.Error
	if !errors.As(err, &e) || e.Code != code || e.Reason != reason {
		t.Fatalf("err = %#v, want a *client.Error with code %v reason %s", err, code, reason)
	}
}

// pinnedBy lists the handles of the objects the server says lease id pins.
func pinnedBy(t testing.TB, c *client, id string) []string {
	t.Helper()
	resp, err := c.admin.ListObjects(rpcCtx(t), &registryv1.ListObjectsRequest{LeaseId: id, PageSize: 1000})
	if err != nil {
		t.Fatalf("ListObjects(lease_id %s): %v", id, err)
	}
	var hs []string
	for _, o := range resp.GetObjects() {
		hs = append(hs, o.GetHandle())
	}
	slices.Sort(hs)
	return hs
}

// TestClientRoundTrip: put, resolve, stat and watch through the client,
// a lease's pins and their release, and the errors a caller branches on.
func TestClientRoundTrip(t *testing.T) {
	t.Parallel()
	keyA, keyB := hex.EncodeToString(randomBytes(32)), hex.EncodeToString(randomBytes(32))
	d := startDaemonEnv(t, []string{"REGISTRYD_KEY=" + keyA})
	other := startDaemonEnv(t, []string{"REGISTRYD_KEY=" + keyB})
	admin := dial(t, d.Addr)
	ctx := testCtx(t)
	c, err := regclient.Dial(d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	l := openClientLease(t, ctx, c, regclient.LeaseName("e2e-client"))
	if l.ID() == "" || l.GraceGranted() != 0 {
		t.Fatalf("lease id %q grace %v, want an id and no grace", l.ID(), l.GraceGranted())
	}
	data := randomBytes(4096)
	labels := map[string]string{"team": "e2e"}
	info, err := c.Put(ctx, data, regclient.PinnedBy(l), regclient.ContentType("application/x-e2e"), regclient.Labels(labels))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	h := info.Handle
	if info.State != regclient.StatePinned || info.PinCount != 1 || info.Size != int64(len(data)) {
		t.Fatalf("Put info = %+v, want pinned once, size %d", info, len(data))
	}
	rinfo := wantClientResolves(t, ctx, c, h, data)
	if rinfo.ContentType != "application/x-e2e" || rinfo.Labels["team"] != "e2e" {
		t.Errorf("Resolve info = %+v, want the content type and labels put", rinfo)
	}
	st, err := c.Stat(ctx, h)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if st.Handle != h || st.State != regclient.StatePinned || st.PinCount != 1 || st.Size != int64(len(data)) ||
		st.ContentType != "application/x-e2e" || st.Created.IsZero() {
		t.Errorf("Stat = %+v, want pinned once with the put's metadata", st)
	}

	// Watch the object while a second lease pins and unpins it, then the
	// first lets go and the collector takes it.
	w, err := c.Watch(ctx, h)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	defer w.Close()
	var last uint64
	next := func(kind regclient.EventKind, state regclient.State, pins int, leaseID string) {
		t.Helper()
		ev, err := w.Recv()
		if err != nil {
			t.Fatalf("watch: %v, want a %v event", err, kind)
		}
		if ev.Kind != kind || ev.Handle != h || ev.State != state || ev.PinCount != pins || ev.Seq <= last ||
			(leaseID != "" && ev.LeaseID != leaseID) {
			t.Fatalf("watch event = %+v, want %v %v pin_count %d lease %q after seq %d", ev, kind, state, pins, leaseID, last)
		}
		last = ev.Seq
	}
	next(regclient.EventCurrent, regclient.StatePinned, 1, "")

	l2 := openClientLease(t, ctx, c, regclient.LeaseName("e2e-client-2"))
	rs, err := l2.Pin(ctx, h, "obj_nope")
	if err != nil {
		t.Fatalf("Pin: %v", err)
	}
	if len(rs) != 2 || rs[0].Outcome != regclient.OutcomePinned || rs[0].Info.PinCount != 2 ||
		rs[1].Outcome != regclient.OutcomeFailed || !errors.Is(rs[1].Err, regclient.ErrMalformedHandle) {
		t.Fatalf("Pin results = %+v, want pinned (pin_count 2), then failed as malformed", rs)
	}
	next(regclient.EventPinned, regclient.StatePinned, 2, l2.ID())
	if n, err := l2.Close(ctx); err != nil || n != 1 {
		t.Fatalf("second lease Close = %d, %v; want 1 released", n, err)
	}
	next(regclient.EventUnpinned, regclient.StatePinned, 1, l2.ID())

	collect(t, admin)
	wantClientResolves(t, ctx, c, h, data) // still pinned by l

	if n, err := l.Close(ctx); err != nil || n != 1 {
		t.Fatalf("Close = %d, %v; want 1 released", n, err)
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Done is not closed after Close")
	}
	if err := l.Err(); err != nil {
		t.Fatalf("Err after Close = %v, want nil", err)
	}
	// The last pin went: UNPINNED already tells the state after it.
	next(regclient.EventUnpinned, regclient.StateWeak, 0, l.ID())
	next(regclient.EventWeak, regclient.StateWeak, 0, "")
	// registryd's own GC may take the weak object before Collect does:
	// either way the watcher is told, and the handle answers collected.
	collect(t, admin)
	next(regclient.EventCollected, regclient.StateCollected, 0, "")
	if ev, err := w.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("watch after COLLECTED: %+v, %v; want io.EOF", ev, err)
	}
	_, _, err = c.Resolve(ctx, h)
	wantClientErr(t, err, regclient.ErrCollected, codes.NotFound, "OBJECT_COLLECTED")
	_, err = c.Stat(ctx, h)
	wantClientErr(t, err, regclient.ErrCollected, codes.NotFound, "OBJECT_COLLECTED")

	// Handles that never named an object here.
	_, _, err = c.Resolve(ctx, "obj_nope")
	wantClientErr(t, err, regclient.ErrMalformedHandle, codes.InvalidArgument, "HANDLE_MALFORMED")
	_, err = c.Stat(ctx, "not a handle")
	wantClientErr(t, err, regclient.ErrMalformedHandle, codes.InvalidArgument, "HANDLE_MALFORMED")
	oc := dialClient(t, other.Addr)
	foreign, err := oc.Put(ctx, []byte("minted under another key"))
	if err != nil {
		t.Fatalf("Put on the second registryd: %v", err)
	}
	_, _, err = c.Resolve(ctx, foreign.Handle)
	wantClientErr(t, err, regclient.ErrUnknownHandle, codes.NotFound, "HANDLE_UNKNOWN")
	_, err = c.Stat(ctx, foreign.Handle)
	wantClientErr(t, err, regclient.ErrUnknownHandle, codes.NotFound, "HANDLE_UNKNOWN")

	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := c.Put(ctx, data); err == nil {
		t.Fatal("Put after Close succeeded")
	}
}

// TestClientLeaseSurvivesConnectionDrop: the test cuts the TCP connection
// under a lease with a grace, twice, through a proxy it controls; the
// client resumes the lease each time, and registryd still holds every pin.
func TestClientLeaseSurvivesConnectionDrop(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	admin := dial(t, d.Addr)
	p := newProxy(t, d.Addr)
	c := dialClient(t, p.Addr())
	ctx := testCtx(t)
	l := openClientLease(t, ctx, c, regclient.LeaseName("e2e-survivor"), regclient.Grace(30*time.Second))
	if got := l.GraceGranted(); got != 30*time.Second {
		t.Fatalf("grace granted = %v, want 30s", got)
	}

	objects := map[string][]byte{}
	for range 4 {
		data := randomBytes(1024)
		info, err := c.Put(ctx, data, regclient.PinnedBy(l))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		objects[info.Handle] = data
	}
	// One more, put without a lease (lingering, so that it lives until
	// pinned) and pinned afterwards.
	data := randomBytes(1024)
	late, err := c.Put(ctx, data, regclient.Linger(time.Minute))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if rs, err := l.Pin(ctx, late.Handle); err != nil || rs[0].Outcome != regclient.OutcomePinned {
		t.Fatalf("Pin = %+v, %v", rs, err)
	}
	objects[late.Handle] = data
	handles := slices.Sorted(maps.Keys(objects))

	for round := 1; round <= 2; round++ {
		p.Drop()
		poll(t, waitTimeout, "the lease to resume", func() bool { return l.Resumes() >= round })
		if err := l.Err(); err != nil {
			t.Fatalf("round %d: lease ended: %v", round, err)
		}
		select {
		case <-l.Done():
			t.Fatalf("round %d: Done closed on a resumed lease", round)
		default:
		}
		if li := findLease(t, admin, l.ID()); li == nil || li.GetPinCount() != int32(len(objects)) {
			t.Fatalf("round %d: lease as listed = %v, want pin_count %d", round, li, len(objects))
		}
		collect(t, admin)
		for h, data := range objects {
			if info := wantClientResolves(t, ctx, c, h, data); info.State != regclient.StatePinned || info.PinCount != 1 {
				t.Fatalf("round %d: %s is %v pin_count %d, want pinned once", round, h, info.State, info.PinCount)
			}
		}
		if got := pinnedBy(t, admin, l.ID()); !slices.Equal(got, handles) {
			t.Fatalf("round %d: ListObjects(lease_id) = %v, want %v", round, got, handles)
		}
	}
	if got := l.Resumes(); got != 2 {
		t.Errorf("Resumes = %d after two drops, want 2", got)
	}

	n, err := l.Close(ctx)
	if err != nil || n != len(objects) {
		t.Fatalf("Close = %d, %v; want %d released", n, err, len(objects))
	}
	if l.Err() != nil {
		t.Fatalf("Err after Close = %v", l.Err())
	}
	if li := findLease(t, admin, l.ID()); li != nil {
		t.Fatalf("closed lease still listed: %v", li)
	}
	collect(t, admin)
	for h := range objects {
		if h == late.Handle {
			continue // lingers for its minute after its last pin
		}
		_, _, err := c.Resolve(ctx, h)
		wantClientErr(t, err, regclient.ErrCollected, codes.NotFound, "OBJECT_COLLECTED")
	}
	if st, err := c.Stat(ctx, late.Handle); err != nil || st.State != regclient.StateLingering || st.PinCount != 0 {
		t.Fatalf("Stat of the lingering object after Close = %+v, %v; want lingering, unpinned", st, err)
	}
}

// TestClientLeaseLostWhenGraceRunsOut: the connection drops and the proxy
// refuses new ones until the lease's grace is over; the client reports the
// lease lost, and registryd has released its pins.
func TestClientLeaseLostWhenGraceRunsOut(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	admin := dial(t, d.Addr)
	direct := dialClient(t, d.Addr)
	p := newProxy(t, d.Addr)
	c := dialClient(t, p.Addr())
	ctx := testCtx(t)
	ended := make(chan error, 1)
	l := openClientLease(t, ctx, c, regclient.LeaseName("e2e-lost"), regclient.Grace(500*time.Millisecond),
		regclient.OnEnd(func(err error) { ended <- err }))
	if got := l.GraceGranted(); got != 500*time.Millisecond {
		t.Fatalf("grace granted = %v, want 500ms", got)
	}
	var handles []string
	for range 3 {
		info, err := c.Put(ctx, randomBytes(1024), regclient.PinnedBy(l))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		handles = append(handles, info.Handle)
	}

	p.SetRefuse(true)
	p.Drop()
	waitDone(t, l, waitTimeout)
	err := l.Err()
	var le *regclient.LeaseError
	if !errors.Is(err, regclient.ErrLeaseLost) || !errors.As(err, &le) {
		t.Fatalf("Err = %v, want a *LeaseError matching ErrLeaseLost", err)
	}
	if errors.Is(err, regclient.ErrLeaseRevoked) || le.LeaseID != l.ID() || le.GraceEnded.IsZero() {
		t.Errorf("LeaseError = %+v, want lost (not revoked), lease %s, with the time its grace ended", le, l.ID())
	}
	select {
	case got := <-ended:
		if !errors.Is(got, regclient.ErrLeaseLost) {
			t.Errorf("OnEnd got %v, want ErrLeaseLost", got)
		}
	case <-time.After(waitTimeout):
		t.Error("OnEnd not called for a lost lease")
	}
	if _, err := l.Pin(ctx, handles[0]); !errors.Is(err, regclient.ErrLeaseLost) {
		t.Errorf("Pin on a lost lease = %v, want ErrLeaseLost", err)
	}
	if _, err := l.Close(ctx); !errors.Is(err, regclient.ErrLeaseLost) {
		t.Errorf("Close of a lost lease = %v, want ErrLeaseLost", err)
	}

	// registryd let go too, once its own grace ran out. Its GC may take
	// the weak objects at any time from then: test the end state.
	waitLease(t, admin, l.ID(), waitTimeout, "registryd to end the lease", func(li *registryv1.LeaseInfo) bool { return li == nil })
	collect(t, admin)
	for _, h := range handles {
		_, _, err := direct.Resolve(ctx, h)
		wantClientErr(t, err, regclient.ErrCollected, codes.NotFound, "OBJECT_COLLECTED")
	}
}

// TestClientRevokeReachesTheClient: an operator's RevokeLease reaches the
// holder as ErrLeaseRevoked with the operator's reason.
func TestClientRevokeReachesTheClient(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	admin := dial(t, d.Addr)
	c := dialClient(t, d.Addr)
	ctx := testCtx(t)
	ended := make(chan error, 1)
	l := openClientLease(t, ctx, c, regclient.LeaseName("e2e-revoked"), regclient.Grace(time.Minute),
		regclient.OnEnd(func(err error) { ended <- err }))
	var handles []string
	for range 2 {
		info, err := c.Put(ctx, randomBytes(1024), regclient.PinnedBy(l))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		handles = append(handles, info.Handle)
	}

	const reason = "e2e: maintenance window"
	resp, err := admin.admin.RevokeLease(rpcCtx(t), &registryv1.RevokeLeaseRequest{LeaseId: l.ID(), Reason: reason})
	if err != nil {
		t.Fatalf("RevokeLease: %v", err)
	}
	if resp.GetReleased() != int32(len(handles)) {
		t.Errorf("RevokeLease released %d, want %d", resp.GetReleased(), len(handles))
	}
	waitDone(t, l, waitTimeout)
	err = l.Err()
	var le *regclient.LeaseError
	if !errors.Is(err, regclient.ErrLeaseRevoked) || !errors.As(err, &le) {
		t.Fatalf("Err = %v, want a *LeaseError matching ErrLeaseRevoked", err)
	}
	if le.LeaseID != l.ID() || le.Cause != regclient.CauseAdmin || le.Reason != reason || le.Released != len(handles) {
		t.Fatalf("LeaseError = %+v, want lease %s, cause admin, reason %q, released %d", le, l.ID(), reason, len(handles))
	}
	select {
	case got := <-ended:
		if !errors.Is(got, regclient.ErrLeaseRevoked) {
			t.Errorf("OnEnd got %v, want ErrLeaseRevoked", got)
		}
	case <-time.After(waitTimeout):
		t.Error("OnEnd not called for a revoked lease")
	}
	if _, err := l.Pin(ctx, handles[0]); !errors.Is(err, regclient.ErrLeaseRevoked) {
		t.Errorf("Pin on a revoked lease = %v, want ErrLeaseRevoked", err)
	}
	if _, err := l.Close(ctx); !errors.Is(err, regclient.ErrLeaseRevoked) {
		t.Errorf("Close of a revoked lease = %v, want ErrLeaseRevoked", err)
	}
	// The grace does not apply to a revoke: the pins went at once.
	if li := findLease(t, admin, l.ID()); li != nil {
		t.Errorf("revoked lease still listed: %v", li)
	}
	collect(t, admin)
	for _, h := range handles {
		_, _, err := c.Resolve(ctx, h)
		wantClientErr(t, err, regclient.ErrCollected, codes.NotFound, "OBJECT_COLLECTED")
	}
}

// TestClientLargeObject: an object larger than registryd's default
// --max-message-bytes (17 MiB) goes up by Upload and comes back by
// Download, through Put and Resolve, byte for byte.
func TestClientLargeObject(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	admin := dial(t, d.Addr)
	c := dialClient(t, d.Addr)
	ctx := testCtx(t)
	l := openClientLease(t, ctx, c, regclient.LeaseName("e2e-large"))
	data := randomBytes(20 << 20)
	info, err := c.Put(ctx, data, regclient.PinnedBy(l), regclient.ContentType("application/octet-stream"))
	if err != nil {
		t.Fatalf("Put of %d bytes: %v", len(data), err)
	}
	if info.Size != int64(len(data)) || info.State != regclient.StatePinned {
		t.Fatalf("Put info = %+v, want size %d, pinned", info, len(data))
	}
	// It is too large for one Resolve message, so the client must have
	// fallen back to Download.
	_, err = admin.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: info.Handle})
	wantStatus(t, err, codes.ResourceExhausted, "MESSAGE_TOO_LARGE")
	rinfo := wantClientResolves(t, ctx, c, info.Handle, data)
	if rinfo.ContentType != "application/octet-stream" || rinfo.State != regclient.StatePinned {
		t.Errorf("Resolve info = %+v", rinfo)
	}
	var buf bytes.Buffer
	if dinfo, err := c.Download(ctx, info.Handle, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) || dinfo.Size != int64(len(data)) {
		t.Fatalf("Download = %d bytes, %+v, %v; want the %d bytes put", buf.Len(), dinfo, err, len(data))
	}
}

// TestClientLingerSurvivesCollect: an object put with Linger and no lease
// is held strongly for its linger: a collection does not take it.
func TestClientLingerSurvivesCollect(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	admin := dial(t, d.Addr)
	c := dialClient(t, d.Addr)
	ctx := testCtx(t)
	data := randomBytes(4096)
	before := time.Now()
	info, err := c.Put(ctx, data, regclient.Linger(time.Minute))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if info.State != regclient.StateLingering || info.Linger != time.Minute || info.PinCount != 0 {
		t.Fatalf("Put info = %+v, want lingering for 1m, unpinned", info)
	}
	if until := info.LingerUntil; until.Before(before.Add(50*time.Second)) || until.After(time.Now().Add(time.Minute+time.Second)) {
		t.Errorf("LingerUntil = %v, want about a minute after %v", until, before)
	}
	collect(t, admin)
	rinfo := wantClientResolves(t, ctx, c, info.Handle, data)
	if rinfo.State != regclient.StateLingering {
		t.Errorf("after Collect the object is %v, want lingering", rinfo.State)
	}
}

// TestClientLeaseEndsOnShutdown: a lease open when registryd gets SIGTERM
// ends as revoked, cause shutdown, not lost and not resumed.
func TestClientLeaseEndsOnShutdown(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	c := dialClient(t, d.Addr)
	ctx := testCtx(t)
	l := openClientLease(t, ctx, c, regclient.LeaseName("e2e-shutdown"), regclient.Grace(30*time.Second))
	if _, err := c.Put(ctx, randomBytes(1024), regclient.PinnedBy(l)); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if code := d.stop(t); code != 0 {
		t.Errorf("registryd exited %d on SIGTERM, want 0", code)
	}
	waitDone(t, l, waitTimeout)
	err := l.Err()
	var le *regclient.LeaseError
	if !errors.Is(err, regclient.ErrLeaseRevoked) || !errors.As(err, &le) {
		t.Fatalf("Err = %v, want a *LeaseError matching ErrLeaseRevoked", err)
	}
	if le.Cause != regclient.CauseShutdown || le.Released != 1 || le.LeaseID != l.ID() {
		t.Fatalf("LeaseError = %+v, want cause shutdown, released 1, lease %s", le, l.ID())
	}
	if l.Resumes() != 0 {
		t.Errorf("Resumes = %d, want 0: a shutdown is no connection drop", l.Resumes())
	}
}

// TestClientCloseAnsweredDuringDrop: registryd closes the lease but its
// answer is lost with the connection; the client resumes, hears the lease
// is gone, and, since it was closing it, ends the lease cleanly: Close
// returns without error and the lease does not report itself lost.
func TestClientCloseAnsweredDuringDrop(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	admin := dial(t, d.Addr)
	p := newProxy(t, d.Addr)
	c := dialClient(t, p.Addr())
	ctx := testCtx(t)
	l := openClientLease(t, ctx, c, regclient.LeaseName("e2e-close-drop"), regclient.Grace(30*time.Second))
	info, err := c.Put(ctx, randomBytes(1024), regclient.PinnedBy(l))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}

	p.SetMuteDown(true) // the close goes through; its answer does not
	type closed struct {
		n   int
		err error
	}
	got := make(chan closed, 1)
	go func() {
		n, err := l.Close(ctx)
		got <- closed{n, err}
	}()
	waitLease(t, admin, l.ID(), waitTimeout, "registryd to close the lease", func(li *registryv1.LeaseInfo) bool { return li == nil })
	p.Drop()
	p.SetMuteDown(false)

	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("Close = %d, %v; want no error", r.n, r.err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Close did not return after the drop")
	}
	waitDone(t, l, waitTimeout)
	if err := l.Err(); err != nil {
		t.Fatalf("Err = %v, want nil: the lease was closed", err)
	}
	collect(t, admin)
	_, err = admin.reg.Resolve(rpcCtx(t), &registryv1.ResolveRequest{Handle: info.Handle})
	wantStatus(t, err, codes.NotFound, "OBJECT_COLLECTED")
}

// TestClientLeaseAfterCrashAndRestart: registryd dies without a word
// (SIGKILL) and a new run with the same key takes its place; the lease's
// resume learns that its pins went with the old run: ErrRestarted, not a
// lease lost after its whole grace.
func TestClientLeaseAfterCrashAndRestart(t *testing.T) {
	t.Parallel()
	key := writeKeyFile(t)
	first := startDaemon(t, "--key-file", key)
	p := newProxy(t, first.Addr)
	c := dialClient(t, p.Addr())
	ctx := testCtx(t)
	l := openClientLease(t, ctx, c, regclient.LeaseName("e2e-restart"), regclient.Grace(time.Minute))
	info, err := c.Put(ctx, randomBytes(1024), regclient.PinnedBy(l))
	if err != nil {
		t.Fatalf("Put: %v", err)
	}

	// The new run is up before the old one dies, so that the client's
	// first reconnect reaches it (and waits out no reconnect backoff).
	second := startDaemon(t, "--key-file", key)
	if e1, e2 := epochOf(t, dial(t, first.Addr)), epochOf(t, dial(t, second.Addr)); e1 == e2 {
		t.Fatalf("both runs have epoch %d", e1)
	}
	p.SetUpstream(second.Addr)
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	first.waitExit(t, waitTimeout)

	waitDone(t, l, waitTimeout) // well within the minute of grace
	err = l.Err()
	var le *regclient.LeaseError
	if !errors.Is(err, regclient.ErrRestarted) || !errors.As(err, &le) || le.LeaseID != l.ID() {
		t.Fatalf("Err = %v, want a *LeaseError for lease %s matching ErrRestarted", err, l.ID())
	}
	_, _, err = c.Resolve(ctx, info.Handle)
	wantClientErr(t, err, regclient.ErrRestarted, codes.NotFound, "REGISTRY_RESTARTED")
}
