package server

import (
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// The receiver serves a lease's requests while the handler decides when
// the stream ends: a revoke that comes while pins are still being served
// leaves no pin behind, every answer before the revoke is in order, and
// the stream ends with Revoked or, if the client was behind, just ends.
func TestRevokeAmidPinsLeavesNoPin(t *testing.T) {
	for _, grace := range []time.Duration{0, time.Minute} {
		e := newEnv(t, nil)
		var handles []string
		for range 8 {
			handles = append(handles, e.put(t, "payload", ""))
		}
		lc := e.openLease(t, "pinner", grace)
		const requests = 200
		answers := make(chan error, 1)
		go func() {
			// Read every answer: each pin's request id in order, then the
			// revoke, then the end.
			want := uint64(2) // open was 1
			for {
				resp, err := lc.stream.Recv()
				switch {
				case errors.Is(err, io.EOF):
					answers <- nil
					return
				case status.Code(err) == codes.Canceled:
					answers <- nil
					return
				case err != nil:
					answers <- err
					return
				case resp.GetRevoked() != nil:
					continue
				case resp.GetRequestId() != want:
					answers <- errors.New("answers out of order")
					return
				}
				want++
			}
		}()
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for i := range requests {
				req := &registryv1.LeaseRequest{RequestId: uint64(i + 2), Kind: &registryv1.LeaseRequest_Pin{Pin: &registryv1.PinHandles{Handles: handles}}}
				if lc.stream.Send(req) != nil {
					return // the stream ended: the revoke won
				}
			}
		}()
		waitFor(t, 10*time.Second, "the first pins", func() bool { return e.reg.Stats().Pins > 0 })
		if _, err := e.admin.RevokeLease(ctxT(t), &registryv1.RevokeLeaseRequest{LeaseId: lc.id}); err != nil {
			t.Fatal(err)
		}
		if err := <-answers; err != nil {
			t.Fatalf("grace %v: %v", grace, err)
		}
		<-sent
		// The stream is over, whatever was in flight: nothing is pinned,
		// and no lease is left, attached or detached.
		waitFor(t, 10*time.Second, "the lease's pins to go", func() bool {
			attached, detached := e.leases.Counts()
			return e.reg.Stats().Pins == 0 && attached == 0 && detached == 0
		})
	}
}
