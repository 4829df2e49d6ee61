package server

import (
	"bytes"
	"fmt"
	"strings"
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

// world is a registry in use by a bystander: a client that holds a lease
// pinning one object and has put one weak object. A bad request from
// someone else must leave all of it as it was.
type world struct {
	e          *env
	bystander  *leaseClient
	pinned     string // pinned by bystander
	weak       string // put without a lease
	deleted    string // deleted by an operator
	collected  string // collected by the garbage collector
	foreignKey string // a genuine-looking handle from another key
}

const bystanderData = "the bystander's bytes"

func newWorld(t *testing.T) *world { return newWorldWith(t, envOptions{}) }

func newWorldWith(t *testing.T, o envOptions) *world {
	e := newEnvWith(t, o)
	w := &world{e: e}
	w.bystander = e.openLease(t, "bystander", 0)
	w.pinned = e.put(t, bystanderData, w.bystander.id)
	w.collected = e.put(t, "collect me", "")
	if _, err := e.admin.Collect(ctxT(t), &registryv1.CollectRequest{}); err != nil {
		t.Fatal(err)
	}
	w.weak = e.put(t, "weak bytes", "")
	w.deleted = e.put(t, "delete me", "")
	if _, err := e.admin.DeleteObject(ctxT(t), &registryv1.DeleteObjectRequest{Handle: w.deleted}); err != nil {
		t.Fatal(err)
	}
	other, err := handle.NewCodec(handle.Config{Key: bytes.Repeat([]byte{7}, 32), Epoch: e.codec.Epoch()})
	if err != nil {
		t.Fatal(err)
	}
	_, w.foreignKey = other.New(handle.Object)
	return w
}

// snapshot is everything another client could observe of the registry's
// holdings. Resolve counters are left out: a failed call is counted.
func (w *world) snapshot(t *testing.T) string {
	t.Helper()
	ctx := ctxT(t)
	st, err := w.e.admin.GetStats(ctx, &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	leases, err := w.e.admin.ListLeases(ctx, &registryv1.ListLeasesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := w.e.admin.ListObjects(ctx, &registryv1.ListObjectsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "objects=%v bytes=%v attached=%d detached=%d pins=%d puts=%d collected=%d deleted=%d\n",
		st.GetObjects(), st.GetBytes(), st.GetLeasesAttached(), st.GetLeasesDetached(), st.GetPins(),
		st.GetPuts(), st.GetCollectedObjects(), st.GetDeletedObjects())
	for _, l := range leases.GetLeases() {
		fmt.Fprintf(&b, "lease %s %s pins=%d attached=%v\n", l.GetLeaseId(), l.GetClientName(), l.GetPinCount(), l.GetAttached())
	}
	for _, o := range objs.GetObjects() {
		fmt.Fprintf(&b, "object %s %v pins=%d size=%d\n", o.GetHandle(), o.GetState(), o.GetPinCount(), o.GetSize())
	}
	return b.String()
}

// checkBystander fails unless the bystander's object resolves to its bytes
// and its lease still works.
func (w *world) checkBystander(t *testing.T) {
	t.Helper()
	resp, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: w.pinned})
	if err != nil {
		t.Fatalf("bystander's object: %v", err)
	}
	if string(resp.GetData()) != bystanderData || resp.GetInfo().GetPinCount() != 1 {
		t.Fatalf("bystander's object: %q with %d pins", resp.GetData(), resp.GetInfo().GetPinCount())
	}
	if r := w.bystander.pin(w.pinned); r[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_ALREADY_PINNED {
		t.Fatalf("bystander's lease: pin answered %v", r[0])
	}
}

func pinReq(hs ...string) *registryv1.LeaseRequest {
	return &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Pin{Pin: &registryv1.PinHandles{Handles: hs}}}
}

func openReq(resume string) *registryv1.LeaseRequest {
	return &registryv1.LeaseRequest{Kind: &registryv1.LeaseRequest_Open{Open: &registryv1.OpenLease{ResumeLeaseId: resume}}}
}

// wantResult fails unless r has outcome and, for failures, code and reason.
func wantResult(t *testing.T, r *registryv1.PinResult, outcome registryv1.PinOutcome, code codes.Code, reason string) {
	t.Helper()
	if r.GetOutcome() != outcome || codes.Code(r.GetError().GetCode()) != code || r.GetError().GetReason() != reason {
		t.Fatalf("got %v, want %v %v %q", r, outcome, code, reason)
	}
}

// TestBadInputChangesNothingForOthers sends each kind of bad input and
// checks the exact code and reason, and that the registry as others see
// it did not change.
func TestBadInputChangesNothingForOthers(t *testing.T) {
	ok := codes.OK
	cases := []struct {
		name string
		do   func(t *testing.T, w *world)
	}{
		{"resolve malformed handle", func(t *testing.T, w *world) {
			_, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: "obj_not-a-handle"})
			wantStatus(t, err, codes.InvalidArgument, ReasonHandleMalformed)
		}},
		{"resolve empty handle", func(t *testing.T, w *world) {
			_, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{})
			wantStatus(t, err, codes.InvalidArgument, ReasonHandleMalformed)
		}},
		{"resolve never-issued handle", func(t *testing.T, w *world) {
			_, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: w.foreignKey})
			wantStatus(t, err, codes.NotFound, ReasonHandleUnknown)
		}},
		{"resolve handle with a wrong MAC", func(t *testing.T, w *world) {
			// The last character holds MAC bits only: change it.
			h := []byte(w.pinned)
			if h[len(h)-1] == 'A' {
				h[len(h)-1] = 'B'
			} else {
				h[len(h)-1] = 'A'
			}
			_, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: string(h)})
			wantStatus(t, err, codes.NotFound, ReasonHandleUnknown)
		}},
		{"resolve lease id as a handle", func(t *testing.T, w *world) {
			_, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: w.bystander.id})
			wantStatus(t, err, codes.InvalidArgument, ReasonHandleMalformed)
		}},
		{"resolve collected", func(t *testing.T, w *world) {
			_, err := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: w.collected})
			wantStatus(t, err, codes.NotFound, ReasonCollected)
		}},
		{"stat deleted", func(t *testing.T, w *world) {
			_, err := w.e.rs.Stat(ctxT(t), &registryv1.StatRequest{Handle: w.deleted})
			wantStatus(t, err, codes.NotFound, ReasonDeleted)
		}},
		{"put empty payload", func(t *testing.T, w *world) {
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: nil, ContentType: "text/plain"})
			wantStatus(t, err, codes.InvalidArgument, ReasonPayloadEmpty)
		}},
		{"put oversized payload", func(t *testing.T, w *world) {
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: make([]byte, testLimits.MaxObjectBytes+1)})
			wantStatus(t, err, codes.ResourceExhausted, "OBJECT_TOO_LARGE")
		}},
		{"put oversized payload with a lease", func(t *testing.T, w *world) {
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: make([]byte, testLimits.MaxObjectBytes+1), LeaseId: w.bystander.id})
			wantStatus(t, err, codes.ResourceExhausted, "OBJECT_TOO_LARGE")
		}},
		{"put bad label", func(t *testing.T, w *world) {
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("x"), Labels: map[string]string{"bad key!": "v"}})
			wantStatus(t, err, codes.InvalidArgument, ReasonLabelsInvalid)
		}},
		{"put with unknown lease", func(t *testing.T, w *world) {
			_, id := w.e.codec.New(handle.Lease) // genuine, never opened
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("x"), LeaseId: id})
			wantStatus(t, err, codes.FailedPrecondition, ReasonLeaseNotFound)
		}},
		{"put with malformed lease id", func(t *testing.T, w *world) {
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("x"), LeaseId: "lse_nope"})
			wantStatus(t, err, codes.InvalidArgument, ReasonLeaseMalformed)
		}},
		{"put with an object handle as lease id", func(t *testing.T, w *world) {
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("x"), LeaseId: w.pinned})
			wantStatus(t, err, codes.InvalidArgument, ReasonLeaseMalformed)
		}},
		{"pin before open", func(t *testing.T, w *world) {
			_, err := w.e.leaseStream(t).try(pinReq(w.weak))
			wantStatus(t, err, codes.FailedPrecondition, ReasonLeaseNotOpen)
		}},
		{"empty lease request", func(t *testing.T, w *world) {
			_, err := w.e.leaseStream(t).try(&registryv1.LeaseRequest{})
			wantStatus(t, err, codes.InvalidArgument, ReasonRequestEmpty)
		}},
		{"resume unknown lease", func(t *testing.T, w *world) {
			_, id := w.e.codec.New(handle.Lease)
			_, err := w.e.leaseStream(t).try(openReq(id))
			wantStatus(t, err, codes.NotFound, ReasonLeaseNotFound)
		}},
		{"resume malformed lease id", func(t *testing.T, w *world) {
			_, err := w.e.leaseStream(t).try(openReq("lse_"))
			wantStatus(t, err, codes.InvalidArgument, ReasonLeaseMalformed)
		}},
		{"open twice on one stream", func(t *testing.T, w *world) {
			lc := w.e.openLease(t, "twice", 0)
			wantRequestError(t, lc.send(openReq("")), codes.FailedPrecondition, ReasonLeaseAlreadyOpen)
			lc.close()
		}},
		{"duplicate pin", func(t *testing.T, w *world) {
			rs := w.bystander.pin(w.pinned)
			wantResult(t, rs[0], registryv1.PinOutcome_PIN_OUTCOME_ALREADY_PINNED, ok, "")
			if rs[0].GetInfo().GetPinCount() != 1 {
				t.Fatalf("pin count %d after a duplicate pin, want 1", rs[0].GetInfo().GetPinCount())
			}
		}},
		{"unpin a handle not pinned", func(t *testing.T, w *world) {
			rs := w.bystander.unpin(w.weak)
			wantResult(t, rs[0], registryv1.PinOutcome_PIN_OUTCOME_NOT_PINNED, ok, "")
		}},
		{"pin bad handles", func(t *testing.T, w *world) {
			lc := w.e.openLease(t, "bad pins", 0)
			rs := lc.pin("garbage", w.foreignKey, w.collected, w.deleted)
			wantResult(t, rs[0], registryv1.PinOutcome_PIN_OUTCOME_FAILED, codes.InvalidArgument, ReasonHandleMalformed)
			wantResult(t, rs[1], registryv1.PinOutcome_PIN_OUTCOME_FAILED, codes.NotFound, ReasonHandleUnknown)
			wantResult(t, rs[2], registryv1.PinOutcome_PIN_OUTCOME_FAILED, codes.NotFound, ReasonCollected)
			wantResult(t, rs[3], registryv1.PinOutcome_PIN_OUTCOME_FAILED, codes.NotFound, ReasonDeleted)
			lc.close()
		}},
		{"too many handles in one pin", func(t *testing.T, w *world) {
			hs := make([]string, MaxHandlesPerRequest+1)
			for i := range hs {
				hs[i] = w.weak
			}
			lc := w.e.openLease(t, "greedy", 0)
			wantRequestError(t, lc.send(pinReq(hs...)), codes.InvalidArgument, ReasonTooManyHandles)
			lc.close()
		}},
		{"revoke unknown lease", func(t *testing.T, w *world) {
			_, id := w.e.codec.New(handle.Lease)
			_, err := w.e.admin.RevokeLease(ctxT(t), &registryv1.RevokeLeaseRequest{LeaseId: id})
			wantStatus(t, err, codes.NotFound, ReasonLeaseNotFound)
		}},
		{"revoke malformed lease id", func(t *testing.T, w *world) {
			_, err := w.e.admin.RevokeLease(ctxT(t), &registryv1.RevokeLeaseRequest{LeaseId: "nope"})
			wantStatus(t, err, codes.InvalidArgument, ReasonLeaseMalformed)
		}},
		{"delete pinned without force", func(t *testing.T, w *world) {
			_, err := w.e.admin.DeleteObject(ctxT(t), &registryv1.DeleteObjectRequest{Handle: w.pinned})
			wantStatus(t, err, codes.FailedPrecondition, ReasonPinned)
		}},
		{"list with bad page token", func(t *testing.T, w *world) {
			_, err := w.e.admin.ListObjects(ctxT(t), &registryv1.ListObjectsRequest{PageToken: "???"})
			wantStatus(t, err, codes.InvalidArgument, ReasonPageToken)
		}},
		{"inspect never-issued handle", func(t *testing.T, w *world) {
			_, err := w.e.admin.InspectObject(ctxT(t), &registryv1.InspectObjectRequest{Handle: w.foreignKey})
			wantStatus(t, err, codes.NotFound, ReasonHandleUnknown)
		}},
		{"watch nothing", func(t *testing.T, w *world) {
			stream, err := w.e.rs.Watch(ctxT(t), &registryv1.WatchRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			wantStatus(t, err, codes.InvalidArgument, ReasonRequestEmpty)
		}},
		{"put negative linger", func(t *testing.T, w *world) {
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("x"), Linger: durationpb.New(-time.Second)})
			wantField(t, err, "linger")
		}},
		{"put linger of 2^62 seconds", func(t *testing.T, w *world) {
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("x"), Linger: &durationpb.Duration{Seconds: 1 << 62}})
			wantField(t, err, "linger")
		}},
		{"put linger of mixed signs", func(t *testing.T, w *world) {
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("x"), Linger: &durationpb.Duration{Seconds: 1, Nanos: -1}})
			wantField(t, err, "linger")
		}},
		{"put linger with nanos out of range", func(t *testing.T, w *world) {
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("x"), Linger: &durationpb.Duration{Nanos: 1e9}})
			wantField(t, err, "linger")
		}},
		{"put content type over 256 bytes with a lease", func(t *testing.T, w *world) {
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("x"), LeaseId: w.bystander.id, ContentType: strings.Repeat("t", MaxContentTypeBytes+1)})
			wantField(t, err, "content_type")
		}},
		{"upload content type over 256 bytes", func(t *testing.T, w *world) {
			_, err := w.e.uploadMsgs(ctxT(t), chunked(&registryv1.UploadHeader{ContentType: strings.Repeat("t", 16<<10)}, []byte("ten bytes!"), 4)...)
			wantField(t, err, "header.content_type")
		}},
		{"put negative linger with a lease", func(t *testing.T, w *world) {
			_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("x"), LeaseId: w.bystander.id, Linger: durationpb.New(-time.Nanosecond)})
			wantField(t, err, "linger")
		}},
		{"upload negative linger", func(t *testing.T, w *world) {
			_, err := w.e.uploadMsgs(ctxT(t), chunked(&registryv1.UploadHeader{Linger: durationpb.New(-time.Minute)}, []byte("ten bytes!"), 4)...)
			wantField(t, err, "header.linger")
		}},
		{"upload linger of 2^62 seconds", func(t *testing.T, w *world) {
			_, err := w.e.uploadMsgs(ctxT(t), chunked(&registryv1.UploadHeader{Linger: &durationpb.Duration{Seconds: 1 << 62}}, []byte("ten bytes!"), 4)...)
			wantField(t, err, "header.linger")
		}},
		{"upload empty chunk", func(t *testing.T, w *world) {
			ten := []byte("ten bytes!")
			_, err := w.e.uploadMsgs(ctxT(t), headerMsg(&registryv1.UploadHeader{Size: 10}), chunkMsg(nil), chunkMsg(ten), trailerMsg(crc32c(ten)))
			wantField(t, err, "chunk")
		}},
		{"download negative chunk size", func(t *testing.T, w *world) {
			_, err := w.e.download(t, w.pinned, -1)
			wantField(t, err, "chunk_size")
		}},
		{"download chunk size 2^31-1 is capped", func(t *testing.T, w *world) {
			d, err := w.e.download(t, w.pinned, 1<<31-1)
			if err != nil || string(d.bytes()) != bystanderData {
				t.Fatalf("Download with chunk_size 2^31-1: %q, %v", d.bytes(), err)
			}
		}},
		{"list unknown state", func(t *testing.T, w *world) {
			_, err := w.e.admin.ListObjects(ctxT(t), &registryv1.ListObjectsRequest{State: 99})
			wantField(t, err, "state")
		}},
		{"watch events of an unknown kind", func(t *testing.T, w *world) {
			err := firstEventErr(w.e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{
				Kinds: []registryv1.EventKind{registryv1.EventKind_EVENT_KIND_PINNED, 42}}))
			wantField(t, err, "kinds[1]")
		}},
		{"watch events of kind unspecified", func(t *testing.T, w *world) {
			err := firstEventErr(w.e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{
				Kinds: []registryv1.EventKind{registryv1.EventKind_EVENT_KIND_UNSPECIFIED}}))
			wantField(t, err, "kinds[0]")
		}},
		{"watch too many handles", func(t *testing.T, w *world) {
			hs := make([]string, MaxHandlesPerRequest+1)
			for i := range hs {
				hs[i] = w.weak
			}
			stream, err := w.e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: hs})
			if err == nil {
				_, err = stream.Recv()
			}
			wantStatus(t, err, codes.InvalidArgument, ReasonTooManyHandles)
			if md := metadataOf(err); md["max"] != "1000" || md["want"] != "1001" {
				t.Fatalf("metadata %v, want max 1000 and want 1001", md)
			}
		}},
		{"watch malformed handle", func(t *testing.T, w *world) {
			stream, err := w.e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: []string{w.weak, "obj_x"}})
			if err == nil {
				_, err = stream.Recv()
			}
			wantStatus(t, err, codes.InvalidArgument, ReasonHandleMalformed)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			before := w.snapshot(t)
			c.do(t, w)
			if after := w.snapshot(t); after != before {
				t.Errorf("registry changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			w.checkBystander(t)
		})
	}
}

// wantField fails unless err is INVALID_ARGUMENT FIELD_INVALID naming
// field in its ErrorInfo metadata and in a BadRequest detail.
func wantField(t *testing.T, err error, field string) {
	t.Helper()
	wantStatus(t, err, codes.InvalidArgument, ReasonFieldInvalid)
	if got := metadataOf(err)["field"]; got != field {
		t.Fatalf("ErrorInfo names field %q, want %q", got, field)
	}
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			if v := br.GetFieldViolations(); len(v) != 1 || v[0].GetField() != field || v[0].GetDescription() == "" {
				t.Fatalf("BadRequest %v, want one violation of %s", br, field)
			}
			return
		}
	}
	t.Fatalf("%v has no BadRequest detail", err)
}

// firstEventErr is the error of a watch stream's first receive.
func firstEventErr[M any](stream interface{ Recv() (M, error) }, err error) error {
	if err != nil {
		return err
	}
	_, err = stream.Recv()
	return err
}

// TestPinLimitIsPerHandleAndChangesNothing fills a lease to its pin
// limit: the next pin fails alone, with the limit's reason.
func TestPinLimitIsPerHandleAndChangesNothing(t *testing.T) {
	w := newWorld(t)
	lc := w.e.openLease(t, "filler", 0)
	hs := make([]string, testLimits.MaxPinsPerLease)
	for i := range hs {
		hs[i] = w.e.put(t, fmt.Sprint("object ", i), lc.id)
	}
	before := w.snapshot(t)
	rs := lc.pin(w.weak)
	wantResult(t, rs[0], registryv1.PinOutcome_PIN_OUTCOME_FAILED, codes.ResourceExhausted, "LEASE_PIN_LIMIT")
	// The result says what a unary call's status would: the metadata and
	// the QuotaFailure.
	wantMax, wantWant := fmt.Sprint(testLimits.MaxPinsPerLease), fmt.Sprint(testLimits.MaxPinsPerLease+1)
	if md := rs[0].GetError().GetMetadata(); md["max"] != wantMax || md["want"] != wantWant {
		t.Errorf("pin result metadata %v, want max %s, want %s", md, wantMax, wantWant)
	}
	var qf errdetails.QuotaFailure
	if ds := rs[0].GetError().GetDetails(); len(ds) != 1 || ds[0].UnmarshalTo(&qf) != nil {
		t.Fatalf("pin result details %v, want one QuotaFailure", ds)
	}
	if v := qf.GetViolations(); len(v) != 1 || v[0].GetQuotaId() != "LEASE_PIN_LIMIT" || v[0].GetSubject() != "registryd" || v[0].GetQuotaValue() != int64(testLimits.MaxPinsPerLease) {
		t.Errorf("QuotaFailure %v", v)
	}
	_, err := w.e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("one more"), LeaseId: lc.id})
	wantStatus(t, err, codes.ResourceExhausted, "LEASE_PIN_LIMIT")
	if after := w.snapshot(t); after != before {
		t.Errorf("registry changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	w.checkBystander(t)
}

// TestResultsCarryMetadata: a pin result describes the object it pinned.
func TestResultsCarryMetadata(t *testing.T) {
	e := newEnv(t, nil)
	resp, err := e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("{}"), ContentType: "application/json", Labels: map[string]string{"team": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	lc := e.openLease(t, "reader", 0)
	got := lc.pin(resp.GetHandle())[0].GetInfo()
	want := &registryv1.ObjectInfo{Handle: resp.GetHandle(), Size: 2, ContentType: "application/json",
		Labels: map[string]string{"team": "a"}, State: registryv1.ObjectState_OBJECT_STATE_PINNED, PinCount: 1}
	got.CreateTime, got.AccessTime, got.StateTime = nil, nil, nil
	if !proto.Equal(got, want) {
		t.Fatalf("pin result info %v, want %v", got, want)
	}
}
