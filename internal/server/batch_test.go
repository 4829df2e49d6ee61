package server

import (
	"bytes"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
)

// asHandleError is the status err as a batch carries it for one handle:
// the same code, reason, message, metadata and other details.
func asHandleError(err error) *registryv1.HandleError {
	st := status.Convert(err)
	he := &registryv1.HandleError{Code: int32(st.Code()), Message: st.Message()}
	for _, d := range st.Proto().GetDetails() {
		var info errdetails.ErrorInfo
		if d.UnmarshalTo(&info) == nil {
			he.Reason, he.Metadata = info.GetReason(), info.GetMetadata()
			continue
		}
		he.Details = append(he.Details, d)
	}
	return he
}

// sameError fails unless a batch's answer for a handle, got, is what the
// single call said, err.
func sameError(t *testing.T, what string, got *registryv1.HandleError, err error) {
	t.Helper()
	if want := asHandleError(err); !proto.Equal(got, want) {
		t.Errorf("%s: the batch answered\n  %v\nthe single call\n  %v", what, got, want)
	}
}

// withoutTimes is info less what changes with every access.
func withoutTimes(info *registryv1.ObjectInfo) *registryv1.ObjectInfo {
	info = proto.Clone(info).(*registryv1.ObjectInfo)
	info.AccessTime = nil
	return info
}

// mixedHandles are one handle of every kind a batch may name, by name:
// live ones (pinned, lingering), gone ones (collected, deleted), and
// ones that name nothing here.
func mixedHandles(t *testing.T, w *world) (names []string, hs map[string]string) {
	lingering, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("lingering bytes"), Linger: durationpb.New(time.Minute),
		ContentType: "text/plain", Labels: map[string]string{"team": "batch"}})
	if err != nil {
		t.Fatal(err)
	}
	wrongMAC := []byte(w.pinned)
	if wrongMAC[len(wrongMAC)-1] == 'A' { // the last character holds MAC bits only
		wrongMAC[len(wrongMAC)-1] = 'B'
	} else {
		wrongMAC[len(wrongMAC)-1] = 'A'
	}
	hs = map[string]string{
		"pinned":       w.pinned,
		"lingering":    lingering.GetHandle(),
		"collected":    w.collected,
		"deleted":      w.deleted,
		"unknown":      string(wrongMAC),
		"other key":    w.foreignKey,
		"malformed":    "obj_not-a-handle",
		"empty":        "",
		"lease id":     w.bystander.id,
		"restarted":    w.otherRun(handle.Object),
		"foreign node": w.otherNode(handle.Object),
		"pinned again": w.pinned,
	}
	for name := range hs {
		names = append(names, name)
	}
	return names, hs
}

func TestBatchAnswersEachHandleAsResolveAndStatWould(t *testing.T) {
	w := newWorld(t)
	names, hs := mixedHandles(t, w)
	req := make([]string, len(names))
	for i, n := range names {
		req[i] = hs[n]
	}
	for _, withInfo := range []bool{false, true} {
		rs := w.e.batchResolve(t, &registryv1.BatchResolveRequest{Handles: req, WithInfo: withInfo})
		for i, n := range names {
			what := fmt.Sprintf("BatchResolve (with_info %v) of %s", withInfo, n)
			one, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: req[i]})
			if err != nil {
				sameError(t, what, rs[i].GetError(), err)
				if rs[i].GetData() != nil || rs[i].GetInfo() != nil {
					t.Errorf("%s: an error and data %q, info %v", what, rs[i].GetData(), rs[i].GetInfo())
				}
				continue
			}
			if rs[i].GetError() != nil || !bytes.Equal(rs[i].GetData(), one.GetData()) {
				t.Errorf("%s: %q, %v; Resolve answered %q", what, rs[i].GetData(), rs[i].GetError(), one.GetData())
			}
			switch {
			case !withInfo && rs[i].GetInfo() != nil:
				t.Errorf("%s: info %v, not asked for", what, rs[i].GetInfo())
			case withInfo && !proto.Equal(withoutTimes(rs[i].GetInfo()), withoutTimes(one.GetInfo())):
				t.Errorf("%s: info %v, Resolve's %v", what, rs[i].GetInfo(), one.GetInfo())
			}
		}
	}
	resp, err := w.e.rs.BatchStat(ctxT(t), &registryv1.BatchStatRequest{Handles: req})
	if err != nil || len(resp.GetResults()) != len(req) {
		t.Fatalf("BatchStat: %v, %d results for %d handles", err, len(resp.GetResults()), len(req))
	}
	for i, n := range names {
		what, r := "BatchStat of "+n, resp.GetResults()[i]
		one, err := w.e.rs.Stat(ctxT(t), &registryv1.StatRequest{Handle: req[i]})
		if err != nil {
			sameError(t, what, r.GetError(), err)
			continue
		}
		if r.GetError() != nil || !proto.Equal(withoutTimes(r.GetInfo()), withoutTimes(one.GetInfo())) {
			t.Errorf("%s: %v, %v; Stat answered %v", what, r.GetInfo(), r.GetError(), one.GetInfo())
		}
	}
}

// TestBatchWithLeasePinsAsResolveWould resolves a mixed batch with one
// lease and each handle alone with another, both already holding a pin:
// the answers and what each lease pins afterwards are the same.
func TestBatchWithLeasePinsAsResolveWould(t *testing.T) {
	w := newWorld(t)
	names, hs := mixedHandles(t, w)
	req := make([]string, len(names))
	for i, n := range names {
		req[i] = hs[n]
	}
	held := w.e.put(t, "held by both", "")
	batched, single := w.e.openLease(t, "batched", 0), w.e.openLease(t, "single", 0)
	batched.pin(held)
	single.pin(held)
	rs := w.e.batchResolve(t, &registryv1.BatchResolveRequest{Handles: req, LeaseId: batched.id})
	for i, n := range names {
		what := "BatchResolve with a lease of " + n
		one, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: req[i], LeaseId: single.id})
		if err != nil {
			sameError(t, what, rs[i].GetError(), err)
			continue
		}
		if rs[i].GetError() != nil || !bytes.Equal(rs[i].GetData(), one.GetData()) {
			t.Errorf("%s: %q, %v; Resolve answered %q", what, rs[i].GetData(), rs[i].GetError(), one.GetData())
		}
	}
	pins := func(id string) int32 {
		ls, err := w.e.admin.ListLeases(ctxT(t), &registryv1.ListLeasesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls.GetLeases() {
			if l.GetLeaseId() == id {
				return l.GetPinCount()
			}
		}
		t.Fatalf("lease %s is gone", id)
		return 0
	}
	if b, s := pins(batched.id), pins(single.id); b != s || b != 3 { // held, pinned, lingering
		t.Errorf("the batch's lease pins %d, the single calls' %d; want 3 each", b, s)
	}
}

// TestBadBatchChangesNothing sends batches wrong as a whole, with and
// without a lease that holds pins: each fails with its exact code and
// reason, and the registry as others see it is as it was.
func TestBadBatchChangesNothing(t *testing.T) {
	many := func(w *world) []string {
		hs := make([]string, MaxHandlesPerRequest+1)
		for i := range hs {
			hs[i] = w.pinned
		}
		return hs
	}
	cases := []struct {
		name   string
		do     func(t *testing.T, w *world) error
		code   codes.Code
		reason string
		md     map[string]string
	}{
		{"resolve no handles", func(t *testing.T, w *world) error {
			_, err := w.e.rs.BatchResolve(ctxT(t), &registryv1.BatchResolveRequest{})
			return err
		}, codes.InvalidArgument, ReasonRequestEmpty, nil},
		{"resolve no handles with a lease", func(t *testing.T, w *world) error {
			_, err := w.e.rs.BatchResolve(ctxT(t), &registryv1.BatchResolveRequest{LeaseId: w.bystander.id})
			return err
		}, codes.InvalidArgument, ReasonRequestEmpty, nil},
		{"resolve 1001 handles with a lease", func(t *testing.T, w *world) error {
			_, err := w.e.rs.BatchResolve(ctxT(t), &registryv1.BatchResolveRequest{Handles: many(w), LeaseId: w.bystander.id})
			return err
		}, codes.InvalidArgument, ReasonTooManyHandles, map[string]string{"max": "1000", "want": "1001"}},
		{"stat no handles", func(t *testing.T, w *world) error {
			_, err := w.e.rs.BatchStat(ctxT(t), &registryv1.BatchStatRequest{})
			return err
		}, codes.InvalidArgument, ReasonRequestEmpty, nil},
		{"stat 1001 handles", func(t *testing.T, w *world) error {
			_, err := w.e.rs.BatchStat(ctxT(t), &registryv1.BatchStatRequest{Handles: many(w)})
			return err
		}, codes.InvalidArgument, ReasonTooManyHandles, map[string]string{"max": "1000", "want": "1001"}},
		{"resolve with a malformed lease id", func(t *testing.T, w *world) error {
			_, err := w.e.rs.BatchResolve(ctxT(t), &registryv1.BatchResolveRequest{Handles: []string{w.pinned, w.collected}, LeaseId: "lse_x"})
			return err
		}, codes.InvalidArgument, ReasonLeaseMalformed, nil},
		{"resolve with an object handle as lease id", func(t *testing.T, w *world) error {
			_, err := w.e.rs.BatchResolve(ctxT(t), &registryv1.BatchResolveRequest{Handles: []string{w.pinned}, LeaseId: w.pinned})
			return err
		}, codes.InvalidArgument, ReasonLeaseMalformed, nil},
		{"resolve with a lease never opened", func(t *testing.T, w *world) error {
			_, id := w.e.codec.New(handle.Lease)
			_, err := w.e.rs.BatchResolve(ctxT(t), &registryv1.BatchResolveRequest{Handles: []string{w.pinned}, LeaseId: id})
			return err
		}, codes.FailedPrecondition, ReasonLeaseNotFound, nil},
		{"resolve with a lease of an earlier run", func(t *testing.T, w *world) error {
			_, err := w.e.rs.BatchResolve(ctxT(t), &registryv1.BatchResolveRequest{Handles: []string{w.pinned}, LeaseId: w.otherRun(handle.Lease)})
			return err
		}, codes.FailedPrecondition, ReasonRestarted, nil},
		{"resolve with the bystander's lease as another identity", func(t *testing.T, w *world) error {
			// The bystander is anonymous, as with authentication off: its
			// lease is open to all. Alice's is not.
			alices := w.e.openLeaseCtx(t, asIdentity(t, "alice"), "alice's", 0)
			alices.pin(w.pinned)
			before := w.snapshot(t)
			_, err := w.e.rs.BatchResolve(asIdentity(t, "bob"), &registryv1.BatchResolveRequest{Handles: []string{w.pinned, w.weak}, LeaseId: alices.id})
			if after := w.snapshot(t); after != before {
				t.Errorf("registry changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			alices.close()
			return err
		}, codes.PermissionDenied, ReasonLeaseNotOwned, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			w.bystander.pin(w.e.put(t, "a second pin", ""))
			before := w.snapshot(t)
			err := c.do(t, w)
			wantStatus(t, err, c.code, c.reason)
			if md := metadataOf(err); c.md != nil && fmt.Sprint(md) != fmt.Sprint(c.md) {
				t.Errorf("metadata %v, want %v", md, c.md)
			}
			if after := w.snapshot(t); after != before {
				t.Errorf("registry changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			w.checkBystander(t)
		})
	}
}

// TestBatchAnswerFitsOneMessage fills a batch past the message limit:
// what does not fit is answered RESPONSE_TOO_LARGE, pinned by no lease,
// and the answer fits the limit.
func TestBatchAnswerFitsOneMessage(t *testing.T) {
	l := testLimits
	// An object alone may take 20000 bytes, the answer 64 KiB + 20000
	// less batchSlack: six objects of 10000 bytes.
	l.MaxMessageBytes = messageOverhead + 20000
	l.MaxObjectBytes = 20000
	w := newWorldWith(t, envOptions{limits: &l})
	keeper := w.e.openLease(t, "keeper", 0)
	const objects, size = 20, 10000
	hs := make([]string, objects)
	for i := range hs {
		hs[i] = w.e.put(t, string(bytes.Repeat([]byte{byte('a' + i)}, size)), keeper.id)
	}
	hs = append(hs, w.collected, w.collected)
	batched := w.e.openLease(t, "batched", 0)
	resp, err := w.e.rs.BatchResolve(ctxT(t), &registryv1.BatchResolveRequest{Handles: hs, LeaseId: batched.id})
	if err != nil {
		t.Fatal(err)
	}
	if n := proto.Size(resp); n > l.MaxMessageBytes-batchSlack {
		t.Errorf("the answer is %d bytes, more than the %d an answer may carry", n, l.MaxMessageBytes-batchSlack)
	}
	fit := 0
	for i, r := range resp.GetResults()[:objects] {
		if r.GetError() == nil {
			if fit != i {
				t.Errorf("result %d fits after one that did not", i)
			}
			if !bytes.Equal(r.GetData(), bytes.Repeat([]byte{byte('a' + i)}, size)) {
				t.Errorf("result %d: %q", i, r.GetData())
			}
			fit++
			continue
		}
		if r.GetError().GetReason() != ReasonResponseTooLarge || codes.Code(r.GetError().GetCode()) != codes.ResourceExhausted ||
			r.GetError().GetMetadata()["max"] != fmt.Sprint(l.MaxMessageBytes) || len(r.GetError().GetDetails()) != 1 {
			t.Errorf("result %d: %v, want RESOURCE_EXHAUSTED RESPONSE_TOO_LARGE with max %d and a QuotaFailure", i, r.GetError(), l.MaxMessageBytes)
		}
	}
	if room, _ := (&registryService{limits: l}).batchRoom(); fit != int(room/size) && fit != int(room/size)-1 {
		t.Errorf("%d answers of %d bytes fit %d bytes", fit, size, room)
	}
	if r := resp.GetResults()[21].GetError(); r.GetReason() != ReasonCollected {
		t.Errorf("a collected object: %v", r)
	}
	var got int32
	ls, err := w.e.admin.ListLeases(ctxT(t), &registryv1.ListLeasesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, le := range ls.GetLeases() {
		if le.GetLeaseId() == batched.id {
			got = le.GetPinCount()
		}
	}
	if got != int32(fit) {
		t.Errorf("the batch's lease pins %d objects; %d answers fit, and only those may be pinned", got, fit)
	}
}

// TestBatchResolveDuringCollectionNeverAnswersOtherBytes resolves batches
// of pinned and weak objects while an operator forces collections, reads
// stats and pages through the objects: a pinned object always answers its bytes, a weak one its
// bytes or OBJECT_COLLECTED, never another's. Afterwards the weak ones
// are collectable: the batches kept no strong pointer to them.
func TestBatchResolveDuringCollectionNeverAnswersOtherBytes(t *testing.T) {
	w := newWorld(t)
	keeper := w.e.openLease(t, "keeper", 0)
	var hs []string
	want := map[string]string{}
	pinned := map[string]bool{}
	for i := range 300 {
		lease := ""
		if i%3 == 0 {
			lease = keeper.id
		}
		data := fmt.Sprintf("object %d", i)
		h := w.e.put(t, data, lease)
		hs, want[h], pinned[h] = append(hs, h), data, lease != ""
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := w.e.admin.Collect(ctxT(t), &registryv1.CollectRequest{}); err != nil {
				t.Error(err)
				return
			}
			if _, err := w.e.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{}); err != nil {
				t.Error(err)
				return
			}
			// A pager walks the objects, a page at a time.
			for token := ""; ; {
				page, err := w.e.admin.ListObjects(ctxT(t), &registryv1.ListObjectsRequest{PageSize: 50, PageToken: token})
				if err != nil {
					t.Error(err)
					return
				}
				if token = page.GetNextPageToken(); token == "" {
					break
				}
			}
		}
	})
	for range 30 {
		rs := w.e.batchResolve(t, &registryv1.BatchResolveRequest{Handles: hs})
		for i, r := range rs {
			h := hs[i]
			switch {
			case r.GetError() == nil && string(r.GetData()) != want[h]:
				t.Fatalf("%s answered %q, was put as %q", h, r.GetData(), want[h])
			case r.GetError() != nil && (pinned[h] || r.GetError().GetReason() != ReasonCollected):
				t.Fatalf("%s (pinned %v): %v", h, pinned[h], r.GetError())
			}
		}
	}
	close(stop)
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		if _, err := w.e.admin.Collect(ctxT(t), &registryv1.CollectRequest{}); err != nil {
			t.Fatal(err)
		}
		rs := w.e.batchResolve(t, &registryv1.BatchResolveRequest{Handles: hs})
		alive := 0
		for i, r := range rs {
			if r.GetError() == nil && !pinned[hs[i]] {
				alive++
			}
			if r.GetError() != nil && pinned[hs[i]] {
				t.Fatalf("pinned %s: %v", hs[i], r.GetError())
			}
		}
		if alive == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d weak objects still resolve after collections", alive)
		}
	}
}

// TestBatchResolveHitsAllocateLittle bounds the server's allocations per
// object on the data path: the answer's results share one allocation.
func TestBatchResolveHitsAllocateLittle(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	w := newWorld(t)
	keeper := w.e.openLease(t, "keeper", 0)
	hs := make([]string, 100)
	for i := range hs {
		hs[i] = w.e.put(t, string(make([]byte, 100)), keeper.id)
	}
	svc := &registryService{reg: w.e.reg, leases: w.e.leases, limits: testLimits}
	req := &registryv1.BatchResolveRequest{Handles: hs}
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := svc.BatchResolve(ctxT(t), req); err != nil {
			t.Fatal(err)
		}
	})
	if perObject := allocs / float64(len(hs)); perObject > 0.2 {
		t.Errorf("%.1f allocations per object resolved, want at most 0.2: the results share one", perObject)
	}
	t.Logf("%.0f allocations for %d objects", allocs, len(hs))
}
