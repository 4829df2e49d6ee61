package server

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/observe"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/telemetry"
)

// Large objects move in chunks: Upload keeps each received chunk as a
// piece of the payload (the slice protobuf decoded it into, never copied
// again), and Download sends slices of the stored pieces. Memory on either
// side is the object itself plus a few chunks in flight.

const (
	// defaultChunkSize is Download's chunk size unless the caller asks.
	defaultChunkSize = 1 << 20
	// maxChunkSize bounds a Download chunk: its message then fits gRPC's
	// default 4 MiB receive limit, so any stock client can read it.
	// A larger chunk_size is not refused but capped, as the API says
	// ("at most"), and so is one a server's --max-message-bytes cannot
	// carry; a negative one is refused.
	maxChunkSize = 4<<20 - 64<<10
	// messageOverhead is room for a message's fields beside its payload.
	messageOverhead = 64 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type uploadStream = grpc.ClientStreamingServer[registryv1.UploadRequest, registryv1.UploadResponse]

func (s *registryService) Upload(stream uploadStream) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return endOfUpload(ctx, err)
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return toStatus(fmt.Errorf("%w: the first message is not a header", ErrUploadHeaderMissing), handle.Object)
	}
	// Refuse what cannot succeed before receiving a byte.
	size := hdr.GetSize()
	if size <= 0 {
		return toStatus(registry.ErrPayloadEmpty, handle.Object)
	}
	if limit := s.limits.MaxObjectBytes; limit > 0 && size > limit {
		return toStatus(&registry.LimitError{Limit: registry.LimitObjectSize, Max: limit, Want: size}, handle.Object)
	}
	if err := registry.ValidateLabels(hdr.GetLabels()); err != nil {
		return toStatus(err, handle.Object)
	}
	if err := checkDuration("header.linger", hdr.GetLinger()); err != nil {
		return toStatus(err, handle.Object)
	}
	if err := checkMaxBytes("header.content_type", hdr.GetContentType(), MaxContentTypeBytes); err != nil {
		return toStatus(err, handle.Object)
	}
	if id := hdr.GetLeaseId(); id != "" {
		if _, err := s.leases.ParseID(id); err != nil {
			// As Put with this lease id would say it.
			return toStatus(&lease.NotLiveError{Err: err}, handle.Lease)
		}
		// Another's lease is refused before a byte is received; one not
		// live is left to the Put at the end, as before.
		var notOwned *lease.NotOwnedError
		if err := s.leases.Check(auth.FromContext(ctx), id); errors.As(err, &notOwned) {
			return toStatus(err, handle.Lease)
		}
	}

	// The chunks are held until the trailer: reserve them now, so that
	// uploads that stall half-way cannot take the process's memory, nor
	// one identity's all of the budget.
	releaseOwn, err := s.identity.reserveUpload(ctx, size)
	if err != nil {
		return toStatus(err, handle.Object)
	}
	defer releaseOwn()
	if err := s.uploads.reserve(size); err != nil {
		return toStatus(err, handle.Object)
	}
	defer s.uploads.release(size)

	recv, stop := idleBounded(ctx, stream.Recv, s.stall)
	defer stop()
	pieces := make([][]byte, 0, min(size/defaultChunkSize+1, 1<<16))
	var (
		got int64
		crc uint32
	)
	for {
		m, err := recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return toStatus(&UploadTrailerError{Size: size, Received: got}, handle.Object)
			}
			return streamErr(ctx, err) // cancelled, broken or malformed: nothing is stored
		}
		switch k := m.GetKind().(type) {
		case *registryv1.UploadRequest_Chunk:
			if len(k.Chunk) == 0 {
				return toStatus(fieldErrorf("chunk", "is empty; every chunk carries bytes"), handle.Object)
			}
			if got+int64(len(k.Chunk)) > size {
				return toStatus(&UploadSizeError{Size: size, Received: got + int64(len(k.Chunk))}, handle.Object)
			}
			crc = crc32.Update(crc, castagnoli, k.Chunk)
			pieces = append(pieces, k.Chunk)
			got += int64(len(k.Chunk))
		case *registryv1.UploadRequest_Trailer:
			if got != size {
				return toStatus(&UploadSizeError{Size: size, Received: got}, handle.Object)
			}
			if want := k.Trailer.GetCrc32C(); want != crc {
				return toStatus(&ChecksumError{Got: crc, Want: want}, handle.Object)
			}
			return s.storeUpload(stream, hdr, pieces, crc)
		case *registryv1.UploadRequest_Header:
			return toStatus(fmt.Errorf("%w: a second header came", ErrUploadHeaderMissing), handle.Object)
		default:
			return toStatus(fmt.Errorf("%w: an upload message has no kind; nothing was stored", ErrRequestEmpty), handle.Object)
		}
	}
}

// endOfUpload: a stream that ends before its header stored nothing.
func endOfUpload(ctx context.Context, err error) error {
	if errors.Is(err, io.EOF) {
		return toStatus(fmt.Errorf("%w: the stream ended before it", ErrUploadHeaderMissing), handle.Object)
	}
	return streamErr(ctx, err)
}

func (s *registryService) storeUpload(stream uploadStream, hdr *registryv1.UploadHeader, pieces [][]byte, crc uint32) error {
	who := auth.FromContext(stream.Context())
	meta := registry.Meta{ContentType: hdr.GetContentType(), Labels: hdr.GetLabels(), Linger: s.linger(hdr.GetLinger()), Owner: who.Name}
	pl := registry.Payload{More: pieces, CRC32C: crc, CRCKnown: true}
	var (
		info registry.Info
		err  error
	)
	if id := hdr.GetLeaseId(); id != "" {
		info, err = s.leases.PutPayload(who, id, pl, meta)
	} else {
		info, err = s.reg.PutPayload(pl, meta, nil)
	}
	if err != nil {
		return toStatus(err, handle.Object)
	}
	addEvent(stream.Context(), telemetry.EventPut, func() []attribute.KeyValue {
		return append(putAttrs(info, hdr.GetLeaseId()), attribute.Int("registry.upload.chunks", len(pieces)))
	})
	if err := stream.SendAndClose(&registryv1.UploadResponse{Handle: info.Handle, Info: infoToProto(info)}); err != nil {
		return streamErr(stream.Context(), err)
	}
	return nil
}

// Download sends an object in chunks of chunk_size bytes: 0 means
// defaultChunkSize; a size above maxChunkSize, or above what the server's
// --max-message-bytes lets one message carry, is capped to it; a negative
// one is refused (FIELD_INVALID).
func (s *registryService) Download(req *registryv1.DownloadRequest, stream grpc.ServerStreamingServer[registryv1.DownloadResponse]) error {
	ctx := stream.Context()
	if req.GetChunkSize() < 0 {
		return toStatus(fieldErrorf("chunk_size", "is %d; give 0 for the server's choice, or a positive size", req.GetChunkSize()), handle.Object)
	}
	chunk := int(req.GetChunkSize())
	if chunk == 0 {
		chunk = defaultChunkSize
	}
	chunk = min(chunk, maxChunkSize)
	if m := s.limits.MaxMessageBytes; m > 0 {
		// A chunk's message must fit the server's send limit too.
		chunk = min(chunk, max(m-messageOverhead, m/2, 1))
	}
	obj, err := s.resolve(auth.FromContext(ctx), req.GetHandle(), req.GetLeaseId())
	addEvent(stream.Context(), telemetry.EventResolve, func() []attribute.KeyValue {
		if err != nil {
			return []attribute.KeyValue{telemetry.HandleAttr(req.GetHandle()), telemetry.KeyOutcome.String(observe.ResolveOutcome(err))}
		}
		return append(observe.ObjectAttrs(obj.Info), telemetry.KeyOutcome.String(telemetry.OutcomeHit))
	})
	if err != nil {
		return toStatus(err, handle.Object)
	}
	// obj holds the payload strongly until the last chunk is sent: an
	// object collected meanwhile still downloads whole.
	if err := stream.Send(&registryv1.DownloadResponse{Kind: &registryv1.DownloadResponse_Info{Info: infoToProto(obj.Info)}}); err != nil {
		return streamErr(ctx, err)
	}
	// The checksum is computed once per object, by its upload or its
	// first download, then remembered.
	pl := obj.Payload()
	crc := pl.CRC32C
	msg := &registryv1.DownloadResponse_Chunk{}
	send := func(b []byte) error {
		for len(b) > 0 {
			n := min(chunk, len(b))
			if !pl.CRCKnown {
				crc = crc32.Update(crc, castagnoli, b[:n])
			}
			msg.Chunk = b[:n]
			if err := stream.Send(&registryv1.DownloadResponse{Kind: msg}); err != nil {
				return streamErr(ctx, err)
			}
			b = b[n:]
		}
		return nil
	}
	if err := send(obj.Data); err != nil {
		return err
	}
	for _, piece := range obj.More {
		if err := send(piece); err != nil {
			return err
		}
	}
	if !pl.CRCKnown {
		s.reg.RecordChecksum(obj.Info.ID, crc)
	}
	if err := stream.Send(&registryv1.DownloadResponse{Kind: &registryv1.DownloadResponse_Trailer{Trailer: &registryv1.DownloadTrailer{Crc32C: crc}}}); err != nil {
		return streamErr(ctx, err)
	}
	return nil
}
