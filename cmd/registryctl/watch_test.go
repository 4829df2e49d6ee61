package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
	"github.com/weakref/registry/internal/server"
)

// serveInProcess starts a registryd in the test process, on loopback, with
// a history of 8 events.
func serveInProcess(t *testing.T) (*registry.Registry, *handle.Codec, string) {
	t.Helper()
	codec, err := handle.NewCodec(handle.Config{Key: bytes.Repeat([]byte{7}, handle.MinKeyLen)})
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(registry.Config{Codec: codec, WatchHistory: 8})
	srv := server.New(server.Config{
		Registry: reg,
		Leases:   lease.New(lease.Config{Codec: codec, Registry: reg}),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return reg, codec, lis.Addr().String()
}

// linesThenCancel is a stdout that ends the command's context once it
// has n lines, as an interrupt would.
type linesThenCancel struct {
	bytes.Buffer
	n      int
	cancel context.CancelFunc
}

func (w *linesThenCancel) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if strings.Count(w.String(), "\n") >= w.n {
		w.cancel()
	}
	return n, err
}

func sequences(t *testing.T, out string) []uint64 {
	t.Helper()
	var seqs []uint64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev struct {
			Sequence string `json:"sequence"`
			Kind     string `json:"kind"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if ev.Kind == "EVENT_KIND_CURRENT" {
			t.Fatalf("a resumed watch printed %s", line)
		}
		var n uint64
		for _, c := range ev.Sequence {
			n = n*10 + uint64(c-'0')
		}
		seqs = append(seqs, n)
	}
	return seqs
}

// TestWatchFromResumes: --from replays from the history, for named
// objects (ending by itself once they ended) and for all objects, and a
// sequence the history lost fails with WATCH_HISTORY_COMPACTED.
func TestWatchFromResumes(t *testing.T) {
	reg, codec, addr := serveInProcess(t)
	kid, kname := codec.New(handle.Lease)
	keeper := registry.Holder{ID: kid, LeaseID: kname}
	oid, oname := codec.New(handle.Lease)
	other := registry.Holder{ID: oid, LeaseID: oname}
	info, err := reg.Put([]byte("watched"), registry.Meta{}, &keeper) // 1 CREATED, 2 PINNED
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.Pin(info.ID, other); err != nil { // 3 PINNED
		t.Fatal(err)
	}
	if _, _, err := reg.Delete(info.ID, true); err != nil { // 4 DELETED
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--addr", addr, "watch", "--from", "2", info.Handle, "-w", "json"}, strings.NewReader(""), &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("watch --from 2 HANDLE: exit %d: %s", code, stderr.String())
	}
	if got := sequences(t, stdout.String()); len(got) != 3 || got[0] != 2 || got[2] != 4 {
		t.Fatalf("watch --from 2 HANDLE printed sequences %v, want 2 3 4", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all := &linesThenCancel{n: 2, cancel: cancel}
	stderr.Reset()
	code = run(ctx, []string{"--addr", addr, "watch", "--from", "3", "-w", "json"}, strings.NewReader(""), all, &stderr)
	if code != exitOK || !strings.Contains(stderr.String(), "watching all objects") {
		t.Fatalf("watch --from 3: exit %d: %s", code, stderr.String())
	}
	if got := sequences(t, all.String()); len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Fatalf("watch --from 3 printed sequences %v, want 3 4", got)
	}

	for range 4 { // 8 more events: the history keeps 5 to 12
		if _, err := reg.Put([]byte("more"), registry.Meta{}, &keeper); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"watch", "--from", "4"}, {"watch", "--from", "4", info.Handle}} {
		stdout.Reset()
		stderr.Reset()
		code := run(context.Background(), append([]string{"--addr", addr}, args...), strings.NewReader(""), &stdout, &stderr)
		msg := stderr.String()
		if code != exitError || !strings.Contains(msg, "WATCH_HISTORY_COMPACTED") || !strings.Contains(msg, "starts at 5") ||
			strings.Contains(msg, "watching") || stdout.Len() != 0 {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want exit 1 naming WATCH_HISTORY_COMPACTED and the oldest, 5", args, code, stdout.String(), msg)
		}
	}
}
