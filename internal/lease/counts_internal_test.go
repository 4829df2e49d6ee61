package lease

import (
	"bytes"
	"testing"
	"time"

	"github.com/weakref/registry/internal/auth"
	"github.com/weakref/registry/internal/handle"
	"github.com/weakref/registry/internal/registry"
)

// TestCountsAndPutNeverWaitOnALeaseLock holds one lease's lock, as a lease
// releasing 100k pins does for ~170ms, and checks that Counts and an
// unrelated lease's Put do not wait for it: no path holds Manager.mu while
// taking a Lease.mu, and Counts takes no lock at all.
func TestCountsAndPutNeverWaitOnALeaseLock(t *testing.T) {
	c, err := handle.NewCodec(handle.Config{Key: bytes.Repeat([]byte{0x42}, handle.MinKeyLen), Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(registry.Config{Codec: c})
	m := New(Config{Codec: c, Registry: reg, MaxGrace: time.Minute})
	t.Cleanup(func() { m.Shutdown(); reg.Close() })
	busy, err := m.Open(OpenParams{Client: "releasing"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := m.Open(OpenParams{Client: "unrelated", Grace: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	other.Detach()

	busy.lease.mu.Lock()
	defer busy.lease.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if at, de := m.Counts(); at != 1 || de != 1 {
			t.Errorf("Counts() = %d, %d; want 1 attached, 1 detached", at, de)
		}
		if _, err := m.Put(auth.Anonymous, other.ID(), []byte("x"), registry.Meta{}); err != nil {
			t.Errorf("Put: %v", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Counts or an unrelated lease's Put waited on another lease's lock")
	}
}
