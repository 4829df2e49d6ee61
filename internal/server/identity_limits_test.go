package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/auth"
)

// leaseStreamAs opens a lease stream whose calls claim identity name.
func (e *env) leaseStreamAs(t testing.TB, name string) *leaseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(as(ctxT(t), name))
	stream, err := e.rs.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return &leaseClient{t: t, stream: stream, cancel: cancel}
}

// openLeaseAs opens a lease of identity name.
func (e *env) openLeaseAs(t testing.TB, name string) *leaseClient {
	t.Helper()
	lc := e.leaseStreamAs(t, name)
	lc.id = lc.send(openReq("")).GetOpened().GetLeaseId()
	if lc.id == "" {
		t.Fatal("open: no lease id")
	}
	return lc
}

// streamCalls open one stream of each kind the stream limit counts, as
// identity name, and return its first answer.
var streamCalls = map[string]func(t *testing.T, w *world, name string) answer{
	"Lease": func(t *testing.T, w *world, name string) answer {
		return leaseAnswer(w.e.leaseStreamAs(t, name).try(openReq("")))
	},
	"Watch": func(t *testing.T, w *world, name string) answer {
		return firstRecv(w.e.rs.Watch(as(ctxT(t), name), &registryv1.WatchRequest{Handles: []string{w.weak}}))
	},
	"WatchEvents": func(t *testing.T, w *world, name string) answer {
		return firstRecv(w.e.admin.WatchEvents(as(ctxT(t), name), &registryv1.WatchEventsRequest{}))
	},
	"Upload": func(t *testing.T, w *world, name string) answer {
		_, err := w.e.uploadMsgs(as(ctxT(t), name), chunked(&registryv1.UploadHeader{}, []byte("0123456789"), 4)...)
		return errAnswer(err)
	},
	"Download": func(t *testing.T, w *world, name string) answer {
		return firstRecv(w.e.rs.Download(as(ctxT(t), name), &registryv1.DownloadRequest{Handle: w.weak}))
	},
}

// addIdentityLimits adds the README rows of the limits per identity to
// the error table's walk (walkLimits: 40 upload bytes, 2 streams, a burst
// of 4 and no refill within a test).
func addIdentityLimits(add func(reason string, code codes.Code, rpc string, f provoker)) {
	add(ReasonIdentityUploadBytesLimit, codes.ResourceExhausted, "Upload", func(t *testing.T, w *world) answer {
		_, err := w.e.uploadMsgs(as(ctxT(t), "uploader"), chunked(&registryv1.UploadHeader{}, make([]byte, 41), 16)...)
		return errAnswer(err)
	})
	for rpc, call := range streamCalls {
		add(ReasonIdentityStreamLimit, codes.ResourceExhausted, rpc, func(t *testing.T, w *world) answer {
			w.e.openLeaseAs(t, "streamer")
			w.e.openLeaseAs(t, "streamer")
			return call(t, w, "streamer")
		})
	}
	add(ReasonRateLimited, codes.ResourceExhausted, "every RPC", everyRPCRateLimited)
}

// everyRPCRateLimited calls every method of both services, each as an
// identity that has used its burst, and returns their common answer, or
// the first that differs. The request does not even decode: the limit
// comes first.
func everyRPCRateLimited(t *testing.T, w *world) answer {
	garbage := []byte{0xff, 0xff, 0xff}
	var first *answer
	check := func(method string, got answer) {
		if first == nil {
			first = &got
		}
		if got != *first {
			t.Errorf("%s answered %v, the first %v", method, got, *first)
		}
	}
	spend := func(name string) context.Context {
		ctx := as(ctxT(t), name)
		for range walkLimits().IdentityBurst {
			if _, err := w.e.admin.GetStats(ctx, &registryv1.GetStatsRequest{}); err != nil {
				t.Fatalf("within the burst: %v", err)
			}
		}
		return ctx
	}
	for _, m := range serviceMethods() {
		check(m.name, errAnswer(m.send(spend(m.name), w.e.conn, garbage)))
	}
	return *first
}

// wantLimitStatus fails unless err is RESOURCE_EXHAUSTED reason with the
// identity's metadata and a QuotaFailure on its account.
func wantLimitStatus(t *testing.T, err error, reason, identity string, md map[string]string) *status.Status {
	t.Helper()
	wantStatus(t, err, codes.ResourceExhausted, reason)
	st := status.Convert(err)
	var quota *errdetails.QuotaFailure
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			for k, v := range md {
				if d.GetMetadata()[k] != v {
					t.Errorf("metadata %s: %q, want %q (all: %v)", k, d.GetMetadata()[k], v, d.GetMetadata())
				}
			}
			if d.GetMetadata()["identity"] != identity {
				t.Errorf("metadata identity: %q, want %q", d.GetMetadata()["identity"], identity)
			}
		case *errdetails.QuotaFailure:
			quota = d
		}
	}
	if v := quota.GetViolations(); len(v) != 1 || v[0].GetSubject() != "identity:"+identity || v[0].GetQuotaId() != reason {
		t.Errorf("QuotaFailure: %v, want subject identity:%s, quota %s", quota, identity, reason)
	}
	return st
}

// identityWorld is a world whose limits per identity are small: 40 upload
// bytes, 2 streams, and a rate that gives a burst of 4 and no more.
// change, if not nil, changes them.
func identityWorld(t *testing.T, change func(*Limits)) *world {
	l := walkLimits()
	if change != nil {
		change(l)
	}
	return newWorldWith(t, envOptions{limits: l})
}

// TestIdentityUploadBytesLimit: an identity's uploads in flight may hold
// its budget and no byte more; a refusal stores nothing, another identity
// and the anonymous one are not bound by it, and the bytes come back when
// the upload ends.
func TestIdentityUploadBytesLimit(t *testing.T) {
	w := identityWorld(t, func(l *Limits) { l.IdentityRate = 0 }) // polls below
	before := w.snapshot(t)
	upload := func(name string, n int) error {
		ctx := ctxT(t)
		if name != "" {
			ctx = as(ctx, name)
		}
		_, err := w.e.uploadMsgs(ctx, chunked(&registryv1.UploadHeader{}, make([]byte, n), 16)...)
		return err
	}
	wantLimitStatus(t, upload("alice", 41), ReasonIdentityUploadBytesLimit, "alice", map[string]string{"max": "40", "want": "41"})
	if got := w.snapshot(t); got != before {
		t.Fatalf("a refused upload changed the registry:\n%s\nwas\n%s", got, before)
	}
	// A stalled upload holds 30 of alice's 40 bytes: 11 more are refused,
	// bob's are not, and once it ends alice has her 40 again.
	ctx, cancel := context.WithCancel(as(ctxT(t), "alice"))
	stalled, err := w.e.rs.Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held := uploadsInFlight(t, w.e)
	if err := stalled.Send(headerMsg(&registryv1.UploadHeader{Size: 30})); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for uploadsInFlight(t, w.e) != held+30 { // the header reached the handler
		if time.Now().After(deadline) {
			_, err := stalled.CloseAndRecv()
			t.Fatalf("the stalled upload's 30 bytes never counted as in flight; it ended with %v", err)
		}
		time.Sleep(time.Millisecond) // polling GetStats, with a deadline
	}
	wantLimitStatus(t, upload("alice", 11), ReasonIdentityUploadBytesLimit, "alice", map[string]string{"max": "40", "want": "41"})
	if err := upload("bob", 40); err != nil {
		t.Fatalf("another identity: %v", err)
	}
	if err := upload("", 70); err != nil {
		t.Fatalf("anonymous, up to the global budget: %v", err)
	}
	cancel()
	for err := upload("alice", 40); err != nil; err = upload("alice", 40) {
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("after the stalled upload ended: %v", err)
		}
	}
	w.checkBystander(t)
}

// TestIdentityStreamLimit: an identity may have its limit of streams open
// and no more, of any kind; another identity is not bound by it, and a
// stream's end gives its place back.
func TestIdentityStreamLimit(t *testing.T) {
	for rpc, call := range streamCalls {
		t.Run(rpc, func(t *testing.T) {
			w := identityWorld(t, func(l *Limits) { l.IdentityRate = 0 }) // polls below
			held := w.e.openLeaseAs(t, "alice")
			w.e.openLeaseAs(t, "alice")
			before := w.snapshot(t)
			got := call(t, w, "alice")
			if want := (answer{codes.ResourceExhausted, ReasonIdentityStreamLimit}); got != want {
				t.Fatalf("third stream: %v, want %v", got, want)
			}
			if after := w.snapshot(t); after != before {
				t.Fatalf("a refused stream changed the registry:\n%s\nwas\n%s", after, before)
			}
			// A lease stream answers at once; a WatchEvents stream would
			// wait for an event.
			open := streamCalls["Lease"]
			if got := open(t, w, "bob"); got.code == codes.ResourceExhausted {
				t.Fatalf("another identity's stream: %v", got)
			}
			held.close()
			deadline := time.Now().Add(10 * time.Second)
			for got := open(t, w, "alice"); got.code != codes.OK; got = open(t, w, "alice") {
				if got.reason != ReasonIdentityStreamLimit {
					t.Fatalf("after a stream ended: %v", got)
				}
				if time.Now().After(deadline) {
					t.Fatal("a closed stream's place never came back")
				}
			}
			w.checkBystander(t)
		})
	}
}

// TestRateLimitedCallCarriesRetryInfo: past its burst an identity's call
// is refused with its rate, burst and when to retry; another identity and
// the anonymous one are not limited.
func TestRateLimitedCallCarriesRetryInfo(t *testing.T) {
	w := identityWorld(t, nil)
	ctx := as(ctxT(t), "alice")
	for i := range walkLimits().IdentityBurst {
		if _, err := w.e.rs.Resolve(ctx, &registryv1.ResolveRequest{Handle: w.weak}); err != nil {
			t.Fatalf("call %d, within the burst: %v", i+1, err)
		}
	}
	_, err := w.e.rs.Resolve(ctx, &registryv1.ResolveRequest{Handle: w.weak})
	st := wantLimitStatus(t, err, ReasonRateLimited, "alice", map[string]string{"rate": "0.001", "burst": "4"})
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	// One token at 0.001/s comes in 1000s.
	if d := retry.GetRetryDelay().AsDuration(); d < 900*time.Second || d > 1000*time.Second {
		t.Errorf("RetryInfo delay %v, want about 1000s", d)
	}
	if _, err := w.e.rs.Resolve(as(ctxT(t), "bob"), &registryv1.ResolveRequest{Handle: w.weak}); err != nil {
		t.Fatalf("another identity: %v", err)
	}
	for range 10 {
		if _, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: w.weak}); err != nil {
			t.Fatalf("anonymous: %v", err)
		}
	}
}

// TestRateLimitedLeaseRequestLeavesPins: a lease request past the rate is
// answered with an error on the stream, which goes on, and the lease's
// pins stay as they were.
func TestRateLimitedLeaseRequestLeavesPins(t *testing.T) {
	w := identityWorld(t, nil)
	h := w.e.put(t, "alice's", "")
	lc := w.e.openLeaseAs(t, "alice") // the stream's start: 1 of 4
	for range 3 {
		lc.pin(h)
	}
	before := w.snapshot(t)
	resp, err := lc.try(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Unpin{Unpin: &registryv1.UnpinHandles{Handles: []string{h}}}})
	if err != nil {
		t.Fatalf("the stream ended: %v", err)
	}
	e := resp.GetError()
	if codes.Code(e.GetCode()) != codes.ResourceExhausted || e.GetReason() != ReasonRateLimited ||
		e.GetMetadata()["identity"] != "alice" || e.GetMetadata()["burst"] != "4" {
		t.Fatalf("unpin past the rate: %v", resp)
	}
	// As a unary call's status would: when to retry, and whose quota.
	var retry errdetails.RetryInfo
	var quota errdetails.QuotaFailure
	if ds := e.GetDetails(); len(ds) != 2 || ds[0].UnmarshalTo(&retry) != nil || ds[1].UnmarshalTo(&quota) != nil ||
		retry.GetRetryDelay().AsDuration() <= 0 || quota.GetViolations()[0].GetSubject() != "identity:alice" {
		t.Fatalf("the error's details %v, want a RetryInfo and alice's QuotaFailure", ds)
	}
	if after := w.snapshot(t); after != before {
		t.Fatalf("a rate-limited unpin changed the registry:\n%s\nwas\n%s", after, before)
	}
	w.checkBystander(t)
}

// TestRateLimiterRefillsAndForgetsIdleIdentities: a bucket refills at its
// rate, a refusal takes no token, and identities that have gone quiet do
// not stay in memory.
func TestRateLimiterRefillsAndForgetsIdleIdentities(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newRateLimiter(10, 2)
	l.now = func() time.Time { return now }
	ctx := auth.NewContext(context.Background(), auth.Identity{Name: "alice", Role: auth.RoleClient})
	for i := range 2 {
		if err := l.Limit(ctx); err != nil {
			t.Fatalf("call %d within the burst: %v", i+1, err)
		}
	}
	for range 3 {
		err := l.Limit(ctx)
		var limited *RateLimitedError
		if !errors.As(err, &limited) || limited.Delay != 100*time.Millisecond {
			t.Fatalf("past the burst: %v, want a delay of 100ms", err)
		}
	}
	now = now.Add(100 * time.Millisecond)
	if err := l.Limit(ctx); err != nil {
		t.Fatalf("after a token's time: %v", err)
	}
	if err := l.Limit(auth.NewContext(context.Background(), auth.Anonymous)); err != nil || l.size() != 1 {
		t.Fatalf("anonymous: %v, %d buckets", err, l.size())
	}
	for i := range 10000 {
		id := auth.Identity{Name: "id" + strconv.Itoa(i), Role: auth.RoleClient}
		if err := l.Limit(auth.NewContext(context.Background(), id)); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second) // each goes quiet and refills
	}
	if n := l.size(); n > 2*minSweep {
		t.Fatalf("%d buckets after 10,000 identities went quiet one by one, want at most %d", n, 2*minSweep)
	}
}

// TestIdentityBudgetForgetsIdentitiesAtZero: the budget's map holds the
// identities that hold something, not every identity seen.
func TestIdentityBudgetForgetsIdentitiesAtZero(t *testing.T) {
	b := newIdentityBudget(LimitIdentityStreams, 2)
	for i := range 1000 {
		ctx := auth.NewContext(context.Background(), auth.Identity{Name: fmt.Sprint("id", i), Role: auth.RoleClient})
		release, err := b.reserve(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		release()
		release() // a second call gives nothing back twice
	}
	if n := b.holders(); n != 0 {
		t.Fatalf("%d identities remembered, want 0", n)
	}
}
