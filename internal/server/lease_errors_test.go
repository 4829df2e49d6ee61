package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/lease"
)

var reasonFieldInvalid = registryv1.ErrorReason_FIELD_INVALID.String()

// wantRequestError fails unless resp answers a request with a RequestError
// of code and reason.
func wantRequestError(t testing.TB, resp *registryv1.LeaseResponse, code codes.Code, reason string) *registryv1.RequestError {
	t.Helper()
	re := resp.GetError()
	if re == nil {
		t.Fatalf("got %v, want a RequestError %v %s", resp, code, reason)
	}
	if codes.Code(re.GetCode()) != code || re.GetReason() != reason || re.GetMessage() == "" {
		t.Fatalf("got RequestError %v %q (%q), want %v %s", codes.Code(re.GetCode()), re.GetReason(), re.GetMessage(), code, reason)
	}
	return re
}

func unpinReq(handoff *durationpb.Duration, hs ...string) *registryv1.LeaseRequest {
	return &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Unpin{Unpin: &registryv1.UnpinHandles{Handles: hs, Handoff: handoff}}}
}

func closeReq(handoff *durationpb.Duration) *registryv1.LeaseRequest {
	return &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Close{Close: &registryv1.CloseLease{Handoff: handoff}}}
}

// TestWrongRequestKeepsTheLease sends each request that fails as a whole
// on a lease that holds a pin: each is answered with a RequestError of
// its exact code and reason, the stream goes on serving (the bystander's
// next pin works), and the lease, its pins, the stats and the objects are
// as they were.
func TestWrongRequestKeepsTheLease(t *testing.T) {
	many := func(h string) []string {
		hs := make([]string, MaxHandlesPerRequest+1)
		for i := range hs {
			hs[i] = h
		}
		return hs
	}
	cases := []struct {
		name   string
		req    func(w *world) *registryv1.LeaseRequest
		code   codes.Code
		reason string
		field  string
	}{
		{"pin of too many handles", func(w *world) *registryv1.LeaseRequest { return pinReq(many(w.weak)...) },
			codes.InvalidArgument, ReasonTooManyHandles, ""},
		{"unpin of too many handles", func(w *world) *registryv1.LeaseRequest { return unpinReq(nil, many(w.pinned)...) },
			codes.InvalidArgument, ReasonTooManyHandles, ""},
		{"second open", func(w *world) *registryv1.LeaseRequest { return openReq("") },
			codes.FailedPrecondition, ReasonLeaseAlreadyOpen, ""},
		{"resume on an open stream", func(w *world) *registryv1.LeaseRequest { return openReq(w.bystander.id) },
			codes.FailedPrecondition, ReasonLeaseAlreadyOpen, ""},
		{"no kind", func(w *world) *registryv1.LeaseRequest { return &registryv1.LeaseRequest{} },
			codes.InvalidArgument, ReasonRequestEmpty, ""},
		{"unpin with a negative handoff", func(w *world) *registryv1.LeaseRequest {
			return unpinReq(durationpb.New(-time.Second), w.pinned)
		}, codes.InvalidArgument, reasonFieldInvalid, "handoff"},
		{"unpin with an out-of-range handoff", func(w *world) *registryv1.LeaseRequest {
			return unpinReq(&durationpb.Duration{Seconds: 1 << 62}, w.pinned)
		}, codes.InvalidArgument, reasonFieldInvalid, "handoff"},
		{"unpin with a mixed-sign handoff", func(w *world) *registryv1.LeaseRequest {
			return unpinReq(&durationpb.Duration{Seconds: 1, Nanos: -1}, w.pinned)
		}, codes.InvalidArgument, reasonFieldInvalid, "handoff"},
		{"close with a negative handoff", func(w *world) *registryv1.LeaseRequest {
			return closeReq(durationpb.New(-time.Second))
		}, codes.InvalidArgument, reasonFieldInvalid, "handoff"},
		{"close with an out-of-range handoff", func(w *world) *registryv1.LeaseRequest {
			return closeReq(&durationpb.Duration{Seconds: -1 << 62})
		}, codes.InvalidArgument, reasonFieldInvalid, "handoff"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			before := w.snapshot(t)
			re := wantRequestError(t, w.bystander.send(c.req(w)), c.code, c.reason)
			if c.field != "" && re.GetMetadata()["field"] != c.field {
				t.Errorf("metadata %v, want field=%s", re.GetMetadata(), c.field)
			}
			if after := w.snapshot(t); after != before {
				t.Errorf("registry changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			w.checkBystander(t) // the same stream: a later pin works
			if in, err := w.e.leases.Lookup(w.bystander.id); err != nil || in.Pins != 1 || !in.Attached {
				t.Errorf("bystander's lease after the request: %+v, %v", in, err)
			}
		})
	}
}

// TestBadOpenIsRefused sends an open with a field out of its range: the
// stream ends with INVALID_ARGUMENT FIELD_INVALID naming the field, and no
// lease is opened.
func TestBadOpenIsRefused(t *testing.T) {
	cases := []struct {
		name  string
		open  *registryv1.OpenLease
		field string
	}{
		{"negative grace", &registryv1.OpenLease{Grace: durationpb.New(-time.Second)}, "grace"},
		{"out-of-range grace", &registryv1.OpenLease{Grace: &durationpb.Duration{Seconds: 1 << 62}}, "grace"},
		{"mixed-sign grace", &registryv1.OpenLease{Grace: &durationpb.Duration{Seconds: -1, Nanos: 5}}, "grace"},
		{"client name over 128 bytes", &registryv1.OpenLease{ClientName: strings.Repeat("n", lease.MaxClientNameBytes+1)}, "client_name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			before := w.snapshot(t)
			_, err := w.e.leaseStream(t).try(&registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Open{Open: c.open}})
			wantStatus(t, err, codes.InvalidArgument, reasonFieldInvalid)
			if f := metadataOf(err)["field"]; f != c.field {
				t.Errorf("field %q, want %q", f, c.field)
			}
			if after := w.snapshot(t); after != before {
				t.Errorf("registry changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
	t.Run("client name of 128 bytes", func(t *testing.T) {
		e := newEnv(t, nil)
		e.openLease(t, strings.Repeat("n", lease.MaxClientNameBytes), 0).close()
	})
}

// fakeLeaseStream is a lease stream with no client: Recv waits for what
// the test gives it, or for ctx.
type fakeLeaseStream struct {
	grpc.ServerStream
	ctx  context.Context
	in   chan *registryv1.LeaseRequest
	sent chan *registryv1.LeaseResponse
}

func (f *fakeLeaseStream) Context() context.Context { return f.ctx }
func (f *fakeLeaseStream) Recv() (*registryv1.LeaseRequest, error) {
	select {
	case m := <-f.in:
		return m, nil
	case <-f.ctx.Done():
		return nil, status.FromContextError(f.ctx.Err()).Err()
	}
}
func (f *fakeLeaseStream) Send(m *registryv1.LeaseResponse) error {
	select {
	case f.sent <- m:
		return nil
	case <-f.ctx.Done():
		return f.ctx.Err()
	}
}
func (f *fakeLeaseStream) SetTrailer(metadata.MD) {}

// TestCancelledLeaseEndsCancelled cancels a lease stream before and after
// open: the handler returns status CANCELLED, not a bare context error
// (which gRPC would report as Unknown).
func TestCancelledLeaseEndsCancelled(t *testing.T) {
	for _, opened := range []bool{false, true} {
		name := map[bool]string{false: "before open", true: "after open"}[opened]
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, nil)
			s := &registryService{reg: e.reg, leases: e.leases}
			ctx, cancel := context.WithCancel(context.Background())
			f := &fakeLeaseStream{ctx: ctx, in: make(chan *registryv1.LeaseRequest, 1), sent: make(chan *registryv1.LeaseResponse, 1)}
			ended := make(chan error, 1)
			go func() { ended <- s.Lease(f) }()
			if opened {
				f.in <- openReq("")
				if m := <-f.sent; m.GetOpened() == nil {
					t.Fatalf("got %v, want opened", m)
				}
			}
			cancel()
			err := <-ended
			if status.Code(err) != codes.Canceled {
				t.Fatalf("handler returned %v (code %v), want CANCELLED", err, status.Code(err))
			}
			if errors.Is(err, context.Canceled) && status.Code(err) != codes.Canceled {
				t.Fatal("a bare context error")
			}
		})
	}
}
