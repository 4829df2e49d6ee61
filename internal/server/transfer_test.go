package server

import (
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/registry"
)

// transferLimits let objects of a few MiB move by Upload and Download, and
// 4 MiB chunks fit in a message.
func transferLimits() *Limits {
	l := testLimits
	l.MaxObjectBytes = 16 << 20
	l.MaxMessageBytes = 5 << 20
	l.MaxPinnedBytes = 64 << 20
	l.MaxLinger = time.Minute
	return &l
}

// randomBytes returns n bytes that differ from piece to piece, so that a
// chunk delivered twice, dropped or reordered shows.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func headerMsg(h *registryv1.UploadHeader) *registryv1.UploadRequest {
	return &registryv1.UploadRequest{Kind: &registryv1.UploadRequest_Header{Header: h}}
}

func chunkMsg(b []byte) *registryv1.UploadRequest {
	return &registryv1.UploadRequest{Kind: &registryv1.UploadRequest_Chunk{Chunk: b}}
}

func trailerMsg(crc uint32) *registryv1.UploadRequest {
	return &registryv1.UploadRequest{Kind: &registryv1.UploadRequest_Trailer{Trailer: &registryv1.UploadTrailer{Crc32C: crc}}}
}

// chunked returns the upload of data: hdr (its size set to data's), data
// in chunks of chunk bytes, and the trailer with its CRC-32C.
func chunked(hdr *registryv1.UploadHeader, data []byte, chunk int) []*registryv1.UploadRequest {
	hdr.Size = int64(len(data))
	msgs := []*registryv1.UploadRequest{headerMsg(hdr)}
	for b := data; len(b) > 0; b = b[min(chunk, len(b)):] {
		msgs = append(msgs, chunkMsg(b[:min(chunk, len(b))]))
	}
	return append(msgs, trailerMsg(crc32c(data)))
}

// uploadMsgs sends msgs on one Upload stream, half-closes it and returns
// the server's answer. The server may answer before it has read them all.
func (e *env) uploadMsgs(ctx context.Context, msgs ...*registryv1.UploadRequest) (*registryv1.UploadResponse, error) {
	stream, err := e.rs.Upload(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break // io.EOF: the server has answered; CloseAndRecv says how
		}
	}
	return stream.CloseAndRecv()
}

// upload stores data by Upload in chunks of chunk bytes.
func (e *env) upload(t testing.TB, hdr *registryv1.UploadHeader, data []byte, chunk int) *registryv1.UploadResponse {
	t.Helper()
	resp, err := e.uploadMsgs(ctxT(t), chunked(hdr, data, chunk)...)
	if err != nil {
		t.Fatalf("Upload of %d bytes: %v", len(data), err)
	}
	return resp
}

// downloaded is what one Download delivered.
type downloaded struct {
	info   *registryv1.ObjectInfo
	chunks [][]byte
	crc    uint32 // the trailer's
}

func (d downloaded) bytes() []byte { return bytes.Join(d.chunks, nil) }

// download runs one Download to its end. It fails the test if the stream
// breaks its shape: info first, then chunks, then a trailer, then the end.
func (e *env) download(t testing.TB, h string, chunkSize int32, opts ...grpc.CallOption) (downloaded, error) {
	t.Helper()
	stream, err := e.rs.Download(ctxT(t), &registryv1.DownloadRequest{Handle: h, ChunkSize: chunkSize}, opts...)
	if err != nil {
		return downloaded{}, err
	}
	first, err := stream.Recv()
	if err != nil {
		return downloaded{}, err
	}
	d := downloaded{info: first.GetInfo()}
	if d.info == nil {
		t.Fatalf("download began with %v, not info", first)
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("download of %s after %d chunks: %v", h, len(d.chunks), err)
		}
		if m.GetTrailer() != nil {
			d.crc = m.GetTrailer().GetCrc32C()
			break
		}
		if m.GetInfo() != nil || m.GetKind() == nil {
			t.Fatalf("download of %s: %v after %d chunks", h, m, len(d.chunks))
		}
		d.chunks = append(d.chunks, m.GetChunk())
	}
	if m, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("download of %s: %v, %v after the trailer; want the end", h, m, err)
	}
	return d, nil
}

// mustDownload downloads h and checks its bytes, its trailer's checksum
// and that no chunk is larger than wantChunk; it returns the chunks.
func (e *env) mustDownload(t testing.TB, h string, chunkSize int32, want []byte, wantChunk int, opts ...grpc.CallOption) [][]byte {
	t.Helper()
	d, err := e.download(t, h, chunkSize, opts...)
	if err != nil {
		t.Fatalf("Download(%s, chunk_size %d): %v", h, chunkSize, err)
	}
	if d.info.GetHandle() != h || d.info.GetSize() != int64(len(want)) {
		t.Fatalf("download info = %v; want %s of %d bytes", d.info, h, len(want))
	}
	if !bytes.Equal(d.bytes(), want) {
		t.Fatalf("downloaded %d bytes that differ from the %d stored", len(d.bytes()), len(want))
	}
	if d.crc != crc32c(want) {
		t.Fatalf("trailer CRC-32C %08x, want %08x", d.crc, crc32c(want))
	}
	for i, c := range d.chunks {
		if len(c) == 0 || len(c) > wantChunk {
			t.Fatalf("chunk %d is %d bytes, want 1 to %d", i, len(c), wantChunk)
		}
	}
	return d.chunks
}

// TestUploadThenDownloadRoundTrip uploads a multi-chunk object pinned by
// a lease and downloads it with several chunk sizes: the same bytes, the
// trailer's CRC-32C right, chunk_size honoured.
func TestUploadThenDownloadRoundTrip(t *testing.T) {
	e := newEnvWith(t, envOptions{limits: transferLimits()})
	lc := e.openLease(t, "uploader", 0)
	data := randomBytes(3<<20+123, 1)
	resp := e.upload(t, &registryv1.UploadHeader{ContentType: "application/octet-stream",
		Labels: map[string]string{"kind": "blob"}, LeaseId: lc.id}, data, 1<<20)
	info := resp.GetInfo()
	if resp.GetHandle() == "" || info.GetHandle() != resp.GetHandle() || info.GetSize() != int64(len(data)) ||
		info.GetState() != registryv1.ObjectState_OBJECT_STATE_PINNED || info.GetPinCount() != 1 ||
		info.GetContentType() != "application/octet-stream" || info.GetLabels()["kind"] != "blob" {
		t.Fatalf("Upload answered %v", resp)
	}
	h := resp.GetHandle()
	// The pieces came in 1 MiB: a chunk size dividing that gives
	// ceil(size/chunk) chunks.
	for _, tt := range []struct {
		chunkSize  int32
		wantChunk  int
		wantChunks int
	}{
		{chunkSize: 64 << 10, wantChunk: 64 << 10, wantChunks: 3*16 + 1},
		{chunkSize: 256 << 10, wantChunk: 256 << 10, wantChunks: 3*4 + 1},
		{chunkSize: 0, wantChunk: defaultChunkSize, wantChunks: 4},
		{chunkSize: 1<<31 - 1, wantChunk: maxChunkSize, wantChunks: 4}, // capped; chunks never span pieces
	} {
		if got := e.mustDownload(t, h, tt.chunkSize, data, tt.wantChunk); len(got) != tt.wantChunks {
			t.Fatalf("chunk_size %d: %d chunks, want %d", tt.chunkSize, len(got), tt.wantChunks)
		}
	}
	// Resolve, Stat and the stats agree with the upload.
	st, err := e.rs.Stat(ctxT(t), &registryv1.StatRequest{Handle: h})
	if err != nil || st.GetInfo().GetSize() != int64(len(data)) {
		t.Fatalf("Stat = %v, %v", st, err)
	}
	stats, err := e.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if stats.GetPuts() != 1 || stats.GetPins() != 1 {
		t.Fatalf("stats: %d puts, %d pins; want 1, 1", stats.GetPuts(), stats.GetPins())
	}
	lc.close()
}

// TestDownloadChunkSizeIsCapped: a chunk_size over the cap is cut to it,
// so that a client with gRPC's default 4 MiB receive limit reads every
// chunk, and chunks never outgrow the server's message limit.
func TestDownloadChunkSizeIsCapped(t *testing.T) {
	bigRecv := grpc.MaxCallRecvMsgSize(16 << 20)
	t.Run("at 4 MiB", func(t *testing.T) {
		e := newEnvWith(t, envOptions{limits: transferLimits()})
		lc := e.openLease(t, "capped", 0)
		// One piece larger than a chunk: put, not uploaded.
		data := randomBytes(maxChunkSize+1000, 2)
		info, err := e.leases.Put(auth.Anonymous, lc.id, data, registry.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		got := e.mustDownload(t, info.Handle, 8<<20, data, maxChunkSize) // gRPC's default receive limit
		if len(got) != 2 || len(got[0]) != maxChunkSize {
			t.Fatalf("chunk_size 8 MiB: %d chunks, the first of %d bytes; want 2, of %d", len(got), len(got[0]), maxChunkSize)
		}
		lc.close()
	})
	t.Run("within the message limit", func(t *testing.T) {
		l := transferLimits()
		l.MaxMessageBytes = 1 << 20
		e := newEnvWith(t, envOptions{limits: l})
		lc := e.openLease(t, "small messages", 0)
		data := randomBytes(3<<20, 3)
		info, err := e.leases.Put(auth.Anonymous, lc.id, data, registry.Meta{})
		if err != nil {
			t.Fatal(err)
		}
		for _, chunkSize := range []int32{0, 1 << 20, 4 << 20} {
			e.mustDownload(t, info.Handle, chunkSize, data, l.MaxMessageBytes-messageOverhead, bigRecv)
		}
		lc.close()
	})
}

// metadataOf returns the ErrorInfo metadata of err.
func metadataOf(err error) map[string]string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetMetadata()
		}
	}
	return nil
}

// TestResolveOfObjectLargerThanAMessage: unary Resolve refuses an object
// that does not fit in one message, naming the limit; Download serves it.
func TestResolveOfObjectLargerThanAMessage(t *testing.T) {
	l := transferLimits()
	l.MaxMessageBytes = 1 << 20
	e := newEnvWith(t, envOptions{limits: l})
	lc := e.openLease(t, "large", 0)
	largest := l.MaxMessageBytes - messageOverhead // the largest Resolve serves
	for _, tt := range []struct {
		size     int
		tooLarge bool
	}{
		{size: largest, tooLarge: false},
		{size: largest + 1, tooLarge: true},
		{size: 2 << 20, tooLarge: true},
	} {
		data := randomBytes(tt.size, uint64(tt.size))
		h := e.upload(t, &registryv1.UploadHeader{LeaseId: lc.id}, data, 256<<10).GetHandle()
		resp, err := e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: h})
		if !tt.tooLarge {
			if err != nil || !bytes.Equal(resp.GetData(), data) {
				t.Fatalf("Resolve of %d bytes: %d bytes, %v; want the object", tt.size, len(resp.GetData()), err)
			}
		} else {
			wantStatus(t, err, codes.ResourceExhausted, ReasonMessageTooLarge)
			want := map[string]string{"max": strconv.Itoa(l.MaxMessageBytes), "want": strconv.Itoa(tt.size)}
			if md := metadataOf(err); md["max"] != want["max"] || md["want"] != want["want"] {
				t.Fatalf("Resolve of %d bytes: metadata %v, want %v", tt.size, md, want)
			}
		}
		e.mustDownload(t, h, 0, data, l.MaxMessageBytes-messageOverhead)
	}
	lc.close()
}

// TestLingerIsCappedByTheServer: Put and Upload ask for a linger; the
// object gets at most --max-linger. (A negative one is refused: see
// TestBadInputChangesNothingForOthers.)
func TestLingerIsCappedByTheServer(t *testing.T) {
	maxLinger := transferLimits().MaxLinger
	noCap := transferLimits()
	noCap.MaxLinger = 0
	tests := []struct {
		name   string
		limits *Limits
		ask    *durationpb.Duration
		want   time.Duration // 0: none, so WEAK
	}{
		{"over the cap", transferLimits(), durationpb.New(time.Hour), maxLinger},
		{"at the cap", transferLimits(), durationpb.New(maxLinger), maxLinger},
		{"under the cap", transferLimits(), durationpb.New(30 * time.Second), 30 * time.Second},
		{"none", transferLimits(), nil, 0},
		{"server allows none", noCap, durationpb.New(time.Hour), 0},
	}
	calls := []struct {
		name string
		put  func(t *testing.T, e *env, linger *durationpb.Duration) *registryv1.ObjectInfo
	}{
		{"Put", func(t *testing.T, e *env, linger *durationpb.Duration) *registryv1.ObjectInfo {
			resp, err := e.rs.Put(ctxT(t), &registryv1.PutRequest{Data: []byte("lingering"), Linger: linger})
			if err != nil {
				t.Fatal(err)
			}
			return resp.GetInfo()
		}},
		{"Upload", func(t *testing.T, e *env, linger *durationpb.Duration) *registryv1.ObjectInfo {
			return e.upload(t, &registryv1.UploadHeader{Linger: linger}, []byte("lingering"), 4).GetInfo()
		}},
	}
	for _, call := range calls {
		for _, tt := range tests {
			t.Run(call.name+" "+tt.name, func(t *testing.T) {
				e := newEnvWith(t, envOptions{limits: tt.limits})
				before := time.Now()
				info := call.put(t, e, tt.ask)
				if tt.want == 0 {
					if info.GetLinger() != nil || info.GetLingerUntil() != nil || info.GetState() != registryv1.ObjectState_OBJECT_STATE_WEAK {
						t.Fatalf("asked for linger %v: %v, linger %v until %v; want WEAK, no linger",
							tt.ask.AsDuration(), info.GetState(), info.GetLinger(), info.GetLingerUntil())
					}
					return
				}
				until := info.GetLingerUntil().AsTime()
				if info.GetLinger().AsDuration() != tt.want || info.GetState() != registryv1.ObjectState_OBJECT_STATE_LINGERING ||
					until.Before(before.Add(tt.want)) || until.After(time.Now().Add(tt.want)) {
					t.Fatalf("asked for linger %v: %v, linger %v until %v; want LINGERING for %v",
						tt.ask.AsDuration(), info.GetState(), info.GetLinger().AsDuration(), until, tt.want)
				}
				// Deleting it stops its timer.
				if _, err := e.admin.DeleteObject(ctxT(t), &registryv1.DeleteObjectRequest{Handle: info.GetHandle()}); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// noAutoGC turns off the collector's own cycles for the test, so that the
// world's weak object is not collected between two snapshots.
func noAutoGC(t testing.TB) {
	old := debug.SetGCPercent(-1)
	t.Cleanup(func() { debug.SetGCPercent(old) })
}

// TestBadTransferChangesNothingForOthers sends each kind of bad Upload
// and Download and checks the exact code and reason, and that the
// registry as others see it did not change.
func TestBadTransferChangesNothingForOthers(t *testing.T) {
	hdr := func(size int64) *registryv1.UploadRequest {
		return headerMsg(&registryv1.UploadHeader{Size: size})
	}
	ten := []byte("0123456789")
	cases := []struct {
		name   string
		msgs   func(w *world) []*registryv1.UploadRequest
		code   codes.Code
		reason string
	}{
		{"first message a chunk", func(*world) []*registryv1.UploadRequest {
			return []*registryv1.UploadRequest{chunkMsg(ten), trailerMsg(crc32c(ten))}
		}, codes.InvalidArgument, ReasonUploadNoHeader},
		{"first message a trailer", func(*world) []*registryv1.UploadRequest {
			return []*registryv1.UploadRequest{trailerMsg(0)}
		}, codes.InvalidArgument, ReasonUploadNoHeader},
		{"stream ends before any message", func(*world) []*registryv1.UploadRequest {
			return nil
		}, codes.InvalidArgument, ReasonUploadNoHeader},
		{"size 0", func(*world) []*registryv1.UploadRequest {
			return []*registryv1.UploadRequest{hdr(0), trailerMsg(0)}
		}, codes.InvalidArgument, ReasonPayloadEmpty},
		{"negative size", func(*world) []*registryv1.UploadRequest {
			return []*registryv1.UploadRequest{hdr(-10), chunkMsg(ten)}
		}, codes.InvalidArgument, ReasonPayloadEmpty},
		{"size over the max object", func(*world) []*registryv1.UploadRequest {
			return []*registryv1.UploadRequest{hdr(testLimits.MaxObjectBytes + 1)}
		}, codes.ResourceExhausted, "OBJECT_TOO_LARGE"},
		{"bad labels", func(*world) []*registryv1.UploadRequest {
			return chunked(&registryv1.UploadHeader{Labels: map[string]string{"bad key!": "v"}}, ten, 4)
		}, codes.InvalidArgument, ReasonLabelsInvalid},
		{"malformed lease id", func(*world) []*registryv1.UploadRequest {
			return chunked(&registryv1.UploadHeader{LeaseId: "lse_nope"}, ten, 4)
		}, codes.InvalidArgument, ReasonLeaseMalformed},
		{"object handle as lease id", func(w *world) []*registryv1.UploadRequest {
			return chunked(&registryv1.UploadHeader{LeaseId: w.pinned}, ten, 4)
		}, codes.InvalidArgument, ReasonLeaseMalformed},
		{"unknown lease", func(w *world) []*registryv1.UploadRequest {
			_, id := w.e.codec.New(handle.Lease) // genuine, never opened
			return chunked(&registryv1.UploadHeader{LeaseId: id}, ten, 4)
		}, codes.FailedPrecondition, ReasonLeaseNotFound},
		{"more bytes than the header", func(*world) []*registryv1.UploadRequest {
			return []*registryv1.UploadRequest{hdr(9), chunkMsg(ten[:5]), chunkMsg(ten[5:]), trailerMsg(crc32c(ten))}
		}, codes.InvalidArgument, ReasonUploadSize},
		{"trailer before all bytes", func(*world) []*registryv1.UploadRequest {
			return []*registryv1.UploadRequest{hdr(11), chunkMsg(ten), trailerMsg(crc32c(ten))}
		}, codes.InvalidArgument, ReasonUploadSize},
		{"trailer with no bytes", func(*world) []*registryv1.UploadRequest {
			return []*registryv1.UploadRequest{hdr(10), trailerMsg(0)}
		}, codes.InvalidArgument, ReasonUploadSize},
		{"half-closed without a trailer", func(*world) []*registryv1.UploadRequest {
			return []*registryv1.UploadRequest{hdr(10), chunkMsg(ten)}
		}, codes.InvalidArgument, ReasonUploadNoTrailer},
		{"wrong CRC", func(*world) []*registryv1.UploadRequest {
			return []*registryv1.UploadRequest{hdr(10), chunkMsg(ten), trailerMsg(crc32c(ten) ^ 1)}
		}, codes.DataLoss, ReasonChecksum},
		{"chunks out of order", func(*world) []*registryv1.UploadRequest {
			return []*registryv1.UploadRequest{hdr(10), chunkMsg(ten[5:]), chunkMsg(ten[:5]), trailerMsg(crc32c(ten))}
		}, codes.DataLoss, ReasonChecksum},
		{"second header", func(*world) []*registryv1.UploadRequest {
			return []*registryv1.UploadRequest{hdr(10), chunkMsg(ten[:5]), hdr(10), chunkMsg(ten[5:]), trailerMsg(crc32c(ten))}
		}, codes.InvalidArgument, ReasonUploadNoHeader},
		{"message with no kind", func(*world) []*registryv1.UploadRequest {
			return []*registryv1.UploadRequest{hdr(10), {}, chunkMsg(ten), trailerMsg(crc32c(ten))}
		}, codes.InvalidArgument, ReasonRequestEmpty},
	}
	for _, c := range cases {
		t.Run("upload "+c.name, func(t *testing.T) {
			noAutoGC(t)
			w := newWorld(t)
			before := w.snapshot(t)
			_, err := w.e.uploadMsgs(ctxT(t), c.msgs(w)...)
			wantStatus(t, err, c.code, c.reason)
			if after := w.snapshot(t); after != before {
				t.Errorf("registry changed:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			w.checkBystander(t)
		})
	}
	t.Run("size mismatch metadata", func(t *testing.T) {
		_, err := newEnv(t, nil).uploadMsgs(ctxT(t), hdr(9), chunkMsg(ten))
		if md := metadataOf(err); md["size"] != "9" || md["received"] != "10" {
			t.Errorf("UPLOAD_SIZE_MISMATCH metadata %v, want size 9, received 10", md)
		}
	})

	t.Run("upload cancelled mid-way", func(t *testing.T) {
		noAutoGC(t)
		w := newWorld(t)
		before := w.snapshot(t)
		ctx, cancel := context.WithCancel(ctxT(t))
		stream, err := w.e.rs.Upload(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range []*registryv1.UploadRequest{hdr(10), chunkMsg(ten[:5])} {
			if err := stream.Send(m); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
		if _, err := stream.CloseAndRecv(); status.Code(err) != codes.Canceled {
			t.Fatalf("cancelled upload: %v, want CANCELED", err)
		}
		if after := w.snapshot(t); after != before {
			t.Errorf("registry changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		w.checkBystander(t)
	})

	// Download of a handle that Resolve refuses fails the same way,
	// before any message.
	t.Run("download", func(t *testing.T) {
		noAutoGC(t)
		w := newWorld(t)
		before := w.snapshot(t)
		for _, tt := range []struct {
			name, handle string
			code         codes.Code
			reason       string
		}{
			{"malformed", "obj_not-a-handle", codes.InvalidArgument, ReasonHandleMalformed},
			{"empty", "", codes.InvalidArgument, ReasonHandleMalformed},
			{"lease id", w.bystander.id, codes.InvalidArgument, ReasonHandleMalformed},
			{"never issued", w.foreignKey, codes.NotFound, ReasonHandleUnknown},
			{"collected", w.collected, codes.NotFound, ReasonCollected},
			{"deleted", w.deleted, codes.NotFound, ReasonDeleted},
		} {
			_, rerr := w.e.rs.Resolve(ctxT(t), &registryv1.ResolveRequest{Handle: tt.handle})
			wantStatus(t, rerr, tt.code, tt.reason)
			_, derr := w.e.download(t, tt.handle, 0)
			wantStatus(t, derr, tt.code, tt.reason)
			if status.Convert(derr).Message() != status.Convert(rerr).Message() {
				t.Errorf("%s: Download says %q, Resolve %q", tt.name, status.Convert(derr).Message(), status.Convert(rerr).Message())
			}
		}
		if after := w.snapshot(t); after != before {
			t.Errorf("registry changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		w.checkBystander(t)
	})
}
