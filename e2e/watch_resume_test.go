package e2e

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"

	regclient "github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// Resumable watch against the real registryd (issue 10, "Done when" 4): a
// watcher's connection is cut while its objects are pinned, unpinned and
// collected; the Go client resumes from its last sequence by itself and
// has received every event exactly once, in order; a sequence the history
// no longer keeps gets WATCH_HISTORY_COMPACTED.

// resumeClient dials registryd through addr with gRPC's reconnection paced
// for a test (by default gRPC waits a second or more after a refused
// connection before it tries again); closed when the test ends.
func resumeClient(t testing.TB, addr string) *regclient.Client {
	t.Helper()
	c, err := regclient.Dial(addr, regclient.WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 100 * time.Millisecond},
		MinConnectTimeout: 2 * time.Second,
	})))
	if err != nil {
		t.Fatalf("client.Dial(%s): %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// resumeLease opens a lease through c, closed when the test ends.
func resumeLease(t testing.TB, ctx context.Context, c *regclient.Client, name string) *regclient.Lease {
	t.Helper()
	l, err := c.Lease(ctx, regclient.LeaseName(name))
	if err != nil {
		t.Fatalf("Lease: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		l.Close(ctx)
	})
	return l
}

// watchEvents is a Watcher read on a goroutine of its own, the events then
// the end in one channel, so that every wait has a deadline.
type watchEvents struct {
	ch  chan watchItem
	got []regclient.Event
}

type watchItem struct {
	ev  regclient.Event
	err error
}

func readWatcher(w *regclient.Watcher) *watchEvents {
	r := &watchEvents{ch: make(chan watchItem, 1024)}
	go func() {
		for {
			ev, err := w.Recv()
			r.ch <- watchItem{ev, err}
			if err != nil {
				return
			}
		}
	}()
	return r
}

// until reads events until one of kind about h arrives.
func (r *watchEvents) until(t testing.TB, kind regclient.EventKind, h string) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case it := <-r.ch:
			if it.err != nil {
				t.Fatalf("watch ended (%v) before %v of %s", it.err, kind, h)
			}
			r.got = append(r.got, it.ev)
			if it.ev.Kind == kind && it.ev.Handle == h {
				return
			}
		case <-deadline:
			t.Fatalf("no %v of %s within %v", kind, h, waitTimeout)
		}
	}
}

func (r *watchEvents) wantEnd(t testing.TB, want error) {
	t.Helper()
	select {
	case it := <-r.ch:
		if it.err == nil || !errors.Is(it.err, want) {
			t.Fatalf("watch: got %+v, %v; want its end with %v", it.ev, it.err, want)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("the watch did not end within %v", waitTimeout)
	}
}

func TestWatchResumesAcrossConnectionCuts(t *testing.T) {
	t.Parallel()
	d := startDaemon(t)
	admin := dial(t, d.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The record: an admin stream that is never cut.
	recordCtx, stopRecord := context.WithCancel(ctx)
	defer stopRecord()
	rec, err := admin.admin.WatchEvents(recordCtx, &registryv1.WatchEventsRequest{})
	if err != nil {
		t.Fatalf("WatchEvents: %v", err)
	}
	if _, err := rec.Header(); err != nil {
		t.Fatalf("WatchEvents: %v", err)
	}
	record := startReader(recordCtx, rec.Recv)

	direct := resumeClient(t, d.Addr)
	keeper := resumeLease(t, ctx, direct, "e2e-keeper")
	other := resumeLease(t, ctx, direct, "e2e-other")
	var hs []string
	for i := range 3 {
		info, err := direct.Put(ctx, []byte("watched while cut "+strconv.Itoa(i)), regclient.PinnedBy(keeper))
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		hs = append(hs, info.Handle)
	}

	p := newProxy(t, d.Addr)
	w, err := resumeClient(t, p.Addr()).Watch(ctx, hs...)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	defer w.Close()
	r := readWatcher(w)
	for _, h := range hs {
		r.until(t, regclient.EventCurrent, h)
	}
	current := w.LastSequence()
	must := func(_ []regclient.PinResult, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("lease: %v", err)
		}
	}

	// Cut 1: no reconnection until hs[0] has been pinned a second time,
	// unpinned twice and collected, and hs[1] pinned a second time.
	p.SetRefuse(true)
	p.Drop()
	must(other.Pin(ctx, hs[0]))
	must(other.Unpin(ctx, hs[0]))
	must(keeper.Unpin(ctx, hs[0]))
	collect(t, admin)
	must(other.Pin(ctx, hs[1]))
	p.SetRefuse(false)
	r.until(t, regclient.EventPinned, hs[1])

	// Cut 2, reconnecting at once, racing the changes.
	p.Drop()
	must(keeper.Unpin(ctx, hs[1]))
	must(other.Unpin(ctx, hs[1]))
	must(keeper.Unpin(ctx, hs[2]))
	collect(t, admin)
	r.until(t, regclient.EventCollected, hs[1])
	if !slices.ContainsFunc(r.got, func(ev regclient.Event) bool { return ev.Kind == regclient.EventCollected && ev.Handle == hs[2] }) {
		r.until(t, regclient.EventCollected, hs[2])
	}
	r.wantEnd(t, io.EOF) // every watched object collected
	if n := w.Resumes(); n < 2 {
		t.Fatalf("Resumes() = %d, want one or more per cut (2)", n)
	}

	// The record up to the last event: the watcher got exactly its part.
	last := r.got[len(r.got)-1].Seq
	var want []*registryv1.Event
	for {
		m := record.mustNext(t).GetEvent()
		if m.GetSequence() > current && slices.Contains(hs, m.GetHandle()) {
			want = append(want, m)
		}
		if m.GetSequence() >= last {
			break
		}
	}
	got := r.got[len(hs):] // after the CURRENT events
	if len(got) != len(want) {
		t.Fatalf("watcher got %d events after its CURRENT ones, the record %d:\n got %v\nwant %v", len(got), len(want), got, want)
	}
	for i, ev := range got {
		m := want[i]
		if ev.Seq != m.GetSequence() || int(ev.Kind) != int(m.GetKind()) || ev.Handle != m.GetHandle() ||
			int(ev.State) != int(m.GetState()) || ev.PinCount != int(m.GetPinCount()) || ev.LeaseID != m.GetLeaseId() {
			t.Fatalf("event %d: watcher got %+v, the record has %v", i, ev, m)
		}
	}
	if w.LastSequence() != last {
		t.Fatalf("LastSequence() = %d, want %d", w.LastSequence(), last)
	}
}

func TestWatchFromCompactedSequence(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, "--watch-history", "8")
	c := dial(t, d.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	gc := resumeClient(t, d.Addr)
	keeper := resumeLease(t, ctx, gc, "e2e-keeper")
	other := resumeLease(t, ctx, gc, "e2e-other")
	info, err := gc.Put(ctx, []byte("busy"), regclient.PinnedBy(keeper)) // 1 CREATED, 2 PINNED
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	for range 5 { // 3 ... 12
		if _, err := other.Pin(ctx, info.Handle); err != nil {
			t.Fatalf("Pin: %v", err)
		}
		if _, err := other.Unpin(ctx, info.Handle); err != nil {
			t.Fatalf("Unpin: %v", err)
		}
	}
	st, err := c.admin.GetStats(rpcCtx(t), &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatalf("GetStats: %v", err)
	}
	if h := st.GetWatchHistory(); h.GetCapacity() != 8 || h.GetEvents() != 8 || h.GetOldestSequence() != 5 || h.GetNewestSequence() != 12 {
		t.Fatalf("watch_history = %v, want 8 of 8, sequences 5 to 12", h)
	}

	// Both streams refuse sequence 4, naming the oldest kept, 5.
	ws, err := c.reg.Watch(rpcCtx(t), &registryv1.WatchRequest{Handles: []string{info.Handle}, FromSequence: 4})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	_, err = ws.Recv()
	ei := wantStatus(t, err, codes.OutOfRange, "WATCH_HISTORY_COMPACTED")
	if ei.GetMetadata()["oldest_sequence"] != "5" || ei.GetMetadata()["from_sequence"] != "4" {
		t.Fatalf("Watch from 4: metadata %v, want oldest_sequence 5, from_sequence 4", ei.GetMetadata())
	}
	es, err := c.admin.WatchEvents(rpcCtx(t), &registryv1.WatchEventsRequest{FromSequence: 4})
	if err != nil {
		t.Fatalf("WatchEvents: %v", err)
	}
	_, err = es.Recv()
	ei = wantStatus(t, err, codes.OutOfRange, "WATCH_HISTORY_COMPACTED")
	if ei.GetMetadata()["oldest_sequence"] != "5" || ei.GetMetadata()["from_sequence"] != "4" {
		t.Fatalf("WatchEvents from 4: metadata %v, want oldest_sequence 5, from_sequence 4", ei.GetMetadata())
	}

	// The Go client says ErrWatchCompacted.
	_, err = gc.WatchWith(ctx, []string{info.Handle}, regclient.FromSequence(4))
	var e *regclient.Error
	if !errors.Is(err, regclient.ErrWatchCompacted) || !errors.As(err, &e) || e.Metadata["oldest_sequence"] != "5" {
		t.Fatalf("client WatchWith(FromSequence(4)) = %v, want ErrWatchCompacted with oldest_sequence 5", err)
	}

	// registryctl too, on one line, with exit status 1.
	for _, args := range [][]string{{"watch", "--from", "4"}, {"watch", "--from", "4", info.Handle}} {
		res := ctl(t, d.Addr, args...)
		wantExit(t, res, 1)
		if !strings.Contains(res.stderr, "WATCH_HISTORY_COMPACTED") || !strings.Contains(res.stderr, "starts at 5") {
			t.Fatalf("want the reason and the oldest kept on stderr; got %s", res)
		}
	}

	// From the oldest kept, the replay starts there; registryctl --from
	// prints it, no CURRENT event first.
	w, err := gc.WatchWith(ctx, []string{info.Handle}, regclient.FromSequence(5))
	if err != nil {
		t.Fatalf("WatchWith(FromSequence(5)): %v", err)
	}
	defer w.Close()
	for seq := uint64(5); seq <= 12; seq++ {
		ev, err := w.Recv()
		if err != nil || ev.Seq != seq || ev.Kind == regclient.EventCurrent {
			t.Fatalf("replayed event %+v, %v; want sequence %d", ev, err, seq)
		}
	}
	if _, err := c.admin.DeleteObject(rpcCtx(t), &registryv1.DeleteObjectRequest{Handle: info.Handle, Force: true}); err != nil {
		t.Fatalf("DeleteObject: %v", err)
	}
	res := ctl(t, d.Addr, "watch", "--from", "11", info.Handle, "-w", "json")
	wantExit(t, res, 0)
	lines := ctlEvents(t, res)
	if len(lines) != 3 || lines[0].GetSequence() != 11 || lines[2].GetKind() != registryv1.EventKind_EVENT_KIND_DELETED {
		t.Fatalf("watch --from 11 of a deleted object: %v, want 11, 12 and its DELETED, then the end", lines)
	}
}
