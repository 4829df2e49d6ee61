package lease_test

import (
	"bytes"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/lease"
	"github.com/weakref/registry/internal/registry"
)

// TestMain fails the package if any test leaves a goroutine behind, such
// as a grace timer that fired into a lease nobody ended.
//
// An object nobody pins is the collector's to take at any GC. So that a
// test can put an object and then pin it, or check that it is WEAK,
// without racing the collector, the runtime collects only when a test
// asks (Registry.Collect runs runtime.GC) and tests that collect do not
// run in parallel. The memory limit is a safety net for a runaway test.
// Benchmarks turn the collector back on (gcOn).
func TestMain(m *testing.M) {
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(1 << 30)
	// The registry reaps collected objects on a goroutine of its own that
	// ends once its queue is empty: one may still be finishing here.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/weakref/registry/internal/registry.(*Registry).drainReaps"))
}

// gcOn turns the runtime's own collections back on for tb.
func gcOn(tb testing.TB) {
	old := debug.SetGCPercent(100)
	tb.Cleanup(func() { debug.SetGCPercent(old) })
}

// testKey is the MAC key of every fixture's codec; otherKey is another
// key, for handles this registry never issued.
var (
	testKey  = bytes.Repeat([]byte{0x42}, handle.MinKeyLen)
	otherKey = bytes.Repeat([]byte{0x17}, handle.MinKeyLen)
)

// fixture is one registry with one lease manager over it.
type fixture struct {
	codec *handle.Codec
	reg   *registry.Registry
	m     *lease.Manager
	clock *fakeClock
}

// newFixture builds a fixture. Codec, Registry and Now are filled in;
// MaxGrace defaults to a minute when cfg leaves it zero. The manager is
// shut down when the test ends, so that no grace timer outlives it.
func newFixture(tb testing.TB, cfg lease.Config) *fixture {
	tb.Helper()
	c, err := handle.NewCodec(handle.Config{Key: testKey, Epoch: 1})
	if err != nil {
		tb.Fatalf("NewCodec: %v", err)
	}
	reg := registry.New(registry.Config{Codec: c})
	clock := newFakeClock()
	cfg.Codec, cfg.Registry = c, reg
	if cfg.MaxGrace == 0 {
		cfg.MaxGrace = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	m := lease.New(cfg)
	tb.Cleanup(func() {
		m.Shutdown()
		reg.Close()
	})
	return &fixture{codec: c, reg: reg, m: m, clock: clock}
}

var payloadSeq atomic.Int64

// put stores a new unpinned object. The test keeps no pointer to its
// payload, so once unpinned it is the collector's to take.
func (f *fixture) put(tb testing.TB) registry.Info {
	tb.Helper()
	data := fmt.Appendf(nil, "payload %d, long enough to be a real object", payloadSeq.Add(1))
	info, err := f.reg.Put(data, registry.Meta{ContentType: "text/plain"}, nil)
	if err != nil {
		tb.Fatalf("registry Put: %v", err)
	}
	return info
}

// open opens a lease and fails the test if it cannot.
func (f *fixture) open(tb testing.TB, p lease.OpenParams) *lease.Session {
	tb.Helper()
	s, err := f.m.Open(p)
	if err != nil {
		tb.Fatalf("Open(%+v): %v", p, err)
	}
	return s
}

// pin pins handles with s and fails the test unless each one is Pinned.
func pin(tb testing.TB, s *lease.Session, handles ...string) {
	tb.Helper()
	rs, err := s.Pin(handles)
	if err != nil {
		tb.Fatalf("Pin: %v", err)
	}
	for i, r := range rs {
		if r.Outcome != lease.Pinned {
			tb.Fatalf("Pin(%s): outcome %v, err %v; want Pinned", handles[i], r.Outcome, r.Err) //nolint:gosec // Pin answers once per handle, in order
		}
	}
}

// stat returns the object's metadata and fails the test if it is gone.
func (f *fixture) stat(tb testing.TB, h string) registry.Info {
	tb.Helper()
	info, err := f.reg.Stat(h)
	if err != nil {
		tb.Fatalf("Stat(%s): %v", h, err)
	}
	return info
}

// wantPinned checks that h's object is PINNED by exactly pins leases.
func (f *fixture) wantPinned(tb testing.TB, h string, pins int) {
	tb.Helper()
	info := f.stat(tb, h)
	if info.State != registry.Pinned || info.Pins != pins {
		tb.Errorf("object %s: state %v, pins %d; want PINNED, %d", h, info.State, info.Pins, pins)
	}
}

// wantWeak checks that h's object is alive, WEAK, and pinned by no one.
func (f *fixture) wantWeak(tb testing.TB, h string) {
	tb.Helper()
	info := f.stat(tb, h)
	if info.State != registry.Weak || info.Pins != 0 {
		tb.Errorf("object %s: state %v, pins %d; want WEAK, 0", h, info.State, info.Pins)
	}
}

// wantCollected runs a collection and checks that h's object is gone.
func (f *fixture) wantCollected(tb testing.TB, hs ...string) {
	tb.Helper()
	f.reg.Collect()
	for _, h := range hs {
		if _, err := f.reg.Resolve(h); !errors.Is(err, registry.ErrCollected) {
			tb.Errorf("Resolve(%s) after Collect: err %v; want ErrCollected", h, err)
		}
	}
}

// wantSurvives runs a collection and checks that h's object is still
// there, PINNED by pins leases.
func (f *fixture) wantSurvives(tb testing.TB, h string, pins int) {
	tb.Helper()
	f.reg.Collect()
	if _, err := f.reg.Resolve(h); err != nil {
		tb.Fatalf("Resolve(%s) after Collect: %v; want the object", h, err)
	}
	f.wantPinned(tb, h, pins)
}

// wantNoLeases checks that the manager holds no lease and the registry
// counts no pin.
func (f *fixture) wantNoLeases(tb testing.TB) {
	tb.Helper()
	if ls := f.m.List(); len(ls) != 0 {
		tb.Errorf("List() = %d leases, want none: %+v", len(ls), ls)
	}
	if st := f.reg.Stats(); st.Pins != 0 || st.Objects[registry.Pinned] != 0 || st.Bytes[registry.Pinned] != 0 {
		tb.Errorf("registry stats: pins %d, pinned objects %d, pinned bytes %d; want 0, 0, 0",
			st.Pins, st.Objects[registry.Pinned], st.Bytes[registry.Pinned])
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			tb.Fatalf("not within %v: %s", within, what)
		}
	}
}

// gone reports whether the manager no longer knows lease id.
func gone(m *lease.Manager, id string) func() bool {
	return func() bool {
		_, err := m.Lookup(id)
		return errors.Is(err, lease.ErrNotFound)
	}
}

// isDone reports whether ch is closed.
func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// fakeClock is a settable clock for Config.Now. Expiry itself runs on
// real timers; the clock only fixes what Info reports.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time // guarded by mu
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// foreignHandle returns an object handle of the right shape that this
// registry's key never issued.
func foreignHandle(tb testing.TB) string {
	tb.Helper()
	c, err := handle.NewCodec(handle.Config{Key: otherKey, Epoch: 1})
	if err != nil {
		tb.Fatalf("NewCodec: %v", err)
	}
	_, h := c.New(handle.Object)
	return h
}

// foreignLeaseID returns a lease id of the right shape that this
// registry's key never issued.
func foreignLeaseID(tb testing.TB) string {
	tb.Helper()
	c, err := handle.NewCodec(handle.Config{Key: otherKey, Epoch: 1})
	if err != nil {
		tb.Fatalf("NewCodec: %v", err)
	}
	_, id := c.New(handle.Lease)
	return id
}
