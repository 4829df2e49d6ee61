package server

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
)

// handleErrAnswer is one handle's answer in a batch.
func handleErrAnswer(e *registryv1.HandleError) answer {
	return answer{codes.Code(e.GetCode()), e.GetReason()}
}

// batchResolve calls BatchResolve and fails the test unless the call as a
// whole succeeded with one result per handle.
func (e *env) batchResolve(t *testing.T, req *registryv1.BatchResolveRequest) []*registryv1.BatchResolveResult {
	t.Helper()
	resp, err := e.rs.BatchResolve(ctxT(t), req)
	if err != nil {
		t.Fatalf("BatchResolve: %v", err)
	}
	if len(resp.GetResults()) != len(req.GetHandles()) {
		t.Fatalf("BatchResolve: %d results for %d handles", len(resp.GetResults()), len(req.GetHandles()))
	}
	return resp.GetResults()
}

// addBatchProvokers provokes the README rows of BatchResolve and
// BatchStat: "BatchResolve" for the call as a whole, "BatchResolve
// result" for one handle's answer within it.
func addBatchProvokers(add func(reason string, code codes.Code, rpc string, f provoker)) {
	handles := badObjectHandles()
	for reason, h := range handles {
		code := catalog[registryv1.ErrorReason(registryv1.ErrorReason_value[reason])].code
		add(reason, code, "BatchResolve result", func(t *testing.T, w *world) answer {
			// The first handle hits: the batch answers each on its own.
			rs := w.e.batchResolve(t, &registryv1.BatchResolveRequest{Handles: []string{w.pinned, h(w)}})
			if rs[0].GetError() != nil {
				t.Errorf("the hit beside it: %v", rs[0].GetError())
			}
			return handleErrAnswer(rs[1].GetError())
		})
		add(reason, code, "BatchStat result", func(t *testing.T, w *world) answer {
			resp, err := w.e.rs.BatchStat(ctxT(t), &registryv1.BatchStatRequest{Handles: []string{h(w)}})
			if err != nil {
				t.Fatal(err)
			}
			return handleErrAnswer(resp.GetResults()[0].GetError())
		})
	}
	leaseIDs := map[string]func(w *world) string{
		ReasonLeaseMalformed:    func(*world) string { return "lse_x" },
		ReasonHandleForeignNode: func(w *world) string { return w.otherNode(handle.Lease) },
		ReasonNodeUnavailable:   func(w *world) string { return w.goneNode(handle.Lease) },
		ReasonRestarted:         func(w *world) string { return w.otherRun(handle.Lease) },
		ReasonLeaseNotFound:     func(w *world) string { _, id := w.e.codec.New(handle.Lease); return id },
	}
	for reason, id := range leaseIDs {
		code := catalog[registryv1.ErrorReason(registryv1.ErrorReason_value[reason])].code
		if code == codes.NotFound {
			code = codes.FailedPrecondition // the call needs a live lease
		}
		add(reason, code, "BatchResolve", func(t *testing.T, w *world) answer {
			_, err := w.e.rs.BatchResolve(ctxT(t), &registryv1.BatchResolveRequest{Handles: []string{w.weak}, LeaseId: id(w)})
			return errAnswer(err)
		})
	}
	add(ReasonLeaseNotOwned, codes.PermissionDenied, "BatchResolve", func(t *testing.T, w *world) answer {
		alices := w.e.openLeaseCtx(t, asIdentity(t, "alice"), "alice's", 0)
		_, err := w.e.rs.BatchResolve(asIdentity(t, "bob"), &registryv1.BatchResolveRequest{Handles: []string{w.weak}, LeaseId: alices.id})
		return errAnswer(err)
	})
	many := func(w *world) []string {
		hs := make([]string, MaxHandlesPerRequest+1)
		for i := range hs {
			hs[i] = w.weak
		}
		return hs
	}
	add(ReasonTooManyHandles, codes.InvalidArgument, "BatchResolve", func(t *testing.T, w *world) answer {
		_, err := w.e.rs.BatchResolve(ctxT(t), &registryv1.BatchResolveRequest{Handles: many(w)})
		return errAnswer(err)
	})
	add(ReasonTooManyHandles, codes.InvalidArgument, "BatchStat", func(t *testing.T, w *world) answer {
		_, err := w.e.rs.BatchStat(ctxT(t), &registryv1.BatchStatRequest{Handles: many(w)})
		return errAnswer(err)
	})
	add(ReasonRequestEmpty, codes.InvalidArgument, "BatchResolve", func(t *testing.T, w *world) answer {
		_, err := w.e.rs.BatchResolve(ctxT(t), &registryv1.BatchResolveRequest{})
		return errAnswer(err)
	})
	add(ReasonRequestEmpty, codes.InvalidArgument, "BatchStat", func(t *testing.T, w *world) answer {
		_, err := w.e.rs.BatchStat(ctxT(t), &registryv1.BatchStatRequest{})
		return errAnswer(err)
	})
	// walkLimits lets an answer carry an object of 100 bytes, in a message
	// of 64 KiB and 100 bytes: four objects of 20 KiB of labels overflow
	// it.
	labelled := func(t *testing.T, w *world) string {
		labels := map[string]string{}
		for i := range 64 {
			labels[fmt.Sprintf("%063d", i)] = strings.Repeat("v", 255)
		}
		resp, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("labelled"), Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetHandle()
	}
	add(ReasonMessageTooLarge, codes.ResourceExhausted, "BatchResolve result", func(t *testing.T, w *world) answer {
		h := w.e.put(t, string(make([]byte, 200)), "")
		return handleErrAnswer(w.e.batchResolve(t, &registryv1.BatchResolveRequest{Handles: []string{h}})[0].GetError())
	})
	add(ReasonResponseTooLarge, codes.ResourceExhausted, "BatchResolve result", func(t *testing.T, w *world) answer {
		h := labelled(t, w)
		rs := w.e.batchResolve(t, &registryv1.BatchResolveRequest{Handles: []string{h, h, h, h}, WithInfo: true})
		if rs[0].GetError() != nil {
			t.Errorf("the first fits: %v", rs[0].GetError())
		}
		return handleErrAnswer(rs[3].GetError())
	})
	add(ReasonResponseTooLarge, codes.ResourceExhausted, "BatchStat result", func(t *testing.T, w *world) answer {
		h := labelled(t, w)
		resp, err := w.e.rs.BatchStat(ctxT(t), &registryv1.BatchStatRequest{Handles: []string{h, h, h, h}})
		if err != nil {
			t.Fatal(err)
		}
		return handleErrAnswer(resp.GetResults()[3].GetError())
	})
	// Limits reached by pinning with the batch's lease, as Resolve's.
	add(ReasonPinnedBytesLimit, codes.ResourceExhausted, "BatchResolve result", func(t *testing.T, w *world) answer {
		lc := w.e.openLease(t, "full", 0)
		h := w.e.put(t, string(make([]byte, 50)), "") // 21 + 50 > 64
		return handleErrAnswer(w.e.batchResolve(t, &registryv1.BatchResolveRequest{Handles: []string{h}, LeaseId: lc.id})[0].GetError())
	})
	add(ReasonLeasePinLimit, codes.ResourceExhausted, "BatchResolve result", func(t *testing.T, w *world) answer {
		lc := w.e.openLease(t, "full", 0)
		hs := make([]string, walkLimits().MaxPinsPerLease+1)
		for i := range hs {
			hs[i] = w.e.put(t, string(rune('a'+i)), "")
		}
		rs := w.e.batchResolve(t, &registryv1.BatchResolveRequest{Handles: hs, LeaseId: lc.id})
		return handleErrAnswer(rs[len(rs)-1].GetError())
	})
	add(ReasonIdentityPinnedBytesLimit, codes.ResourceExhausted, "BatchResolve result", func(t *testing.T, w *world) answer {
		lc := w.e.openLeaseCtx(t, asIdentity(t, "alice"), "alice's", 0)
		h := w.e.put(t, string(make([]byte, 40)), "") // over alice's 32
		resp, err := w.e.rs.BatchResolve(asIdentity(t, "alice"), &registryv1.BatchResolveRequest{Handles: []string{h}, LeaseId: lc.id})
		if err != nil {
			t.Fatal(err)
		}
		return handleErrAnswer(resp.GetResults()[0].GetError())
	})
}
