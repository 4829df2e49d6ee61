package bufpool

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec Codec wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Codec is gRPC's proto codec, except that it marshals into buffers of
// Default, and gathers a message received in several buffers into one of
// Default to unmarshal it, which it does not clear first: a marshal fills
// exactly the message's size, a gather copies exactly its length. Use it
// with
// grpc.ForceCodecV2 (a client) or grpc.ForceServerCodecV2 (a server).
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name is gRPC's proto codec's: the content-subtype stays "proto".
func (Codec) Name() string { return "proto" }

// Marshal encodes v, a proto.Message.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return encoding.GetCodecV2("proto").Marshal(v)
	}
	size := proto.Size(m)
	if mem.IsBelowBufferPoolingThreshold(size) {
		return encoding.GetCodecV2("proto").Marshal(v)
	}
	buf := Default.Get(size)
	// UseCachedSize reuses the sizes proto.Size just computed; the
	// message does not change meanwhile (gRPC's codec assumes the same).
	out, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		Default.Put(buf)
		return nil, fmt.Errorf("proto: failed to marshal %T: %w", v, err)
	}
	if len(out) != size || cap(out) != cap(*buf) {
		// Not what Size said, or marshalled elsewhere: send it as it is.
		Default.Put(buf)
		return mem.BufferSlice{mem.SliceBuffer(out)}, nil
	}
	*buf = out
	return mem.BufferSlice{mem.NewBuffer(buf, Default)}, nil
}

// Unmarshal decodes data into v, a proto.Message.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return encoding.GetCodecV2("proto").Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(Default)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}
