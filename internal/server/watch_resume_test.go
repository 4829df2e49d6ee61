package server

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/weakref/registry/gen/registry/v1"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/registry"
)

// recorder is an uninterrupted admin WatchEvents stream: what every
// resumed watch is compared with.
type recorder struct {
	e      *env
	stream registryv1.AdminService_WatchEventsClient
	events []*registryv1.Event
}

func (e *env) record(t *testing.T) *recorder {
	t.Helper()
	stream, err := e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil { // in place
		t.Fatal(err)
	}
	return &recorder{e: e, stream: stream}
}

// catchUp reads the stream up to the newest event the registry has
// published, and returns every event recorded.
func (r *recorder) catchUp(t *testing.T) []*registryv1.Event {
	t.Helper()
	newest := r.e.history(t).GetNewestSequence()
	for len(r.events) == 0 || r.events[len(r.events)-1].GetSequence() < newest {
		resp, err := r.stream.Recv()
		if err != nil {
			t.Fatalf("recording stream: %v", err)
		}
		r.events = append(r.events, resp.GetEvent())
	}
	return r.events
}

// since returns the recorded events from sequence from on, of the given
// handles (all when none).
func since(events []*registryv1.Event, from uint64, handles ...string) []*registryv1.Event {
	var out []*registryv1.Event
	for _, ev := range events {
		if ev.GetSequence() >= from && (len(handles) == 0 || slices.Contains(handles, ev.GetHandle())) {
			out = append(out, ev)
		}
	}
	return out
}

func (e *env) history(t *testing.T) *registryv1.WatchHistoryStats {
	t.Helper()
	st, err := e.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st.GetWatchHistory()
}

func (e *env) collect(t *testing.T) {
	t.Helper()
	if _, err := e.admin.Collect(ctxT(t), &registryv1.CollectRequest{}); err != nil {
		t.Fatal(err)
	}
}

// recvEvents reads n events from a stream.
func recvEvents[M interface{ GetEvent() *registryv1.Event }](t *testing.T, recv func() (M, error), n int) []*registryv1.Event {
	t.Helper()
	out := make([]*registryv1.Event, 0, n)
	for range n {
		m, err := recv()
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(out), n, err)
		}
		out = append(out, m.GetEvent())
	}
	return out
}

func wantSameEvents(t *testing.T, got, want []*registryv1.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events %v, want %d %v", len(got), seqs(got), len(want), seqs(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("event %d = %v,\nwant %v", i, got[i], want[i])
		}
	}
}

func seqs(evs []*registryv1.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.GetSequence()
	}
	return out
}

// TestWatchResumesFromSequenceExactlyOnce: a watcher whose stream ended
// resumes with from_sequence and gets, with no CURRENT event, every event
// of its objects since, then the live ones, each once and in order,
// exactly as an uninterrupted watch saw them; it ends by itself when they
// are collected.
func TestWatchResumesFromSequenceExactlyOnce(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.record(t)
	keeper := e.openLease(t, "keeper", 0)
	other := e.openLease(t, "other", 0)
	h1, h2 := e.put(t, "one", keeper.id), e.put(t, "two", keeper.id)
	unwatched := e.put(t, "unwatched", keeper.id)

	ctx, cancel := context.WithCancel(ctxT(t))
	first, err := e.rs.Watch(ctx, &registryv1.WatchRequest{Handles: []string{h1, h2}})
	if err != nil {
		t.Fatal(err)
	}
	got := recvEvents(t, first.Recv, 2) // CURRENT, CURRENT
	other.pin(h1)
	got = append(got, recvEvents(t, first.Recv, 1)...)
	last := got[2].GetSequence()
	cancel() // the watcher goes away

	other.unpin(h1)
	other.pin(unwatched)
	keeper.unpin(h1)
	e.collect(t) // h1 is collected
	other.pin(h2)

	resumed, err := e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: []string{h1, h2}, FromSequence: last + 1})
	if err != nil {
		t.Fatal(err)
	}
	want := since(rec.catchUp(t), last+1, h1, h2)
	if kinds := kindsOf(want); !slices.Equal(kinds, []registryv1.EventKind{
		registryv1.EventKind_EVENT_KIND_UNPINNED, registryv1.EventKind_EVENT_KIND_UNPINNED, registryv1.EventKind_EVENT_KIND_WEAK,
		registryv1.EventKind_EVENT_KIND_COLLECTED, registryv1.EventKind_EVENT_KIND_PINNED,
	}) {
		t.Fatalf("recorded since the cut: %v", kinds)
	}
	wantSameEvents(t, recvEvents(t, resumed.Recv, len(want)), want)

	// Then live, until h2 is collected too: the watch ends by itself.
	seen := rec.catchUp(t)
	mark := seen[len(seen)-1].GetSequence() + 1
	other.unpin(h2)
	keeper.unpin(h2)
	e.collect(t)
	want = since(rec.catchUp(t), mark, h1, h2)
	wantSameEvents(t, recvEvents(t, resumed.Recv, len(want)), want)
	if want[len(want)-1].GetKind() != registryv1.EventKind_EVENT_KIND_COLLECTED {
		t.Fatalf("last event %v, want COLLECTED", want[len(want)-1])
	}
	if _, err := resumed.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after every watched object was collected: %v, want the stream's end", err)
	}
}

func kindsOf(evs []*registryv1.Event) []registryv1.EventKind {
	out := make([]registryv1.EventKind, len(evs))
	for i, ev := range evs {
		out[i] = ev.GetKind()
	}
	return out
}

// TestResumedWatchOfEndedObjectsEnds: a resumed watch whose objects all
// ended within its replay sends the replay and ends; one whose objects
// ended before from_sequence ends at once, with no event.
func TestResumedWatchOfEndedObjectsEnds(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.record(t)
	keeper := e.openLease(t, "keeper", 0)
	h := e.put(t, "short-lived", keeper.id)
	from := rec.catchUp(t)[0].GetSequence() // its CREATED
	if _, err := e.admin.DeleteObject(ctxT(t), &registryv1.DeleteObjectRequest{Handle: h, Force: true}); err != nil {
		t.Fatal(err)
	}
	want := since(rec.catchUp(t), from, h) // CREATED, PINNED, DELETED
	if len(want) != 3 {
		t.Fatalf("recorded %v", want)
	}

	within, err := e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: []string{h}, FromSequence: from})
	if err != nil {
		t.Fatal(err)
	}
	wantSameEvents(t, recvEvents(t, within.Recv, 3), want)
	if _, err := within.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the replayed DELETED: %v, want the stream's end", err)
	}

	after, err := e.rs.Watch(ctxT(t), &registryv1.WatchRequest{Handles: []string{h}, FromSequence: want[2].GetSequence() + 1})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := after.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("resumed after the object's end: %v, %v; want the stream's end at once", m, err)
	}
}

// TestWatchEventsResumesFromSequence: the admin stream resumes too,
// filtered by kind, the replay and the live events alike.
func TestWatchEventsResumesFromSequence(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.record(t)
	keeper := e.openLease(t, "keeper", 0)
	other := e.openLease(t, "other", 0)
	h := e.put(t, "watched", keeper.id)
	from := rec.catchUp(t)[1].GetSequence() // its PINNED by keeper
	other.pin(h)
	other.unpin(h)

	for _, kinds := range [][]registryv1.EventKind{nil, {registryv1.EventKind_EVENT_KIND_PINNED}} {
		stream, err := e.admin.WatchEvents(ctxT(t), &registryv1.WatchEventsRequest{Kinds: kinds, FromSequence: from})
		if err != nil {
			t.Fatal(err)
		}
		want := filterKinds(since(rec.catchUp(t), from), kinds)
		wantSameEvents(t, recvEvents(t, stream.Recv, len(want)), want)
		mark := want[len(want)-1].GetSequence() + 1
		other.pin(h)
		other.unpin(h)
		want = filterKinds(since(rec.catchUp(t), mark), kinds)
		wantSameEvents(t, recvEvents(t, stream.Recv, len(want)), want)
	}
}

func filterKinds(evs []*registryv1.Event, kinds []registryv1.EventKind) []*registryv1.Event {
	if len(kinds) == 0 {
		return evs
	}
	var out []*registryv1.Event
	for _, ev := range evs {
		if slices.Contains(kinds, ev.GetKind()) {
			out = append(out, ev)
		}
	}
	return out
}

// TestResumeFromCompactedSequenceIsOutOfRange: a from_sequence the
// history no longer keeps, or beyond the next event, gets OUT_OF_RANGE
// WATCH_HISTORY_COMPACTED with the oldest sequence kept and the one asked
// for, on both streams, and changes nothing; the oldest kept and the next
// to come are accepted.
func TestResumeFromCompactedSequenceIsOutOfRange(t *testing.T) {
	e := newEnv(t, nil)
	keeper := e.openLease(t, "keeper", 0)
	h := e.put(t, "busy", keeper.id) // sequences 1, 2
	// More events than the default history keeps, made in process.
	id, err := e.reg.Parse(h)
	if err != nil {
		t.Fatal(err)
	}
	lid, ls := e.codec.New(handle.Lease)
	by := registry.Holder{ID: lid, LeaseID: ls}
	for range 5001 {
		e.reg.Pin(id, by)
		e.reg.Unpin(id, by)
	}
	stats := func() *registryv1.GetStatsResponse {
		st, err := e.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	before := stats()
	if hist := before.GetWatchHistory(); !proto.Equal(hist, &registryv1.WatchHistoryStats{
		Capacity: 10000, Events: 10000, OldestSequence: 5, NewestSequence: 10004,
	}) {
		t.Fatalf("watch_history = %v, want 10000 of 10000, sequences 5 to 10004", hist)
	}

	// open starts a resumed watch of either kind and returns its reader.
	open := func(t *testing.T, rpc string, from uint64) func() (*registryv1.Event, error) {
		ctx, cancel := context.WithCancel(ctxT(t))
		t.Cleanup(cancel)
		if rpc == "Watch" {
			s, err := e.rs.Watch(ctx, &registryv1.WatchRequest{Handles: []string{h}, FromSequence: from})
			if err != nil {
				t.Fatal(err)
			}
			return func() (*registryv1.Event, error) { m, err := s.Recv(); return m.GetEvent(), err }
		}
		s, err := e.admin.WatchEvents(ctx, &registryv1.WatchEventsRequest{FromSequence: from})
		if err != nil {
			t.Fatal(err)
		}
		return func() (*registryv1.Event, error) { m, err := s.Recv(); return m.GetEvent(), err }
	}
	rpcs := []string{"Watch", "WatchEvents"}
	for _, rpc := range rpcs {
		for _, from := range []uint64{1, 4, 10006, 1 << 62} {
			t.Run(rpc+"/"+strconv.FormatUint(from, 10), func(t *testing.T) {
				ev, err := open(t, rpc, from)()
				if err == nil {
					t.Fatalf("got event %v, want an error", ev)
				}
				wantStatus(t, err, codes.OutOfRange, ReasonWatchCompacted)
				md := errorInfo(t, err).GetMetadata()
				if md["oldest_sequence"] != "5" || md["from_sequence"] != strconv.FormatUint(from, 10) || len(md) != 2 {
					t.Fatalf("metadata %v, want oldest_sequence 5 and from_sequence %d", md, from)
				}
			})
		}
	}
	after := stats()
	if after.GetWatchers() != 0 || !proto.Equal(after.GetWatchHistory(), before.GetWatchHistory()) ||
		!proto.Equal(after.GetObjects(), before.GetObjects()) || after.GetPins() != before.GetPins() {
		t.Fatalf("refused resumes changed the registry:\nbefore %v\nafter  %v", before, after)
	}

	// The oldest kept is accepted: every event of h from it is replayed.
	for _, rpc := range rpcs {
		if ev, err := open(t, rpc, 5)(); err != nil || ev.GetSequence() != 5 {
			t.Fatalf("%s from the oldest kept: %v, %v; want sequence 5", rpc, ev, err)
		}
	}
	// So is the next to come.
	var next []func() (*registryv1.Event, error)
	for _, rpc := range rpcs {
		next = append(next, open(t, rpc, 10005))
	}
	e.reg.Pin(id, by)
	for i, recv := range next {
		if ev, err := recv(); err != nil || ev.GetSequence() != 10005 || ev.GetKind() != registryv1.EventKind_EVENT_KIND_PINNED {
			t.Fatalf("%s from the next: %v, %v; want PINNED 10005", rpcs[i], ev, err)
		}
	}
}

// errorInfo returns the registry ErrorInfo of a status error.
func errorInfo(t *testing.T, err error) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			return info
		}
	}
	t.Fatalf("%v carries no registry ErrorInfo", err)
	return nil
}
