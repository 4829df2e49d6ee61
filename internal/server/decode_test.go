package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// rawCodec sends and receives raw bytes, so that a test can send what no
// protobuf library would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// garbage returns n byte strings that do not decode as a message like m,
// from a fixed seed.
func garbage(t *testing.T, n int, m proto.Message) [][]byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(14, 5))
	var out [][]byte
	for tries := 0; len(out) < n && tries < 100*n; tries++ {
		b := make([]byte, 1+rng.IntN(64))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if proto.Unmarshal(b, proto.Clone(m)) != nil {
			out = append(out, b)
		}
	}
	if len(out) < n {
		t.Fatalf("only %d of %d random strings fail to decode", len(out), n)
	}
	return out
}

// badUTF8 is m with its string field name set to invalid UTF-8, encoded
// by hand: protobuf's marshaller refuses to.
func badUTF8(t *testing.T, m proto.Message, name string) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	f := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
	if f == nil {
		t.Fatalf("%s has no field %s", m.ProtoReflect().Descriptor().FullName(), name)
	}
	b = protowire.AppendTag(b, f.Number(), protowire.BytesType)
	return protowire.AppendString(b, "caf\xe9")
}

// wantMalformed fails unless err is INVALID_ARGUMENT REQUEST_MALFORMED
// with an ErrorInfo.
func wantMalformed(t *testing.T, what string, err error) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument || reasonOf(st) != ReasonRequestMalformed {
		t.Fatalf("%s: got %v %q (%s), want InvalidArgument %s", what, st.Code(), reasonOf(st), st.Message(), ReasonRequestMalformed)
	}
}

// TestUndecodableRequestIsMalformed: bytes that do not decode as the
// request's message, in a unary call or on a stream, are answered
// INVALID_ARGUMENT REQUEST_MALFORMED with an ErrorInfo, never INTERNAL,
// and reach no handler: nothing is stored.
func TestUndecodableRequestIsMalformed(t *testing.T) {
	w := newWorld(t)
	raw := grpc.ForceCodecV2(rawCodec{})
	before := w.stored(t)

	t.Run("unary", func(t *testing.T) {
		probes := append(garbage(t, 80, &registryv1.PutRequest{}),
			badUTF8(t, &registryv1.PutRequest{Data: []byte("bytes")}, "content_type"))
		for i, p := range probes {
			var out []byte
			err := w.e.conn.Invoke(ctxT(t), "/registry.v1.RegistryService/Put", p, &out, raw)
			wantMalformed(t, fmt.Sprintf("Put probe %d (% x)", i, p), err)
		}
	})
	t.Run("server stream request", func(t *testing.T) {
		desc := &grpc.StreamDesc{ServerStreams: true}
		for _, p := range append(garbage(t, 20, &registryv1.WatchRequest{}), badUTF8(t, &registryv1.WatchRequest{}, "handles")) {
			s, err := w.e.conn.NewStream(ctxT(t), desc, "/registry.v1.RegistryService/Watch", raw)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SendMsg(p); err != nil {
				t.Fatal(err)
			}
			s.CloseSend()
			var out []byte
			wantMalformed(t, "Watch", s.RecvMsg(&out))
		}
	})
	t.Run("lease stream's first message", func(t *testing.T) {
		desc := &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}
		for _, p := range garbage(t, 20, &registryv1.LeaseRequest{}) {
			s, err := w.e.conn.NewStream(ctxT(t), desc, "/registry.v1.RegistryService/Lease", raw)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SendMsg(p); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			var out []byte
			wantMalformed(t, "Lease", s.RecvMsg(&out))
		}
	})
	t.Run("client stream message", func(t *testing.T) {
		desc := &grpc.StreamDesc{ClientStreams: true}
		hdr, err := proto.Marshal(&registryv1.UploadRequest{Kind: &registryv1.UploadRequest_Header{Header: &registryv1.UploadHeader{Size: 3}}})
		if err != nil {
			t.Fatal(err)
		}
		inner := badUTF8(t, &registryv1.UploadHeader{Size: 3}, "content_type")
		nested := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), inner) // UploadRequest.header
		probes := append(garbage(t, 80, &registryv1.UploadRequest{}), nested)
		for _, p := range probes {
			s, err := w.e.conn.NewStream(ctxT(t), desc, "/registry.v1.RegistryService/Upload", raw)
			if err != nil {
				t.Fatal(err)
			}
			// The header, then the garbage as the second message.
			if err := s.SendMsg(hdr); err != nil {
				t.Fatal(err)
			}
			if err := s.SendMsg(p); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			s.CloseSend()
			var out []byte
			wantMalformed(t, "Upload", s.RecvMsg(&out))
		}
	})
	t.Run("details", func(t *testing.T) {
		var out []byte
		err := w.e.conn.Invoke(ctxT(t), "/registry.v1.RegistryService/Stat", badUTF8(t, &registryv1.StatRequest{}, "handle"), &out, raw)
		for _, d := range status.Convert(err).Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain && info.GetReason() == ReasonRequestMalformed {
				return
			}
		}
		t.Fatalf("%v: no ErrorInfo", err)
	})
	t.Run("other services keep gRPC's answer", func(t *testing.T) {
		var out []byte
		err := w.e.conn.Invoke(ctxT(t), "/"+healthpb.Health_ServiceDesc.ServiceName+"/Check",
			badUTF8(t, &healthpb.HealthCheckRequest{}, "service"), &out, raw)
		if status.Code(err) != codes.Internal {
			t.Fatalf("health check of invalid UTF-8: %v, want gRPC's own INTERNAL", err)
		}
	})

	// Only the weak object may have gone meanwhile, to the collector.
	if after := w.stored(t); after != before {
		t.Errorf("%d puts after the probes, %d before", after, before)
	}
	w.checkBystander(t)
}

// stored is how many objects were ever put.
func (w *world) stored(t *testing.T) int64 {
	t.Helper()
	st, err := w.e.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st.GetPuts()
}

// TestMalformedMarkCannotBeForged: a client that sends the mark's field
// itself gets no REQUEST_MALFORMED: only this server's nonce makes one.
func TestMalformedMarkCannotBeForged(t *testing.T) {
	e := newEnv(t, nil)
	b, err := proto.Marshal(&registryv1.PutRequest{Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, markField, protowire.BytesType)
	b = protowire.AppendBytes(b, make([]byte, 40))
	var out []byte
	if err := e.conn.Invoke(context.Background(), "/registry.v1.RegistryService/Put", b, &out, grpc.ForceCodecV2(rawCodec{})); err != nil {
		t.Fatalf("a Put with an unknown field: %v", err)
	}
}

// TestMalformedLeaseRequestKeepsTheLease: bytes that do not decode, sent
// on a lease stream that already holds a pin, are answered on the stream
// (RequestError INVALID_ARGUMENT REQUEST_MALFORMED, request_id 0: it did
// not decode either), and the lease, its pin and the stream stay.
func TestMalformedLeaseRequestKeepsTheLease(t *testing.T) {
	w := newWorld(t)
	s, err := w.e.conn.NewStream(ctxT(t), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
		"/registry.v1.RegistryService/Lease", grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	send := func(b []byte) *registryv1.LeaseResponse {
		t.Helper()
		if err := s.SendMsg(b); err != nil {
			t.Fatal(err)
		}
		var raw []byte
		if err := s.RecvMsg(&raw); err != nil {
			t.Fatalf("the stream ended: %v", err)
		}
		resp := &registryv1.LeaseResponse{}
		if err := proto.Unmarshal(raw, resp); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	marshal := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	id := send(marshal(openReq(""))).GetOpened().GetLeaseId()
	if r := send(marshal(pinReq(w.weak))).GetPinned().GetResults(); len(r) != 1 || r[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_PINNED {
		t.Fatalf("pin: %v", r)
	}
	before := w.snapshot(t)
	// A pin whose handle is not UTF-8, then random bytes.
	pin := protowire.AppendTag(nil, 3, protowire.BytesType) // LeaseRequest.pin
	pin = protowire.AppendBytes(pin, protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "obj_\xe9"))
	probes := append([][]byte{pin}, garbage(t, 20, &registryv1.LeaseRequest{})...)
	for i, p := range probes {
		resp := send(p)
		re := resp.GetError()
		if re == nil || codes.Code(re.GetCode()) != codes.InvalidArgument || re.GetReason() != ReasonRequestMalformed || resp.GetRequestId() != 0 {
			t.Fatalf("probe %d (% x): %v, want error INVALID_ARGUMENT %s with request_id 0", i, p, resp, ReasonRequestMalformed)
		}
	}
	if after := w.snapshot(t); after != before {
		t.Errorf("registry changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if r := send(marshal(pinReq(w.pinned))).GetPinned().GetResults(); len(r) != 1 || r[0].GetOutcome() != registryv1.PinOutcome_PIN_OUTCOME_PINNED {
		t.Fatalf("a pin after the malformed requests: %v", r)
	}
	if in, err := w.e.leases.Lookup(id); err != nil || in.Pins != 2 || !in.Attached {
		t.Errorf("the lease after the malformed requests: %+v, %v", in, err)
	}
}
