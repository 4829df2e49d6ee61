package client_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// randomBytes returns n reproducible bytes.
func randomBytes(n int, seed uint64) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed)})
	b := make([]byte, n)
	r.Read(b)
	return b
}

func TestLargeObjectsGoByUploadAndDownload(t *testing.T) {
	s := newServer(t, 0)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	keep := keeper(t, c)
	for _, n := range []int{1, 4<<20 - 64<<10, 4 << 20, 10<<20 + 3} {
		data := randomBytes(n, uint64(n))
		info, err := c.Put(ctx, data, client.PinnedBy(keep), client.ContentType("application/octet-stream"))
		if err != nil {
			t.Fatalf("Put %d bytes: %v", n, err)
		}
		if info.Size != int64(n) || info.State != client.StatePinned || info.ContentType != "application/octet-stream" {
			t.Fatalf("Put %d bytes: info %+v", n, info)
		}
		got, rinfo, err := c.Resolve(ctx, info.Handle)
		if err != nil {
			t.Fatalf("Resolve %d bytes: %v", n, err)
		}
		if !bytes.Equal(got, data) || rinfo.Size != int64(n) {
			t.Fatalf("Resolve %d bytes: got %d bytes, equal %v", n, len(got), bytes.Equal(got, data))
		}
		var buf bytes.Buffer
		if _, err := c.Download(ctx, info.Handle, &buf); err != nil || !bytes.Equal(buf.Bytes(), data) {
			t.Fatalf("Download %d bytes: %v, equal %v", n, err, bytes.Equal(buf.Bytes(), data))
		}
	}
}

func TestUploadFromAShortReaderStoresNothing(t *testing.T) {
	s := newServer(t, 0)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	_, err := c.Upload(ctx, io.LimitReader(bytes.NewReader(randomBytes(3<<20, 1)), 2<<20), 3<<20)
	if err == nil {
		t.Fatal("upload of a reader shorter than its size succeeded")
	}
	st := stats(t, s)
	if st.GetPuts() != 0 || st.GetObjects().GetWeak() != 0 {
		t.Fatalf("after a failed upload: puts %d, weak objects %d", st.GetPuts(), st.GetObjects().GetWeak())
	}
}

func TestUploadOverTheLimitIsErrLimit(t *testing.T) {
	s := newServer(t, 0)
	c := dial(t, s.addr)
	_, err := c.Upload(ctxT(t), zeros{}, 65<<20)
	var e *client.Error
	if !errors.Is(err, client.ErrLimit) || !errors.As(err, &e) || e.Reason != "OBJECT_TOO_LARGE" {
		t.Fatalf("err = %v, want ErrLimit OBJECT_TOO_LARGE", err)
	}
}

func TestLingerKeepsAnUnpinnedObject(t *testing.T) {
	s := newServer(t, 0)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	info, err := c.Put(ctx, []byte("lingers"), client.Linger(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if info.State != client.StateLingering || info.LingerUntil.IsZero() || info.Linger != time.Minute {
		t.Fatalf("info = %+v, want lingering for a minute", info)
	}
	s.collect(t)
	if _, _, err := c.Resolve(ctx, info.Handle); err != nil {
		t.Fatalf("lingering object after a collection: %v", err)
	}
}

func stats(t *testing.T, s *testServer) *registryv1.GetStatsResponse {
	t.Helper()
	st, err := s.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestPutFallsBackToUploadUnderASmallMessageLimit: a server whose message
// limit is below the client's threshold for Put still takes the object.
func TestPutFallsBackToUploadUnderASmallMessageLimit(t *testing.T) {
	s := newServerWithLimits(t, 256<<10)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	keep := keeper(t, c)
	data := randomBytes(1<<20, 9)
	info, err := c.Put(ctx, data, client.PinnedBy(keep))
	if err != nil {
		t.Fatalf("Put of 1 MiB under a 256 KiB message limit: %v", err)
	}
	got, _, err := c.Resolve(ctx, info.Handle)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Resolve: %d bytes, %v", len(got), err)
	}
}
