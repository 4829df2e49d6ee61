package client

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"google.golang.org/grpc/codes"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// chunkSize is how many bytes each Upload message carries: big enough
// that per-message costs vanish (a 1 GiB upload runs as fast as with 1 MiB
// chunks), small enough to fit a server whose message limit was lowered
// as far as 256 KiB (hence the room for the message's own bytes), and to
// keep memory bounded.
const chunkSize = 256<<10 - 64

// reasonMessageTooLarge is the server's answer to a Resolve of an object
// larger than one message.
const reasonMessageTooLarge = "MESSAGE_TOO_LARGE"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrChecksum means the bytes a Download received do not match the checksum
// the server sent with them.
var ErrChecksum = errors.New("registry: checksum mismatch")

// Upload stores an object read from r, which must yield exactly size
// bytes, in chunks: any size up to the server's max object size, with
// memory bounded by one chunk. The server checks the size and a CRC-32C of
// the bytes, and stores nothing if either is wrong or the upload is cut
// off (ctx cancelled, r failing).
func (c *Client) Upload(ctx context.Context, r io.Reader, size int64, opts ...PutOption) (Info, error) {
	p := putParamsOf(opts)
	if c.cl != nil {
		n, part, p, err := c.cl.placePut(ctx, p)
		if err != nil {
			return Info{}, err
		}
		info, err := n.c.upload(ctx, r, size, p)
		if err == nil && part != nil {
			p.lease.cl.track(part, info.Handle, true)
		}
		return info, err
	}
	return c.upload(ctx, r, size, p)
}

func (c *Client) upload(ctx context.Context, r io.Reader, size int64, p putParams) (Info, error) {
	if size <= 0 {
		return Info{}, fmt.Errorf("registry: upload size must be positive, got %d", size)
	}
	if p.lease != nil && p.leaseID == "" {
		return Info{}, errClusterLease
	}
	uctx, cancel := context.WithCancel(ctx)
	defer cancel() // an early return cuts the stream: the server stores nothing
	stream, err := c.rpc.Upload(uctx)
	if err != nil {
		return Info{}, fromStatus(err)
	}
	header := &registryv1.UploadHeader{
		Size: size, ContentType: p.contentType, Labels: p.labels, LeaseId: p.leaseID, Linger: durationOrNil(p.linger),
	}
	if err := stream.Send(&registryv1.UploadRequest{Kind: &registryv1.UploadRequest_Header{Header: header}}); err != nil {
		return Info{}, uploadError(stream, err)
	}
	buf := make([]byte, min(int64(chunkSize), size))
	var crc uint32
	for sent := int64(0); sent < size; {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-sent)])
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				err = fmt.Errorf("registry: upload source ended after %d of %d bytes", sent+int64(n), size)
			}
			return Info{}, err
		}
		crc = crc32.Update(crc, castagnoli, buf[:n])
		// gRPC encodes the message before SendMsg returns, so buf may be
		// filled again at once.
		if err := stream.Send(&registryv1.UploadRequest{Kind: &registryv1.UploadRequest_Chunk{Chunk: buf[:n]}}); err != nil {
			return Info{}, uploadError(stream, err)
		}
		sent += int64(n)
	}
	trailer := &registryv1.UploadTrailer{Crc32C: crc}
	if err := stream.Send(&registryv1.UploadRequest{Kind: &registryv1.UploadRequest_Trailer{Trailer: trailer}}); err != nil {
		return Info{}, uploadError(stream, err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return Info{}, fromStatus(err)
	}
	return infoFrom(resp.GetInfo()), nil
}

// uploadError: a Send fails with io.EOF when the server has ended the
// stream; its reason is in CloseAndRecv's status.
func uploadError(stream registryv1.RegistryService_UploadClient, err error) error {
	if errors.Is(err, io.EOF) {
		_, err = stream.CloseAndRecv()
	}
	return fromStatus(err)
}

// Download writes the object's bytes to w, in chunks, and returns its
// metadata. It checks the bytes against the server's CRC-32C and returns
// an error matching ErrChecksum if they differ: w has then received bytes
// that must not be trusted.
func (c *Client) Download(ctx context.Context, handle string, w io.Writer) (Info, error) {
	if c.cl != nil {
		n, err := c.cl.route(ctx, handle)
		if err != nil {
			return Info{}, err
		}
		return n.c.download(ctx, handle, "", w)
	}
	return c.download(ctx, handle, "", w)
}

// download is Download, pinning with the lease leaseID first when it is
// not "".
func (c *Client) download(ctx context.Context, handle, leaseID string, w io.Writer) (Info, error) {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.rpc.Download(dctx, &registryv1.DownloadRequest{Handle: handle, LeaseId: leaseID})
	if err != nil {
		return Info{}, fromStatus(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return Info{}, fromStatus(err)
	}
	if first.GetInfo() == nil {
		return Info{}, fmt.Errorf("registry: download began with %T, not the object's info", first.GetKind())
	}
	info := infoFrom(first.GetInfo())
	var (
		crc uint32
		got int64
	)
	for {
		m, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("registry: download of %s ended after %d of %d bytes without a trailer", handle, got, info.Size)
			}
			return info, fromStatus(err)
		}
		switch k := m.GetKind().(type) {
		case *registryv1.DownloadResponse_Chunk:
			crc = crc32.Update(crc, castagnoli, k.Chunk)
			got += int64(len(k.Chunk))
			if _, err := w.Write(k.Chunk); err != nil {
				return info, err
			}
		case *registryv1.DownloadResponse_Trailer:
			if got != info.Size || k.Trailer.GetCrc32C() != crc {
				return info, &Error{
					Code: codes.DataLoss, Reason: "CHECKSUM_MISMATCH", kind: ErrChecksum,
					Message: fmt.Sprintf("received %d of %d bytes with CRC-32C %08x, server sent %08x", got, info.Size, crc, k.Trailer.GetCrc32C()),
				}
			}
			return info, endOfStream(stream.Recv)
		default:
			return info, fmt.Errorf("registry: unexpected %T in a download", k)
		}
	}
}

// endOfStream reads a server stream past its last expected message, to
// the server's status, and returns nil if that is OK. A call left there
// would end when its context is cancelled, as CANCELLED, in its span and
// in the server's metrics, although the server answered it in full.
func endOfStream[M any](recv func() (M, error)) error {
	_, err := recv()
	if errors.Is(err, io.EOF) {
		return nil
	}
	if err == nil {
		return errors.New("registry: the server sent more after the end of a stream")
	}
	return fromStatus(err)
}
