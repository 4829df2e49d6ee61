package client_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// TestLargeBatchesAreSplit pins and unpins more handles than the server
// takes in one request: the client sends several, and the results come
// back one per handle, in order.
func TestLargeBatchesAreSplit(t *testing.T) {
	s := newServer(t, time.Minute)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	keeper, err := c.Lease(ctx, client.LeaseName("keeper")) // so that the GC takes none of them
	if err != nil {
		t.Fatal(err)
	}
	defer keeper.Close(ctx)
	const n = 2345
	hs := make([]string, n)
	for i := range hs {
		info, err := c.Put(ctx, []byte{byte(i)}, client.PinnedBy(keeper))
		if err != nil {
			t.Fatal(err)
		}
		hs[i] = info.Handle
	}
	l, err := c.Lease(ctx, client.LeaseName("big batches"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	for _, step := range []struct {
		name string
		do   func() ([]client.PinResult, error)
		want client.PinOutcome
	}{
		{"pin", func() ([]client.PinResult, error) { return l.Pin(ctx, hs...) }, client.OutcomePinned},
		{"pin again", func() ([]client.PinResult, error) { return l.Pin(ctx, hs...) }, client.OutcomeAlreadyPinned},
		{"unpin", func() ([]client.PinResult, error) { return l.Unpin(ctx, hs...) }, client.OutcomeUnpinned},
	} {
		rs, err := step.do()
		if err != nil || len(rs) != n {
			t.Fatalf("%s of %d handles: %d results, %v", step.name, n, len(rs), err)
		}
		for i, r := range rs {
			if r.Handle != hs[i] || r.Outcome != step.want {
				t.Fatalf("%s: result %d is %s %v, want %s %v", step.name, i, r.Handle, r.Outcome, hs[i], step.want)
			}
		}
	}
}

// refusingServer is a RegistryService whose Lease streams open and resume
// any lease and refuse every pin, in the way mode says. It counts the pins
// it receives, and the opens.
type refusingServer struct {
	registryv1.UnimplementedRegistryServiceServer
	mode  string // "answer": a RequestError; "end": end the stream with the error; "drop": end every stream once opened
	pins  atomic.Int64
	opens atomic.Int64
}

func tooManyHandles() *status.Status {
	st, _ := status.New(codes.InvalidArgument, "send at most 1000 handles per request").WithDetails(
		&errdetails.ErrorInfo{Domain: "registry", Reason: "TOO_MANY_HANDLES", Metadata: map[string]string{"max": "1000"}})
	return st
}

func (f *refusingServer) Lease(stream grpc.BidiStreamingServer[registryv1.LeaseRequest, registryv1.LeaseResponse]) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		switch k := req.GetKind().(type) {
		case *registryv1.LeaseRequest_Open:
			f.opens.Add(1)
			if err := stream.Send(&registryv1.LeaseResponse{RequestId: req.GetRequestId(), Kind: &registryv1.LeaseResponse_Opened{Opened: &registryv1.LeaseOpened{
				LeaseId: "lse_fake", Grace: durationpb.New(time.Minute), Resumed: k.Open.GetResumeLeaseId() != ""}}}); err != nil {
				return err
			}
			if f.mode == "drop" {
				return status.Error(codes.Unavailable, "dropped after open")
			}
		case *registryv1.LeaseRequest_Close:
			return stream.Send(&registryv1.LeaseResponse{RequestId: req.GetRequestId(), Kind: &registryv1.LeaseResponse_Closed{Closed: &registryv1.LeaseClosed{}}})
		case *registryv1.LeaseRequest_Pin:
			f.pins.Add(1)
			st := tooManyHandles()
			if f.mode == "end" {
				return st.Err() // as registryd did before it answered RequestErrors
			}
			if err := stream.Send(&registryv1.LeaseResponse{RequestId: req.GetRequestId(), Kind: &registryv1.LeaseResponse_Error{Error: &registryv1.RequestError{
				Code: int32(st.Code()), Reason: "TOO_MANY_HANDLES", Message: st.Message(), Metadata: map[string]string{"max": "1000"}}}}); err != nil {
				return err
			}
			return status.Error(codes.Unavailable, "cut after the answer") // so that the lease resumes
		}
	}
}

func serveFake(t *testing.T, f *refusingServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	registryv1.RegisterRegistryServiceServer(gs, f)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// TestRefusedRequestIsNeverSentAgain: a pin the server refuses — answered
// with a RequestError, or by ending the stream with the error — fails with
// the client's *Error (code, reason, metadata) and is not sent again after
// the lease resumes.
func TestRefusedRequestIsNeverSentAgain(t *testing.T) {
	for _, mode := range []string{"answer", "end"} {
		t.Run(mode, func(t *testing.T) {
			f := &refusingServer{mode: mode}
			c := dial(t, serveFake(t, f))
			ctx := ctxT(t)
			l, err := c.Lease(ctx, client.Grace(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close(ctx)
			rs, err := l.Pin(ctx, "obj_whatever")
			var e *client.Error
			if !errors.As(err, &e) || e.Code != codes.InvalidArgument || e.Reason != "TOO_MANY_HANDLES" || !errors.Is(err, client.ErrInvalid) {
				t.Fatalf("Pin = %v, %v; want an *Error INVALID_ARGUMENT TOO_MANY_HANDLES matching ErrInvalid", rs, err)
			}
			if mode == "answer" && e.Metadata["max"] != "1000" {
				t.Errorf("metadata %v, want max=1000", e.Metadata)
			}
			waitFor(t, "the lease to resume", func() bool { return l.Resumes() >= 1 })
			// A later request is served on the resumed stream; by then
			// anything the resume sent again has arrived before it.
			if _, err := l.Pin(ctx, "obj_later"); err == nil {
				t.Fatal("the fake refuses every pin")
			}
			if n := f.pins.Load(); n != 2 {
				t.Fatalf("the server received %d pins, want 2: the refused one was sent again", n)
			}
			if err := l.Err(); err != nil {
				t.Fatalf("lease ended: %v", err)
			}
		})
	}
}

// TestResumeBackoffGrowsAcrossResumes: a lease whose stream the server ends
// right after each resume does not resume again at once each time: the
// delay grows across resumes (0, 50ms, 80ms, 128ms, 205ms, 328ms ± 20% by
// default, ~0.8s for the first six).
func TestResumeBackoffGrowsAcrossResumes(t *testing.T) {
	f := &refusingServer{mode: "drop"}
	c := dial(t, serveFake(t, f))
	ctx := ctxT(t)
	start := time.Now()
	l, err := c.Lease(ctx, client.Grace(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { // the fake never answers a close: give up at once
		cctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		defer cancel()
		l.Close(cctx)
	}()
	waitFor(t, "six resumes", func() bool { return l.Resumes() >= 6 })
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Fatalf("six resumes in %v (%d opens): the backoff started again from zero at each resume", took, f.opens.Load())
	}
}
