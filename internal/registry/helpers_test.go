package registry

import (
	"bytes"
	"errors"
	"flag"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weakref/registry/internal/handle"
)

// ownedPayloads runs every test with Config.OwnedPayloads, as registryd
// runs: go test -args -registry.owned. Tests that give one buffer to many
// Puts break the promise it makes; the others must pass either way.
var ownedPayloads = flag.Bool("registry.owned", false, "run the tests with Config.OwnedPayloads")

// testEpoch and testNode are the codec settings of every test registry.
const (
	testEpoch = 4242
	testNode  = 3
)

var testKey = bytes.Repeat([]byte{0x42}, handle.MinKeyLen)

func newCodec(t testing.TB) *handle.Codec {
	t.Helper()
	c, err := handle.NewCodec(handle.Config{Key: testKey, Node: testNode, Epoch: testEpoch})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newRegistry returns a registry with a fresh codec; cfg's Codec is set
// for the caller. The registry is closed when the test ends.
func newRegistry(t testing.TB, cfg Config) *Registry {
	t.Helper()
	if cfg.Codec == nil {
		cfg.Codec = newCodec(t)
	}
	if *ownedPayloads {
		cfg.OwnedPayloads = true
	}
	r := New(cfg)
	t.Cleanup(r.Close)
	return r
}

// newHolder mints a lease id for pins.
func newHolder(r *Registry) Holder {
	id, s := r.codec.New(handle.Lease)
	return Holder{ID: id, LeaseID: s}
}

// newPayload returns n fresh heap bytes derived from seed.
func newPayload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// put stores a fresh payload of n bytes and returns its metadata and a
// copy of the bytes to compare with (the registry keeps the original).
func put(t testing.TB, r *Registry, n int, seed byte, meta Meta, by *Holder) (Info, []byte) {
	t.Helper()
	data := newPayload(n, seed)
	want := bytes.Clone(data)
	info, err := r.Put(data, meta, by)
	if err != nil {
		t.Fatalf("Put(%d bytes): %v", n, err)
	}
	return info, want
}

// noAutoGC turns off the collector's own cycles for the test, so that a
// WEAK object stays alive until the test calls runtime.GC or Collect.
func noAutoGC(t testing.TB) {
	old := debug.SetGCPercent(-1)
	t.Cleanup(func() { debug.SetGCPercent(old) })
}

// mustResolve resolves h and checks its bytes.
func mustResolve(t testing.TB, r *Registry, h string, want []byte) Object {
	t.Helper()
	obj, err := r.Resolve(h)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", h, err)
	}
	if !bytes.Equal(obj.Data, want) {
		t.Fatalf("Resolve(%s) returned %d bytes that differ from the %d put", h, len(obj.Data), len(want))
	}
	return obj
}

// wantGone checks that Resolve, Stat and Inspect of h all say want.
func wantGone(t testing.TB, r *Registry, h string, want error) {
	t.Helper()
	if obj, err := r.Resolve(h); !errors.Is(err, want) {
		t.Fatalf("Resolve(%s) = %d bytes, %v; want %v", h, len(obj.Data), err, want)
	}
	if info, err := r.Stat(h); !errors.Is(err, want) {
		t.Fatalf("Stat(%s) = %v, %v; want %v", h, info.State, err, want)
	}
	id, err := r.Parse(h)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Inspect(id); !errors.Is(err, want) {
		t.Fatalf("Inspect(%s): %v; want %v", h, err, want)
	}
}

// waitFor polls cond until it holds, running the collector between polls,
// and fails the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		runtime.GC()
		runtime.Gosched()
	}
}

// mapLen returns how many entries the shard maps hold.
func (r *Registry) mapLen() int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.RLock()
		n += s.m.len()
		s.mu.RUnlock()
	}
	return n
}

// inMap reports whether the shard map holds id.
func (r *Registry) inMap(id handle.ID) bool {
	s := r.shard(id)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m.get(id) != nil
}

// assertHoldsNothing checks that the registry's bookkeeping is empty: no
// entry in any shard, every per-state count and byte count zero, no pin,
// and no subscription left in the hub.
func assertHoldsNothing(t testing.TB, r *Registry) {
	t.Helper()
	if n := r.mapLen(); n != 0 {
		t.Errorf("shard maps hold %d entries, want 0", n)
	}
	for s := range State(numStates) {
		if n := r.counters.objects[s].Load(); n != 0 {
			t.Errorf("objects[%v] = %d, want 0", s, n)
		}
		if n := r.counters.bytes[s].Load(); n != 0 {
			t.Errorf("bytes[%v] = %d, want 0", s, n)
		}
	}
	if n := r.counters.pins.Load(); n != 0 {
		t.Errorf("pins = %d, want 0", n)
	}
	if n := r.held.Load(); n != 0 {
		t.Errorf("strongly held bytes = %d, want 0", n)
	}
	if n := r.accounts.count(); n != 0 {
		t.Errorf("%d identity accounts kept, want 0", n)
	}
	h := r.events
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.live) != 0 || len(h.all) != 0 || len(h.byID) != 0 {
		t.Errorf("hub holds %d live, %d all, %d by-ID subscriptions; want none", len(h.live), len(h.all), len(h.byID))
	}
}

// fakeClock is a settable Config.Now, safe for concurrent use (the
// runtime's cleanup goroutine reads it too).
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// statsSnapshot is Stats without the figures that move on their own.
func statsSnapshot(r *Registry) Stats {
	st := r.Stats()
	st.GCCycles = 0
	return st
}

// nextEvent returns the next queued event of sub, failing if there is
// none: every event a test waits for was published before it looks.
func nextEvent(t testing.TB, sub *Subscription) Event {
	t.Helper()
	select {
	case ev := <-sub.Events():
		return ev
	default:
		t.Fatalf("no event queued (subscription err %v)", sub.Err())
		return Event{}
	}
}

// noEvent checks that sub has nothing queued.
func noEvent(t testing.TB, sub *Subscription) {
	t.Helper()
	select {
	case ev := <-sub.Events():
		t.Fatalf("unexpected event %v %v seq %d", ev.Kind, ev.State, ev.Seq)
	default:
	}
}

func idsOf(infos []Info) []handle.ID {
	ids := make([]handle.ID, len(infos))
	for i, in := range infos {
		ids[i] = in.ID
	}
	return ids
}

// payloadOf returns the payload of a live object: a reference from
// outside the registry, as only a bug would hold, for the leak tests.
func (r *Registry) payloadOf(id handle.ID) *payload {
	s := r.shard(id)
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.m.get(id)
	if e == nil {
		return nil // collected, and reaped, already
	}
	return e.value()
}

// payloadRef returns what keeps id's object alive, as a stray reference
// would: the allocation its weak pointer names.
func (r *Registry) payloadRef(id handle.ID) any {
	return r.payloadOf(id)
}
