package server

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec bufpool.Codec falls back on
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/weakref/registry/internal/bufpool"
	"github.com/weakref/registry/internal/handle"
)

// A request whose bytes do not decode is the caller's mistake, but gRPC-Go
// answers it itself, INTERNAL with no ErrorInfo, before any interceptor or
// handler runs: its recv wraps the codec's Unmarshal error as
// codes.Internal. The one hook it leaves is the server codec
// (grpc.ForceServerCodecV2). So decodeCodec, for registry.v1 messages
// only, does not fail: it empties the message and records the failure in
// it, and the interceptors below, which see every request message before
// a handler does, answer INVALID_ARGUMENT REQUEST_MALFORMED instead.
// Other services (health, reflection) keep gRPC's behaviour.
//
// The failure is recorded in the message itself, as an unknown field
// that starts with a random nonce of this server: no state outside the
// message, nothing to leak if a call ends early, and a client cannot
// forge the mark.

// registryPackage prefixes the full name of every message decodeCodec
// watches.
const registryPackage = "registry.v1."

// markField is the field number of the mark: the largest there is, which
// no registry message uses.
const markField = protowire.MaxValidNumber

// decodeCodec is gRPC's proto codec, except that a registry.v1 request
// that does not decode is marked instead of failed.
type decodeCodec struct {
	encoding.CodecV2
	nonce [16]byte
}

func newDecodeCodec() *decodeCodec {
	// bufpool's codec is gRPC's proto codec, with buffers not cleared
	// before they are filled: gRPC's clears 1 MiB for any message over
	// 32 KiB, a sixth of registryd's CPU under BatchResolve.
	c := &decodeCodec{CodecV2: bufpool.Codec{}}
	rand.Read(c.nonce[:]) // never fails (crypto/rand since Go 1.24)
	return c
}

func (c *decodeCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*rawRequest); ok {
		r.data = data.Materialize()
		return nil
	}
	if decodeBatch(data, v) {
		return nil
	}
	err := c.CodecV2.Unmarshal(data, v)
	if err == nil {
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok || !strings.HasPrefix(string(m.ProtoReflect().Descriptor().FullName()), registryPackage) {
		return err
	}
	// Nothing partly decoded may reach a handler.
	proto.Reset(m)
	mark := protowire.AppendTag(nil, markField, protowire.BytesType)
	mark = protowire.AppendBytes(mark, append(c.nonce[:], err.Error()...))
	m.ProtoReflect().SetUnknown(mark)
	return nil
}

// rawRequest is a request's bytes as they came, which decodeCodec leaves
// undecoded, for a goroutine that is to stay shallow while it receives
// (see receive): decodeRequest decodes them later, elsewhere.
type rawRequest struct{ data []byte }

// decodeRequest decodes raw into m as decodeCodec and decodeStream would
// have: a failure is the *MalformedError a handler would have received.
func decodeRequest(raw []byte, m proto.Message) error {
	if err := proto.Unmarshal(raw, m); err != nil {
		proto.Reset(m) // nothing partly decoded may reach a handler
		return &MalformedError{
			Message: string(m.ProtoReflect().Descriptor().FullName()),
			Err:     errors.New(strings.TrimPrefix(err.Error(), "proto: ")),
		}
	}
	return nil
}

// failure returns the *MalformedError recorded in v, or nil.
func (c *decodeCodec) failure(v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return nil
	}
	unknown := m.ProtoReflect().GetUnknown()
	num, typ, n := protowire.ConsumeTag(unknown)
	if n < 0 || num != markField || typ != protowire.BytesType {
		return nil
	}
	val, k := protowire.ConsumeBytes(unknown[n:])
	if k < 0 || n+k != len(unknown) || !bytes.HasPrefix(val, c.nonce[:]) {
		return nil
	}
	return &MalformedError{
		Message: string(m.ProtoReflect().Descriptor().FullName()),
		Err:     errors.New(strings.TrimPrefix(string(val[len(c.nonce):]), "proto: ")),
	}
}

// chain.inner answers a marked request with its failure, and wraps a
// stream in a decodeStream, whose RecvMsg fails for a marked message. The
// stream goes on after a marked message: its next one is received as
// usual.
type decodeStream struct {
	grpc.ServerStream
	codec *decodeCodec
}

func (s *decodeStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.codec.failure(m)
}

// GRPCStatus makes a *MalformedError a status wherever it goes, so that a
// handler may return what Recv gave it as it is, while statusOf still
// sees the error itself.
func (e *MalformedError) GRPCStatus() *status.Status {
	return status.Convert(toStatus(e, handle.Object))
}
