package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// putReasons are the only reasons a Put may fail with.
var putReasons = map[string]bool{
	ReasonPayloadEmpty: true, ReasonLabelsInvalid: true, ReasonLeaseMalformed: true,
	ReasonLeaseNotFound: true, ReasonRestarted: true, ReasonHandleForeignNode: true,
	"OBJECT_TOO_LARGE": true, "PINNED_BYTES_LIMIT": true, "LEASE_PIN_LIMIT": true,
	ReasonFieldInvalid: true,
}

// resolveReasons are the only reasons a Resolve of an arbitrary string
// may fail with.
var resolveReasons = map[string]bool{
	ReasonHandleMalformed: true, ReasonHandleUnknown: true, ReasonRestarted: true,
	ReasonHandleForeignNode: true, ReasonCollected: true, ReasonDeleted: true,
}

// FuzzRequestValidation feeds arbitrary Put and Resolve requests to the
// service. Properties: no panic; a failure is a status with one of the
// documented reasons and stores nothing; a success resolves to exactly the
// bytes put; a linger is refused exactly when it is negative or not a
// valid Duration.
func FuzzRequestValidation(f *testing.F) {
	codec, err := handle.NewCodec(handle.Config{Key: bytes.Repeat([]byte{1}, 32)})
	if err != nil {
		f.Fatal(err)
	}
	reg := registry.New(registry.Config{Codec: codec, MaxObjectBytes: 64, MaxPinnedBytes: 256})
	leases := lease.New(lease.Config{Codec: codec, Registry: reg, MaxPinsPerLease: 4})
	sess, err := leases.Open(lease.OpenParams{Client: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	svc := &registryService{reg: reg, leases: leases}
	ctx := context.Background()

	_, validHandle := codec.New(handle.Object)
	f.Add([]byte("hello"), "text/plain", "team", "a", "", validHandle, int64(0), int32(0))
	f.Add([]byte{}, "", "", "", sess.ID(), "obj_", int64(0), int32(0))
	f.Add(bytes.Repeat([]byte{0}, 65), "x", "bad key", "v", "lse_x", "", int64(0), int32(0))
	f.Add([]byte("pinned"), "", "k", "\xff", sess.ID(), sess.ID(), int64(0), int32(0))
	f.Add([]byte("lingers"), "", "", "", "", "", int64(5), int32(0))
	f.Add([]byte("negative"), "", "", "", "", "", int64(-1), int32(0))
	f.Add([]byte("huge"), "", "", "", sess.ID(), "", int64(1<<62), int32(0))
	f.Add([]byte("mixed"), "", "", "", "", "", int64(1), int32(-1))
	f.Fuzz(func(t *testing.T, data []byte, contentType, key, value, leaseID, h string, lingerSec int64, lingerNanos int32) {
		req := &registryv1.PutRequest{Data: data, ContentType: contentType, LeaseId: leaseID}
		if lingerSec != 0 || lingerNanos != 0 {
			req.Linger = &durationpb.Duration{Seconds: lingerSec, Nanos: lingerNanos}
		}
		badLinger := req.Linger != nil && (req.Linger.CheckValid() != nil || req.Linger.AsDuration() < 0)
		badField := badLinger || len(contentType) > MaxContentTypeBytes
		if key != "" || value != "" {
			req.Labels = map[string]string{key: value}
		}
		puts := reg.Stats().Puts
		resp, err := svc.Put(ctx, req)
		if badField && err == nil {
			t.Fatalf("Put(%v) with linger %v and a %d-byte content type succeeded", req, req.Linger, len(contentType))
		}
		if err != nil {
			r := reasonOf(status.Convert(err))
			if !putReasons[r] {
				t.Fatalf("Put(%v) failed with reason %q: %v", req, r, err)
			}
			if (r == ReasonFieldInvalid) != badField {
				t.Fatalf("Put(%v) with linger %v and a %d-byte content type: %v", req, req.Linger, len(contentType), err)
			}
			if got := reg.Stats().Puts; got != puts {
				t.Fatalf("a failed Put stored something: %d puts, was %d", got, puts)
			}
		} else {
			got, err := svc.Resolve(ctx, &registryv1.ResolveRequest{Handle: resp.GetHandle()})
			if err != nil {
				// Unpinned and collected by a GC cycle in between: allowed.
				if r := reasonOf(status.Convert(err)); r != ReasonCollected || leaseID != "" {
					t.Fatalf("Resolve after Put: %v", err)
				}
			} else if !bytes.Equal(got.GetData(), data) {
				t.Fatalf("Resolve returned %q, want %q", got.GetData(), data)
			}
			if leaseID != "" {
				sess.Unpin([]string{resp.GetHandle()}, 0) // stay under the pin limit
			}
		}
		if _, err := svc.Resolve(ctx, &registryv1.ResolveRequest{Handle: h}); err != nil {
			if r := reasonOf(status.Convert(err)); !resolveReasons[r] {
				t.Fatalf("Resolve(%q) failed with reason %q: %v", h, r, err)
			}
		}
	})
}

// fakeUpload is an Upload stream fed from a list of messages, without
// gRPC: Recv hands them out, then io.EOF (the client half-closed).
type fakeUpload struct {
	grpc.ServerStream // nil: Upload calls only the methods below
	msgs              []*registryv1.UploadRequest
	resp              *registryv1.UploadResponse
}

func (f *fakeUpload) Context() context.Context { return context.Background() }

func (f *fakeUpload) Recv() (*registryv1.UploadRequest, error) {
	if len(f.msgs) == 0 {
		return nil, io.EOF
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return m, nil
}

func (f *fakeUpload) SendAndClose(resp *registryv1.UploadResponse) error {
	f.resp = resp
	return nil
}

// fuzzUploadMax is FuzzUploadSequence's largest object.
const fuzzUploadMax = 64

// uploadScript turns fuzz bytes into Upload messages, two bytes a
// message: an op and its argument. Op%5: 0 a header of size int8(arg),
// (op>>3)&3 choosing no lease, bad labels, a live lease or a malformed
// lease id; 1 a chunk of arg%48 bytes; 2 the trailer, with the right
// CRC-32C of the chunks so far unless arg is odd; 3 a message with no
// kind; 4 the end of the stream.
func uploadScript(script []byte, leaseID string) []*registryv1.UploadRequest {
	var (
		msgs []*registryv1.UploadRequest
		sent []byte
	)
	for i := 0; i+1 < len(script); i += 2 {
		op, arg := script[i], script[i+1]
		switch op % 5 {
		case 0:
			h := &registryv1.UploadHeader{Size: int64(int8(arg)), ContentType: "application/x-fuzz"}
			switch (op >> 3) & 3 {
			case 1:
				h.Labels = map[string]string{"bad key!": "v"}
			case 2:
				h.LeaseId = leaseID
			case 3:
				h.LeaseId = "lse_x"
			}
			msgs = append(msgs, headerMsg(h))
		case 1:
			b := make([]byte, arg%48)
			for k := range b {
				b[k] = byte(i*31 + k)
			}
			sent = append(sent, b...)
			msgs = append(msgs, chunkMsg(b))
		case 2:
			msgs = append(msgs, trailerMsg(crc32c(sent)^uint32(arg&1)))
		case 3:
			msgs = append(msgs, &registryv1.UploadRequest{})
		case 4:
			return msgs
		}
	}
	return msgs
}

// expectUpload says, from the API's contract alone, how an Upload of msgs
// ends: the reason it fails with, or "" and the bytes it stores.
func expectUpload(msgs []*registryv1.UploadRequest) (reason string, data []byte) {
	if len(msgs) == 0 || msgs[0].GetHeader() == nil {
		return ReasonUploadNoHeader, nil
	}
	h := msgs[0].GetHeader()
	switch {
	case h.GetSize() <= 0:
		return ReasonPayloadEmpty, nil
	case h.GetSize() > fuzzUploadMax:
		return "OBJECT_TOO_LARGE", nil
	case h.GetLabels() != nil:
		return ReasonLabelsInvalid, nil
	case h.GetLeaseId() == "lse_x":
		return ReasonLeaseMalformed, nil
	}
	for _, m := range msgs[1:] {
		switch k := m.GetKind().(type) {
		case *registryv1.UploadRequest_Chunk:
			if len(k.Chunk) == 0 {
				return ReasonFieldInvalid, nil // the proto forbids an empty chunk
			}
			if int64(len(data)+len(k.Chunk)) > h.GetSize() {
				return ReasonUploadSize, nil
			}
			data = append(data, k.Chunk...)
		case *registryv1.UploadRequest_Trailer:
			if int64(len(data)) != h.GetSize() {
				return ReasonUploadSize, nil
			}
			if k.Trailer.GetCrc32C() != crc32c(data) {
				return ReasonChecksum, nil
			}
			return "", data
		case *registryv1.UploadRequest_Header:
			return ReasonUploadNoHeader, nil
		default:
			return ReasonRequestEmpty, nil
		}
	}
	return ReasonUploadNoTrailer, nil
}

// FuzzUploadSequence feeds arbitrary sequences of Upload messages to the
// service. Properties: no panic; the upload fails exactly when and with
// the reason the API's contract says, and then stores nothing; a success
// stores exactly the bytes of the chunks.
func FuzzUploadSequence(f *testing.F) {
	codec, err := handle.NewCodec(handle.Config{Key: bytes.Repeat([]byte{2}, 32)})
	if err != nil {
		f.Fatal(err)
	}
	reg := registry.New(registry.Config{Codec: codec, MaxObjectBytes: fuzzUploadMax})
	leases := lease.New(lease.Config{Codec: codec, Registry: reg})
	sess, err := leases.Open(lease.OpenParams{Client: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	svc := &registryService{reg: reg, leases: leases, limits: Limits{MaxObjectBytes: fuzzUploadMax}}

	f.Add([]byte("\x00\x0a\x01\x0a\x02\x00"))         // header 10, chunk 10, trailer: stored
	f.Add([]byte("\x00\x0a\x01\x0a\x02\x01"))         // wrong checksum
	f.Add([]byte("\x00\x0a\x01\x05"))                 // cut off
	f.Add([]byte("\x01\x0a\x00\x0a"))                 // a chunk first
	f.Add([]byte("\x00\x7f\x01\x0a"))                 // too large
	f.Add([]byte("\x10\x14\x01\x0c\x01\x08\x02\x00")) // with a lease, two chunks
	f.Fuzz(func(t *testing.T, script []byte) {
		msgs := uploadScript(script, sess.ID())
		wantReason, wantData := expectUpload(msgs)
		puts := reg.Stats().Puts
		stream := &fakeUpload{msgs: msgs}
		err := svc.Upload(stream)
		if err != nil {
			if r := reasonOf(status.Convert(err)); r != wantReason || wantReason == "" {
				t.Fatalf("Upload of %d messages failed with %q (%v), want %q", len(msgs), r, err, wantReason)
			}
			if got := reg.Stats().Puts; got != puts {
				t.Fatalf("a failed Upload stored something: %d puts, was %d", got, puts)
			}
			return
		}
		if wantReason != "" {
			t.Fatalf("Upload of %d messages stored %v, want it to fail with %q", len(msgs), stream.resp, wantReason)
		}
		h := stream.resp.GetHandle()
		if got := reg.Stats().Puts; got != puts+1 || stream.resp.GetInfo().GetSize() != int64(len(wantData)) {
			t.Fatalf("Upload answered %v after %d puts, was %d", stream.resp, got, puts)
		}
		obj, err := reg.Resolve(h)
		if err == nil && !bytes.Equal(obj.Payload().Bytes(), wantData) {
			t.Fatalf("Resolve returned %q, want %q", obj.Payload().Bytes(), wantData)
		}
		// Unpinned and collected by a GC cycle in between: allowed.
		if err != nil && (!errors.Is(err, registry.ErrCollected) || msgs[0].GetHeader().GetLeaseId() != "") {
			t.Fatalf("Resolve after Upload: %v", err)
		}
		if msgs[0].GetHeader().GetLeaseId() != "" {
			sess.Unpin([]string{h}, 0) // keep the lease small
		}
	})
}
