package client_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/weakref/registry/client"
	registryv1 "github.com/weakref/registry/gen/registry/v1"
)

// dialQuick is dial with gRPC's reconnection paced for tests: after a
// refused connection gRPC would otherwise wait a second or more before it
// tries again.
func dialQuick(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(addr, client.WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 100 * time.Millisecond},
		MinConnectTimeout: 2 * time.Second,
	})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// eventLog is an uninterrupted admin WatchEvents stream, read on its own
// goroutine: what a resumed watch is compared with.
type eventLog struct {
	mu     sync.Mutex
	events []*registryv1.Event
	done   chan struct{}
}

func recordEvents(t *testing.T, s *testServer) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := s.admin.WatchEvents(ctx, &registryv1.WatchEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil { // in place
		t.Fatal(err)
	}
	log := &eventLog{done: make(chan struct{})}
	go func() {
		defer close(log.done)
		for {
			m, err := stream.Recv()
			if err != nil {
				return
			}
			log.mu.Lock()
			log.events = append(log.events, m.GetEvent())
			log.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-log.done
	})
	return log
}

// upTo waits until the log holds every event up to the registry's newest
// and returns them.
func (l *eventLog) upTo(t *testing.T, s *testServer) []*registryv1.Event {
	t.Helper()
	st, err := s.admin.GetStats(ctxT(t), &registryv1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	newest := st.GetWatchHistory().GetNewestSequence()
	var out []*registryv1.Event
	waitFor(t, "the admin stream to catch up", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		out = slices.Clone(l.events)
		return len(out) > 0 && out[len(out)-1].GetSequence() >= newest
	})
	return out
}

// eventsOf receives a Watcher's events on a goroutine of its own, so that
// every wait has a deadline.
type eventsOf struct {
	ch       chan received // the events, then the end
	received []client.Event
}

type received struct {
	ev  client.Event
	err error
}

func receive(w *client.Watcher) *eventsOf {
	r := &eventsOf{ch: make(chan received, 4096)}
	go func() {
		for {
			ev, err := w.Recv()
			r.ch <- received{ev, err}
			if err != nil {
				return
			}
		}
	}()
	return r
}

// until receives events until one matches, failing after 10s.
func (r *eventsOf) until(t *testing.T, what string, match func(client.Event) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-r.ch:
			if got.err != nil {
				t.Fatalf("watch ended (%v) waiting for %s", got.err, what)
			}
			r.received = append(r.received, got.ev)
			if match(got.ev) {
				return
			}
		case <-deadline:
			t.Fatalf("no %s within 10s", what)
		}
	}
}

func (r *eventsOf) wantEnd(t *testing.T, want error) {
	t.Helper()
	select {
	case got := <-r.ch:
		if got.err == nil {
			t.Fatalf("event %+v, want the watch's end", got.ev)
		}
		if !errors.Is(got.err, want) {
			t.Fatalf("watch ended with %v, want %v", got.err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch did not end within 10s")
	}
}

func is(kind client.EventKind, h string) func(client.Event) bool {
	return func(ev client.Event) bool { return ev.Kind == kind && ev.Handle == h }
}

// sameEvents fails unless got are exactly the events of want, in order.
func sameEvents(t *testing.T, got []client.Event, want []*registryv1.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("received %d events, want %d: %v\nwant %v", len(got), len(want), clientSeqs(got), protoSeqs(want))
	}
	for i, ev := range got {
		w := want[i]
		if ev.Seq != w.GetSequence() || int(ev.Kind) != int(w.GetKind()) || ev.Handle != w.GetHandle() ||
			int(ev.State) != int(w.GetState()) || ev.PinCount != int(w.GetPinCount()) || ev.LeaseID != w.GetLeaseId() {
			t.Fatalf("event %d = %+v, want %v", i, ev, w)
		}
	}
}

func clientSeqs(evs []client.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Seq
	}
	return out
}

func protoSeqs(evs []*registryv1.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.GetSequence()
	}
	return out
}

func of(evs []*registryv1.Event, after uint64, handles []string) []*registryv1.Event {
	var out []*registryv1.Event
	for _, ev := range evs {
		if ev.GetSequence() > after && slices.Contains(handles, ev.GetHandle()) {
			out = append(out, ev)
		}
	}
	return out
}

// TestWatchResumesAcrossConnectionCuts: the watcher's connection is cut
// three times while its objects are pinned, unpinned and collected, and
// while another lease keeps changing one of them. The Watcher reconnects
// by itself and resumes from its last sequence: it returns every event
// of its objects exactly once, in order, as an uninterrupted admin stream
// saw them, then io.EOF once all are collected.
func TestWatchResumesAcrossConnectionCuts(t *testing.T) {
	s := newServer(t, time.Minute)
	log := recordEvents(t, s)
	p := newProxy(t, s.addr)
	direct := dial(t, s.addr)
	ctx := ctxT(t)
	l := keeper(t, direct)
	l2 := keeper(t, direct)
	var hs []string
	for i := range 4 {
		info, err := direct.Put(ctx, []byte("watched "+strconv.Itoa(i)), client.PinnedBy(l))
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, info.Handle)
	}
	w, err := dialQuick(t, p.Addr()).Watch(ctx, hs...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r := receive(w)
	for _, h := range hs {
		r.until(t, "CURRENT of "+h, is(client.EventCurrent, h))
	}
	current := r.received[len(r.received)-1].Seq

	// Another lease pins and unpins hs[0] all along.
	stop := make(chan struct{})
	churned := make(chan error, 1)
	go func() {
		for range 1000 {
			select {
			case <-stop:
				churned <- nil
				return
			default:
			}
			if _, err := l2.Pin(ctx, hs[0]); err != nil {
				churned <- err
				return
			}
			if _, err := l2.Unpin(ctx, hs[0]); err != nil {
				churned <- err
				return
			}
		}
		churned <- nil
	}()
	must := func(_ []client.PinResult, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	// Cut 1, and no reconnection until hs[1] is pinned, unpinned and
	// collected.
	p.SetRefuse(true)
	p.Drop()
	must(l2.Pin(ctx, hs[1]))
	must(l2.Unpin(ctx, hs[1]))
	must(l.Unpin(ctx, hs[1]))
	s.collect(t)
	p.SetRefuse(false)
	r.until(t, "COLLECTED of hs[1]", is(client.EventCollected, hs[1]))

	// Cut 2: hs[2] collected, hs[3] pinned a second time.
	p.SetRefuse(true)
	p.Drop()
	must(l.Unpin(ctx, hs[2]))
	s.collect(t)
	must(l2.Pin(ctx, hs[3]))
	p.SetRefuse(false)
	r.until(t, "PINNED of hs[3]", is(client.EventPinned, hs[3]))

	// Cut 3, reconnecting at once, racing the changes.
	p.Drop()
	must(l.Unpin(ctx, hs[3]))
	must(l2.Unpin(ctx, hs[3]))
	s.collect(t)
	r.until(t, "COLLECTED of hs[3]", is(client.EventCollected, hs[3]))

	close(stop)
	if err := <-churned; err != nil {
		t.Fatal(err)
	}
	must(l.Unpin(ctx, hs[0]))
	s.collect(t)
	r.until(t, "COLLECTED of hs[0]", is(client.EventCollected, hs[0]))
	r.wantEnd(t, io.EOF)

	if n := w.Resumes(); n < 3 {
		t.Fatalf("Resumes() = %d, want one or more per cut (3)", n)
	}
	sameEvents(t, r.received[len(hs):], of(log.upTo(t, s), current, hs))
	if last := r.received[len(r.received)-1].Seq; w.LastSequence() != last {
		t.Fatalf("LastSequence() = %d, want %d", w.LastSequence(), last)
	}
}

// TestWatchFromSequenceContinuesAnEarlierWatch: a new watch started with
// FromSequence(LastSequence()+1) of a closed one gets what happened since,
// with no CURRENT event, then what follows.
func TestWatchFromSequenceContinuesAnEarlierWatch(t *testing.T) {
	s := newServer(t, time.Minute)
	log := recordEvents(t, s)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	l := keeper(t, c)
	info, err := c.Put(ctx, []byte("watched"), client.PinnedBy(l))
	if err != nil {
		t.Fatal(err)
	}
	first, err := c.Watch(ctx, info.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := first.Recv(); err != nil || ev.Kind != client.EventCurrent || first.LastSequence() != ev.Seq {
		t.Fatalf("first event %+v, %v; LastSequence %d", ev, err, first.LastSequence())
	}
	first.Close()
	if _, err := first.Recv(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv after Close: %v, want context.Canceled", err)
	}
	from := first.LastSequence() + 1

	other := keeper(t, c)
	if _, err := other.Pin(ctx, info.Handle); err != nil {
		t.Fatal(err)
	}
	w, err := c.WatchWith(ctx, []string{info.Handle}, client.FromSequence(from))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := l.Unpin(ctx, info.Handle); err != nil {
		t.Fatal(err)
	}
	r := receive(w)
	r.until(t, "UNPINNED", is(client.EventUnpinned, info.Handle))
	sameEvents(t, r.received, of(log.upTo(t, s), from-1, []string{info.Handle}))
	if r.received[0].Kind != client.EventPinned || r.received[0].Seq != from {
		t.Fatalf("first resumed event %+v, want the PINNED at %d", r.received[0], from)
	}
}

// TestWatchFromALostSequenceIsCompacted: a sequence the server cannot
// resume from gives ErrWatchCompacted with the oldest it can.
func TestWatchFromALostSequenceIsCompacted(t *testing.T) {
	s := newServer(t, time.Minute)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	info, err := c.Put(ctx, []byte("watched"), client.PinnedBy(keeper(t, c)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.WatchWith(ctx, []string{info.Handle}, client.FromSequence(1<<40))
	var e *client.Error
	if !errors.Is(err, client.ErrWatchCompacted) || !errors.As(err, &e) {
		t.Fatalf("err = %v, want ErrWatchCompacted", err)
	}
	if e.Reason != "WATCH_HISTORY_COMPACTED" || e.Metadata["oldest_sequence"] != "1" || e.Metadata["from_sequence"] != strconv.Itoa(1<<40) {
		t.Fatalf("error %v metadata %v, want oldest_sequence 1 and from_sequence %d", e, e.Metadata, 1<<40)
	}
	// Unknown handles are refused as before, and end nothing else.
	if _, err := c.WatchWith(ctx, []string{"obj_x"}, client.FromSequence(1)); !errors.Is(err, client.ErrMalformedHandle) {
		t.Fatalf("watch of a malformed handle: %v, want ErrMalformedHandle", err)
	}
}

// TestResumeAfterAnotherRunIsErrRestarted: an event's epoch goes with its
// sequence; resuming after an event of another run is refused as a
// restart, not answered with this run's events under the same numbers.
func TestResumeAfterAnotherRunIsErrRestarted(t *testing.T) {
	s := newServer(t, 0)
	c := dial(t, s.addr)
	ctx := ctxT(t)
	keep := keeper(t, c)
	info, err := c.Put(ctx, []byte("x"), client.PinnedBy(keep))
	if err != nil {
		t.Fatal(err)
	}
	w, err := c.Watch(ctx, info.Handle)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := w.Recv()
	w.Close()
	if err != nil || ev.Epoch == 0 {
		t.Fatalf("first event %+v, %v; want one with its epoch", ev, err)
	}
	ev.Seq = 1
	again, err := c.WatchWith(ctx, []string{info.Handle}, client.ResumeAfter(ev))
	if err != nil {
		t.Fatalf("resume in the same run: %v", err)
	}
	again.Close()
	ev.Epoch--
	if _, err := c.WatchWith(ctx, []string{info.Handle}, client.ResumeAfter(ev)); !errors.Is(err, client.ErrRestarted) {
		t.Fatalf("resume after another run's event: %v, want ErrRestarted", err)
	}
}
