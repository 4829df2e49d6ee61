package server

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// A Download chunk encodes to the proto codec's bytes exactly, without
// copying the chunk: the client cannot tell the two apart.
func TestDownloadChunkEncodesAsProtoWithoutCopy(t *testing.T) {
	c := newDecodeCodec()
	for _, size := range []int{1, 127, 128, 16 << 10, 1 << 20, maxChunkSize} {
		chunk := bytes.Repeat([]byte{0xa5}, size)
		m := &registryv1.DownloadResponse{Kind: &registryv1.DownloadResponse_Chunk{Chunk: chunk}}
		want, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Materialize(), want) {
			t.Fatalf("chunk of %d bytes: the encoding differs from proto's", size)
		}
		last := got[len(got)-1].ReadOnlyData()
		if &last[0] != &chunk[0] {
			t.Fatalf("chunk of %d bytes was copied", size)
		}
		var back registryv1.DownloadResponse
		if err := c.Unmarshal(got, &back); err != nil || !bytes.Equal(back.GetChunk(), chunk) {
			t.Fatalf("chunk of %d bytes does not decode back: %v", size, err)
		}
	}
}

// Every other message is the proto codec's own.
func TestOtherMessagesEncodeAsProto(t *testing.T) {
	c := newDecodeCodec()
	for _, m := range []proto.Message{
		&registryv1.DownloadResponse{Kind: &registryv1.DownloadResponse_Trailer{Trailer: &registryv1.DownloadTrailer{Crc32C: 7}}},
		&registryv1.DownloadResponse{Kind: &registryv1.DownloadResponse_Info{Info: &registryv1.ObjectInfo{Size: 3}}},
		&registryv1.DownloadResponse{},
		&registryv1.LeaseResponse{RequestId: 9},
	} {
		want, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Materialize(), want) {
			t.Fatalf("%T %v: the encoding differs from proto's", m, m)
		}
	}
}
