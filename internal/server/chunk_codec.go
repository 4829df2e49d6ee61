package server

import (
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// downloadChunkField is DownloadResponse's chunk, in the API.
const downloadChunkField = 2

// Marshal is the proto codec's, except for a Download chunk: its bytes go
// to gRPC as they are stored, behind a few bytes of tag and length, where
// the proto codec would take a buffer from gRPC's pool, zero it and copy
// the chunk in. That copy and that zeroing were most of a Download's
// server CPU beside the socket writes. A payload is immutable and the
// transport only reads it, so sharing it is safe; the bytes on the wire
// are the proto codec's, byte for byte.
func (c *decodeCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*registryv1.DownloadResponse); ok {
		if k, ok := m.GetKind().(*registryv1.DownloadResponse_Chunk); ok && len(m.ProtoReflect().GetUnknown()) == 0 {
			return chunkMessage(k.Chunk), nil
		}
	}
	return c.CodecV2.Marshal(v)
}

// chunkMessage is a DownloadResponse holding chunk, encoded: the chunk's
// tag and length, then chunk itself, not copied.
func chunkMessage(chunk []byte) mem.BufferSlice {
	hdr := make([]byte, 0, 1+protowire.SizeVarint(uint64(len(chunk))))
	hdr = protowire.AppendTag(hdr, downloadChunkField, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(len(chunk)))
	return mem.BufferSlice{mem.SliceBuffer(hdr), mem.SliceBuffer(chunk)}
}
