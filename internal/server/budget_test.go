package server

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// snapshotStats is what GetStats says the registry holds.
func (e *env) snapshotStats(t *testing.T) string {
	t.Helper()
	st, err := e.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint("objects ", st.GetObjects(), " bytes ", st.GetBytes(), " puts ", st.GetPuts(), " pins ", st.GetPins())
}

// quotaOf returns err's google.rpc.QuotaFailure, or nil.
func quotaOf(err error) *errdetails.QuotaFailure {
	for _, d := range status.Convert(err).Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok {
			return q
		}
	}
	return nil
}

// uploadsInFlight reads the bytes in use of GetStats's UPLOAD_BYTES_LIMIT
// row.
func uploadsInFlight(t *testing.T, e *env) int64 {
	t.Helper()
	return limitUsed(t, e, LimitUploadBytes)
}

// TestUploadsInFlightAreBounded: an upload reserves the size its header
// declares until it ends, so that uploads which stall half-way cannot take
// the process's memory: one more than the budget is refused before a
// byte is received (RESOURCE_EXHAUSTED UPLOAD_BYTES_LIMIT, with a
// QuotaFailure), nothing is stored, and the budget is whole again once
// the first ends, stored or not.
func TestUploadsInFlightAreBounded(t *testing.T) {
	limits := testLimits
	limits.MaxUploadBytes = 600
	e := newEnvWith(t, envOptions{limits: &limits})
	before := e.snapshotStats(t)

	// The first upload sends its header and half its bytes, then waits.
	first, err := e.rs.Upload(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 500)
	if err := first.Send(headerMsg(&registryv1.UploadHeader{Size: int64(len(data))})); err != nil {
		t.Fatal(err)
	}
	if err := first.Send(chunkMsg(data[:250])); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the first upload's reservation", func() bool { return uploadsInFlight(t, e) == 500 })

	_, err = e.uploadMsgs(ctxT(t), chunked(&registryv1.UploadHeader{}, make([]byte, 200), 64)...)
	wantStatus(t, err, codes.ResourceExhausted, ReasonUploadBytesLimit)
	if qf := quotaOf(err); qf == nil || qf.GetViolations()[0].GetQuotaValue() != 600 {
		t.Errorf("the refusal's QuotaFailure: %v, want one of quota 600", qf)
	}
	if after := e.snapshotStats(t); after != before {
		t.Errorf("a refused upload changed the registry: %s, was %s", after, before)
	}

	// The first one ends without its trailer: nothing stored, budget back.
	_, err = first.CloseAndRecv()
	wantStatus(t, err, codes.InvalidArgument, ReasonUploadNoTrailer)
	waitFor(t, 5*time.Second, "the budget back whole", func() bool { return uploadsInFlight(t, e) == 0 })
	if _, err := e.uploadMsgs(ctxT(t), chunked(&registryv1.UploadHeader{}, make([]byte, 600), 64)...); err != nil {
		t.Fatalf("an upload of the whole budget once the first ended: %v", err)
	}
}

// TestStalledUploadIsEnded: a client that begins an upload and stops
// sending has its stream ended after the stall timeout (RESOURCE_EXHAUSTED
// STREAM_STALLED), storing nothing and giving its reservation back.
func TestStalledUploadIsEnded(t *testing.T) {
	limits := testLimits
	limits.MaxUploadBytes = 1000
	e := newEnvWith(t, envOptions{limits: &limits, stall: 200 * time.Millisecond})
	before := e.snapshotStats(t)
	up, err := e.rs.Upload(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Send(headerMsg(&registryv1.UploadHeader{Size: 100})); err != nil {
		t.Fatal(err)
	}
	if err := up.Send(chunkMsg(make([]byte, 10))); err != nil {
		t.Fatal(err)
	}
	var resp registryv1.UploadResponse
	err = up.RecvMsg(&resp) // waits for the server's answer, sending nothing more
	wantStatus(t, err, codes.ResourceExhausted, ReasonStreamStalled)
	waitFor(t, 5*time.Second, "the budget back whole", func() bool { return uploadsInFlight(t, e) == 0 })
	if after := e.snapshotStats(t); after != before {
		t.Errorf("a stalled upload changed the registry: %s, was %s", after, before)
	}
}
