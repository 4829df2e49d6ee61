package server

import (
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// batchDecodeSeeds are encodings of batch requests, plain and not: the
// fast decode must agree with protobuf-go on each it takes.
func batchDecodeSeeds() [][]byte {
	str := func(b []byte, num protowire.Number, s string) []byte {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		return protowire.AppendString(b, s)
	}
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		b = protowire.AppendTag(b, num, protowire.VarintType)
		return protowire.AppendVarint(b, v)
	}
	h := "obj_" + strings.Repeat("A", 52)
	many, _ := proto.Marshal(&registryv1.BatchResolveRequest{Handles: []string{h, "", h, "nope"}, LeaseId: "lease_x", WithInfo: true})
	return [][]byte{
		nil,
		many,
		str(nil, 1, h),
		str(str(nil, 2, "first"), 2, "second"), // the last lease_id wins
		varint(varint(nil, 3, 7), 3, 0),        // the last with_info wins
		varint(nil, 3, 2),                      // any non-zero varint is true
		str(nil, 1, "\xff"),                    // invalid UTF-8: protobuf refuses it
		str(nil, 2, "\xc3"),                    // the same in lease_id
		str(nil, 4, "unknown"),                 // an unknown field: kept by protobuf
		varint(nil, 1, 5),                      // handles with the wrong wire type
		varint(nil, 2, 5),                      // lease_id with the wrong wire type
		str(nil, 3, "x"),                       // with_info with the wrong wire type
		str(nil, 1, h)[:20],                    // truncated
		append(varint(nil, 3, 1)[:1], 0xff, 0xff), // a truncated varint
		{0x00}, // field number 0
		append(str(nil, 1, "ok"), str(nil, 1, "é")...), // valid multi-byte UTF-8
	}
}

// TestBatchRequestDecodesAsProtobufWould decodes each seed with the
// batch decoder and with protobuf-go: where the batch decoder takes a
// message, protobuf-go decodes the same message without error; where it
// does not, the message is left untouched for protobuf-go. Plain requests
// must take the fast path. Each encoding is tried whole and split across
// buffers, as gRPC may deliver it.
func TestBatchRequestDecodesAsProtobufWould(t *testing.T) {
	for i, b := range batchDecodeSeeds() {
		checkBatchDecode(t, b)
		if i == 1 || i == 2 {
			if !decodeBatch(mem.BufferSlice{mem.SliceBuffer(b)}, &registryv1.BatchResolveRequest{}) {
				t.Errorf("seed %d, a plain request, was left to protobuf", i)
			}
		}
	}
}

func FuzzBatchRequestDecode(f *testing.F) {
	for _, b := range batchDecodeSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkBatchDecode(t, b) })
}

// checkBatchDecode checks the batch decoder against protobuf-go on b, for
// both batch requests, whole and split in two buffers.
func checkBatchDecode(t *testing.T, b []byte) {
	t.Helper()
	for _, newMsg := range []func() proto.Message{
		func() proto.Message { return &registryv1.BatchResolveRequest{} },
		func() proto.Message { return &registryv1.BatchStatRequest{} },
	} {
		slices := []mem.BufferSlice{{mem.SliceBuffer(b)}}
		if len(b) > 1 {
			slices = append(slices, mem.BufferSlice{mem.SliceBuffer(b[:len(b)/2]), mem.SliceBuffer(b[len(b)/2:])})
		}
		for _, data := range slices {
			got := newMsg()
			ok := decodeBatch(data, got)
			want := newMsg()
			err := proto.Unmarshal(b, want)
			if !ok {
				if !proto.Equal(got, newMsg()) {
					t.Fatalf("%x: the batch decoder declined but changed the message: %v", b, got)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%x: the batch decoder took a message protobuf refuses (%v): %v", b, err, got)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("%x: the batch decoder gave %v; protobuf %v", b, got, want)
			}
		}
	}
}

// TestBatchRequestDecodeAllocatesTwice: a batch request of a thousand
// handles costs two allocations to decode, the handles' slice and their
// shared bytes.
func TestBatchRequestDecodeAllocatesTwice(t *testing.T) {
	hs := make([]string, MaxHandlesPerRequest)
	for i := range hs {
		hs[i] = "obj_" + strings.Repeat(string(rune('A'+i%26)), 52)
	}
	b, err := proto.Marshal(&registryv1.BatchResolveRequest{Handles: hs})
	if err != nil {
		t.Fatal(err)
	}
	data := mem.BufferSlice{mem.SliceBuffer(b)}
	var m registryv1.BatchResolveRequest
	allocs := testing.AllocsPerRun(20, func() {
		if !decodeBatch(data, &m) {
			t.Fatal("a plain request was left to protobuf")
		}
	})
	if allocs > 2 {
		t.Fatalf("decoding %d handles allocated %v times; want 2", len(hs), allocs)
	}
	if len(m.Handles) != len(hs) || m.Handles[999] != hs[999] {
		t.Fatalf("decoded %d handles, the last %q; want %d, %q", len(m.Handles), m.Handles[len(m.Handles)-1], len(hs), hs[999])
	}
}
